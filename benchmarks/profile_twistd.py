"""
Run C{twistd} under C{cProfile}, for C{run.py --profile}::

    python profile_twistd.py OUTPUT.pstats -n --pidfile= popd ...

Every thread is profiled, the reactor's and those of the thread pool (where popd verifies
expensive password hashes), and their statistics are added together.  They are written when the
reactor has shut down (and the thread pool with it): C{twistd} ends a process stopped by a signal
by sending itself that signal again, so C{python -m cProfile}'s own dump at exit would never run.
The default reactor is installed here, before C{twistd} would install the same one, so that the
shutdown trigger can be added.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
from types import FrameType
from typing import Any, cast


def main() -> None:
    output = sys.argv.pop(1)
    sys.argv[0] = "twistd"
    from twisted.internet import reactor
    from twisted.internet.interfaces import IReactorCore
    from twisted.scripts.twistd import run

    profiles = [cProfile.Profile()]

    def profileThread(frame: FrameType, event: str, arg: Any) -> None:
        # Called at the first event of each new thread: hand the thread to a profiler of its own.
        sys.setprofile(None)
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()

    def dump() -> None:
        profiles[0].disable()
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(output)

    threading.setprofile(profileThread)
    cast(IReactorCore, reactor).addSystemEventTrigger("after", "shutdown", dump)
    profiles[0].enable()
    run()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
