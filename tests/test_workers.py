"""
Tests for L{popd.workers}: how workers report their counters, and how the main process sums
them.  (Workers serving for real: L{tests.test_tap.WorkersTests}.)
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from popd.metrics import Metrics
from popd.workers import REPORT_INTERVAL, MetricsReporter, WorkerPool


def _counted(connections: int) -> Metrics:
    metrics = Metrics()
    for _ in range(connections):
        metrics.connected()
    metrics.sessionEnded("quit", 1.0)
    return metrics


def _report(metrics: Metrics) -> bytes:
    return json.dumps(metrics.snapshot()).encode("ascii") + b"\n"


class _ProcessReactor(Clock):
    """
    A clock that records the processes it is asked to start.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[ProcessProtocol, list[str], dict[int, Any]]] = []

    def spawnProcess(
        self,
        processProtocol: ProcessProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str],
        childFDs: dict[int, Any],
    ) -> None:
        self.spawned.append((processProtocol, args, childFDs))


class ReporterTests(SynchronousTestCase):
    """
    L{MetricsReporter}: a worker's side.
    """

    def setUp(self) -> None:
        self.readFD, self.writeFD = os.pipe()
        os.set_blocking(self.readFD, False)
        self.clock = Clock()
        self.metrics = _counted(2)
        self.reporter = MetricsReporter(self.metrics, self.writeFD, self.clock)

    def tearDown(self) -> None:
        for fd in (self.readFD, self.writeFD):
            if fd >= 0:
                os.close(fd)

    def read(self) -> bytes:
        try:
            return os.read(self.readFD, 1 << 20)
        except BlockingIOError:
            return b""

    def reports(self) -> list[Metrics]:
        return [Metrics.fromSnapshot(json.loads(line)) for line in self.read().splitlines()]

    def test_everyInterval(self) -> None:
        """
        The counters are written at once, then every L{REPORT_INTERVAL} seconds, as they are
        then.
        """
        self.reporter.start()
        self.assertEqual([r.connections for r in self.reports()], [2])
        self.metrics.connected()
        self.clock.advance(REPORT_INTERVAL)
        self.assertEqual([r.snapshot() for r in self.reports()], [self.metrics.snapshot()])
        self.clock.advance(REPORT_INTERVAL / 2)
        self.assertEqual(self.reports(), [])

    def test_fullPipe(self) -> None:
        """
        A report the pipe cannot take now is dropped, without waiting; the next one that fits
        is written whole.
        """
        self.reporter.start()
        self.reports()
        filler = b"x" * 65536
        while True:
            try:
                os.write(self.writeFD, filler[:512])
            except BlockingIOError:
                break
        self.clock.advance(REPORT_INTERVAL)
        while self.read():
            pass
        self.clock.advance(REPORT_INTERVAL)
        self.assertEqual([r.connections for r in self.reports()], [2])

    def test_mainProcessGone(self) -> None:
        """
        Once nobody reads the pipe, reporting stops and the pipe is closed.
        """
        self.reporter.start()
        os.close(self.readFD)
        self.readFD = -1
        self.clock.advance(REPORT_INTERVAL)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertRaises(OSError, os.fstat, self.writeFD)
        self.writeFD = -1


class PoolMetricsTests(SynchronousTestCase):
    """
    L{WorkerPool.metrics}: the main process's view of its workers' counters.
    """

    def setUp(self) -> None:
        self.reactor = _ProcessReactor()
        self.pool = WorkerPool(self.reactor, ["--listen", "tcp:110"], [], 1, reportMetrics=True)
        self.pool._ports = [(10, False)]
        self.pool.running = True
        self.pool._spawn()
        ((self.worker, args, childFDs),) = self.reactor.spawned
        self.assertEqual(childFDs[4], "r")
        self.assertEqual(args[-5:], ["3:plain", "4:metrics", "--", "--listen", "tcp:110"])

    def sum(self) -> Metrics:
        total = Metrics()
        for metrics in self.pool.metrics():
            total.add(metrics)
        return total

    def test_lastReport(self) -> None:
        """
        A worker's counters are those of its last whole report, however the pipe cut them.
        """
        self.assertEqual(self.sum().connections, 0)
        first, second = _report(_counted(1)), _report(_counted(5))
        self.worker.childDataReceived(4, first + second[:10])
        self.assertEqual(self.sum().connections, 1)
        self.worker.childDataReceived(1, b"a log line\n")
        self.worker.childDataReceived(4, second[10:])
        self.assertEqual(self.sum().connections, 5)

    def test_badReport(self) -> None:
        """
        A report that is not understood is logged, and the last good one kept.
        """
        self.worker.childDataReceived(4, _report(_counted(3)) + b'{"connections": 1}\n')
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.sum().connections, 3)

    def test_endedWorker(self) -> None:
        """
        The counters of a worker that ended stay in the sum (they only go up), without its
        open connections; its replacement's are added to them.
        """
        self.worker.childDataReceived(4, _report(_counted(3)))
        self.worker.processEnded(Failure(ProcessDone(0)))
        self.flushLoggedErrors()
        total = self.sum()
        self.assertEqual((total.connections, total.openConnections), (3, 0))
        self.reactor.advance(60)
        replacement = self.reactor.spawned[-1][0]
        self.assertIsNot(replacement, self.worker)
        replacement.childDataReceived(4, _report(_counted(2)))
        total = self.sum()
        self.assertEqual((total.connections, total.openConnections), (5, 1))
        self.assertEqual(dict(total.sessions), {"quit": 2})
