"""
Computes a function of many items in a forked child process, to use a second core for work
that is mostly system calls: sizing 50,000 messages is 150,000 of them.
"""

from __future__ import annotations

import os
import signal
from array import array
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["ForkedMap", "forkMap"]

_T = TypeVar("_T")

_OCTETS = array("q").itemsize


class ForkedMap(Generic[_T]):
    """
    C{function(items)}, a number for each item, computed by a child process forked for it
    while this one goes on.

    The child inherits what C{function} needs (open descriptors included), only calls it,
    writes the results to a pipe and exits at once, whatever happens: it never returns to the
    caller, nor runs anything of the parent's but signal defaults.  If the child fails (the
    function raised there, or it died), the function is called here instead, so that what it
    raises is raised here.  The child is always reaped: by L{results}, or by L{cancel} when
    they are not wanted.
    """

    def __init__(
        self,
        function: Callable[[Sequence[_T]], Sequence[int]],
        items: Sequence[_T],
        pid: int,
        readFD: int,
    ) -> None:
        self._function = function
        self._items = items
        self._pid: int | None = pid
        self._readFD = readFD

    @classmethod
    def start(
        cls, function: Callable[[Sequence[_T]], Sequence[int]], items: Sequence[_T]
    ) -> ForkedMap[_T] | None:
        """
        Fork a child that computes C{function(items)}.

        @param function: returns a number from -2**63 to 2**63 - 1 for each of the items.
        @return: the map under way, or L{None} when there is no other CPU to run it on or no
            process can be forked.
        """
        if (os.cpu_count() or 1) < 2:
            return None
        readFD, writeFD = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(readFD)
            os.close(writeFD)
            return None
        if pid == 0:
            _child(function, items, readFD, writeFD)
        os.close(writeFD)
        return cls(function, items, pid, readFD)

    def results(self) -> list[int]:
        """
        Wait for the child, and give its results.

        @raise Exception: whatever the function raises here, when the child failed (it is
            reaped first).
        """
        pid = self._pid
        if pid is None:
            raise RuntimeError("the results were taken, or the map was cancelled")
        self._pid = None
        try:
            reported = _readAll(self._readFD)
        finally:
            os.close(self._readFD)
            _, status = os.waitpid(pid, 0)
        if status != 0 or len(reported) != len(self._items) * _OCTETS:
            return list(self._function(self._items))
        return array("q", reported).tolist()

    def cancel(self) -> None:
        """
        Stop the child and reap it, unless its results were taken.
        """
        pid, self._pid = self._pid, None
        if pid is not None:
            os.close(self._readFD)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def forkMap(
    function: Callable[[Sequence[_T]], Sequence[int]], items: Sequence[_T], minimum: int
) -> list[int]:
    """
    C{function(items)}, computed as C{function} of the first half here and of the second half
    by a child process (see L{ForkedMap}) at the same time, when there are at least C{minimum}
    items.

    @param function: returns a number from -2**63 to 2**63 - 1 for each of the items.
    @raise Exception: whatever C{function} raises here.
    """
    half = len(items) // 2
    forked = ForkedMap.start(function, items[half:]) if len(items) >= minimum and half else None
    if forked is None:
        return list(function(items))
    try:
        mine = list(function(items[:half]))
    except BaseException:
        # This half failed: the other one is of no use.
        forked.cancel()
        raise
    return mine + forked.results()


def _child(
    function: Callable[[Sequence[_T]], Sequence[int]],
    items: Sequence[_T],
    readFD: int,
    writeFD: int,
) -> None:
    """
    In the forked child: compute C{function(items)}, write the results to C{writeFD}, and
    exit.  Never returns.
    """
    status = 1
    try:
        os.close(readFD)
        # Signals end the child as they would any process: the parent's handlers (and its
        # wake-up descriptor, which the parent's event loop reads) are not for it.
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        view = memoryview(array("q", function(items)).tobytes())
        while view:
            view = view[os.write(writeFD, view) :]
        status = 0
    finally:
        os._exit(status)


def _readAll(fd: int) -> bytes:
    """
    @return: what can be read from C{fd} until its end.
    """
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
