"""
Tests for L{popd._forkmap}: a function of many items, computed in part by a forked child process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from twisted.trial.unittest import SynchronousTestCase

from popd import _forkmap
from popd._forkmap import forkMap


def _pids(items: Sequence[int]) -> list[int]:
    return [os.getpid()] * len(items)


def _squares(items: Sequence[int]) -> list[int]:
    return [n * n for n in items]


class ForkMapTests(SynchronousTestCase):
    """
    L{forkMap} gives what the function gives of all the items, that of the second half computed
    in a child process.
    """

    def setUp(self) -> None:
        self.patch(os, "cpu_count", lambda: 2)

    def test_results(self) -> None:
        """
        The results are in the order of the items, whoever computed them; negative numbers too.
        """
        items = list(range(-500, 501))
        self.assertEqual(forkMap(_squares, items, 10), _squares(items))
        self.assertEqual(forkMap(lambda ns: [-n for n in ns], items, 10), [-n for n in items])
        self.assertEqual(forkMap(_squares, [], 0), [])
        self.assertEqual(forkMap(_squares, [7], 0), [49])

    def test_childComputesSecondHalf(self) -> None:
        """
        With at least C{minimum} items, the second half is computed by another process.
        """
        pids = forkMap(_pids, list(range(10)), 10)
        self.assertEqual(pids[:5], [os.getpid()] * 5)
        self.assertEqual(len(set(pids[5:])), 1)
        self.assertNotIn(os.getpid(), pids[5:])

    def test_fewItems(self) -> None:
        """
        Fewer items than C{minimum} are all computed here.
        """
        self.assertEqual(forkMap(_pids, list(range(9)), 10), [os.getpid()] * 9)

    def test_oneCPU(self) -> None:
        """
        With one CPU, there is no other core to use: all items are computed here.
        """
        self.patch(os, "cpu_count", lambda: 1)
        self.assertEqual(forkMap(_pids, list(range(10)), 2), [os.getpid()] * 10)

    def test_childFailsHalfRedoneHere(self) -> None:
        """
        When the function raises in the child, the child's half is computed again here, and
        what the function raises here is raised.
        """
        parent = os.getpid()

        def flaky(items: Sequence[int]) -> list[int]:
            if os.getpid() != parent:
                raise OSError("only in the child")
            return _pids(items)

        self.assertEqual(forkMap(flaky, list(range(10)), 2), [parent] * 10)

        def failing(items: Sequence[int]) -> list[int]:
            if 8 in items:
                raise ValueError(8)
            return list(items)

        self.assertRaises(ValueError, forkMap, failing, list(range(10)), 2)

    def test_childDiesHalfRedoneHere(self) -> None:
        """
        A child that dies without reporting, or reports too few results, leaves its half to be
        computed here.
        """
        parent = os.getpid()

        def dying(items: Sequence[int]) -> list[int]:
            if os.getpid() != parent:
                os._exit(3)
            return _pids(items)

        self.assertEqual(forkMap(dying, list(range(10)), 2), [parent] * 10)

        def short(items: Sequence[int]) -> list[int]:
            return _pids(items[1:] if os.getpid() != parent else items)

        self.assertEqual(forkMap(short, list(range(10)), 2), [parent] * 10)

    def test_failureHereEndsChild(self) -> None:
        """
        When the function raises for this process's half, the child is stopped and reaped, and
        the exception raised.
        """
        record = os.path.abspath(self.mktemp())
        parent = os.getpid()

        def failing(items: Sequence[int]) -> list[int]:
            if os.getpid() != parent:
                with open(record + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(record + ".tmp", record)
                os.pause()
            while not os.path.exists(record):
                os.sched_yield()
            raise ValueError(items)

        self.assertRaises(ValueError, forkMap, failing, list(range(10)), 2)
        with open(record) as f:
            child = int(f.read())
        self.assertRaises(ChildProcessError, os.waitpid, child, os.WNOHANG)

    def test_forkFails(self) -> None:
        """
        When no process can be forked, all items are computed here.
        """

        def refuse() -> int:
            raise BlockingIOError(11, "Resource temporarily unavailable")

        self.patch(_forkmap.os, "fork", refuse)
        self.assertEqual(forkMap(_pids, list(range(10)), 2), [os.getpid()] * 10)
