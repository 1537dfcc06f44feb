"""
A map over many items that a forked child process shares, to use a second core for work that
is mostly system calls: sizing 50,000 messages is 150,000 of them.
"""

from __future__ import annotations

import os
import signal
from array import array
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["forkMap"]

_T = TypeVar("_T")

# What the child reports for an item whose function raised: the parent does it again.
_FAILED = -1
_OCTETS = array("q").itemsize


def forkMap(function: Callable[[_T], int], items: Sequence[_T], minimum: int) -> list[int]:
    """
    C{list(map(function, items))}, the second half computed by a child process forked for it
    while this one computes the first, when there are at least C{minimum} items and more than
    one CPU.

    The child inherits what C{function} needs (open descriptors included), only calls it,
    writes the results to a pipe and exits at once, whatever happens: it never returns to the
    caller, nor runs anything of the parent's but signal defaults.  An item for which the
    function raised in the child is done again here, so that the exception is raised here; if
    the child fails as a whole, its half is done here.

    @param function: returns a number from 0 to 2**63 - 1.
    @raise Exception: whatever C{function} raises here.
    """
    half = len(items) // 2
    if len(items) < minimum or half == 0 or (os.cpu_count() or 1) < 2:
        return list(map(function, items))
    theirs = items[half:]
    readFD, writeFD = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(readFD)
        os.close(writeFD)
        return list(map(function, items))
    if pid == 0:
        _child(function, theirs, readFD, writeFD)
    os.close(writeFD)
    reaped = False
    try:
        mine = list(map(function, items[:half]))
        reported = _readAll(readFD)
        reaped = True
        _, status = os.waitpid(pid, 0)
        if status != 0 or len(reported) != len(theirs) * _OCTETS:
            return mine + list(map(function, theirs))
        results = array("q", reported).tolist()
        for position in [i for i, result in enumerate(results) if result == _FAILED]:
            results[position] = function(theirs[position])
        return mine + results
    finally:
        os.close(readFD)
        if not reaped:
            # This half raised: the other one is of no use.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _child(function: Callable[[_T], int], items: Sequence[_T], readFD: int, writeFD: int) -> None:
    """
    In the forked child: compute C{function} on C{items}, write the results to C{writeFD},
    and exit.  Never returns.
    """
    status = 1
    try:
        os.close(readFD)
        # Signals end the child as they would any process: the parent's handlers (and its
        # wake-up descriptor, which the parent's event loop reads) are not for it.
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        results = array("q", map(_orFailed, [function] * len(items), items))
        view = memoryview(results.tobytes())
        while view:
            view = view[os.write(writeFD, view) :]
        status = 0
    finally:
        os._exit(status)


def _orFailed(function: Callable[[_T], int], item: _T) -> int:
    """
    @return: C{function(item)}, or L{_FAILED} when it raises.
    """
    try:
        return function(item)
    except Exception:
        return _FAILED


def _readAll(fd: int) -> bytes:
    """
    @return: what can be read from C{fd} until its end.
    """
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
