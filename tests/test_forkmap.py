"""
Tests for L{popd._forkmap}: a map shared with a forked child process.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from popd import _forkmap
from popd._forkmap import forkMap


def _pid(item: int) -> int:
    return os.getpid()


class ForkMapTests(SynchronousTestCase):
    """
    L{forkMap} gives what C{map} gives, the second half computed in a child process.
    """

    def setUp(self) -> None:
        self.patch(os, "cpu_count", lambda: 2)

    def test_results(self) -> None:
        """
        The results are in the order of the items, whoever computed them.
        """
        items = list(range(1001))
        self.assertEqual(forkMap(lambda n: n * n, items, 10), [n * n for n in items])
        self.assertEqual(forkMap(lambda n: n, [], 0), [])
        self.assertEqual(forkMap(lambda n: n, [7], 0), [7])

    def test_childComputesSecondHalf(self) -> None:
        """
        With at least C{minimum} items, the second half is computed by another process.
        """
        pids = forkMap(_pid, list(range(10)), 10)
        self.assertEqual(pids[:5], [os.getpid()] * 5)
        self.assertEqual(len(set(pids[5:])), 1)
        self.assertNotIn(os.getpid(), pids[5:])

    def test_fewItems(self) -> None:
        """
        Fewer items than C{minimum} are all computed here.
        """
        self.assertEqual(forkMap(_pid, list(range(9)), 10), [os.getpid()] * 9)

    def test_oneCPU(self) -> None:
        """
        With one CPU, there is no other core to use: all items are computed here.
        """
        self.patch(os, "cpu_count", lambda: 1)
        self.assertEqual(forkMap(_pid, list(range(10)), 2), [os.getpid()] * 10)

    def test_childItemFailsRedoneHere(self) -> None:
        """
        An item whose function raises in the child is computed again here, and what it raises
        here is raised.
        """
        parent = os.getpid()

        def flaky(n: int) -> int:
            if n == 8 and os.getpid() != parent:
                raise OSError("only in the child")
            return n

        self.assertEqual(forkMap(flaky, list(range(10)), 2), list(range(10)))

        def failing(n: int) -> int:
            if n == 8:
                raise ValueError(n)
            return n

        self.assertRaises(ValueError, forkMap, failing, list(range(10)), 2)

    def test_childFailsWholeHalfRedone(self) -> None:
        """
        A child that dies without reporting leaves its half to be computed here.
        """
        parent = os.getpid()

        def dying(n: int) -> int:
            if os.getpid() != parent:
                os._exit(3)
            return n

        self.assertEqual(forkMap(dying, list(range(10)), 2), list(range(10)))

    def test_failureHereEndsChild(self) -> None:
        """
        When the function raises for an item of this process's half, the child is stopped and
        reaped, and the exception raised.
        """
        record = os.path.abspath(self.mktemp())
        parent = os.getpid()

        def failing(n: int) -> int:
            if os.getpid() != parent:
                with open(record + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(record + ".tmp", record)
                os.pause()
            elif n == 1:
                while not os.path.exists(record):
                    os.sched_yield()
                raise ValueError(n)
            return n

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
        self.assertEqual(forkMap(_pid, list(range(10)), 2), [os.getpid()] * 10)
