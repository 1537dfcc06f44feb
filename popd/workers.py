"""
Worker processes for C{twistd popd --workers N}: one reactor uses one core, so popd starts
N - 1 more processes that serve the very sockets the first one listens on (the kernel hands
each new connection to one of them).  They share nothing but the sockets and the disk, where
the Maildir locks already work across processes.  With C{--metrics}, each worker reports its
counters to the main process through a pipe, every L{REPORT_INTERVAL} seconds, and the main
process serves the sum.

A worker is C{python -m popd.workers DESCRIPTORS -- OPTIONS}: it parses the same options as
the main process, builds the same server, and adopts the listening sockets it inherited.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from collections.abc import Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorProcess,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from popd.metrics import Metrics

_log = Logger()

#: Seconds before a worker that died is started again, so that one that cannot start does not
#: spin.
RESTART_DELAY = 1.0

#: Seconds a worker has to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0

#: Seconds between two reports of a worker's counters: how stale the served sum may be.
REPORT_INTERVAL = 1.0

# A report is written whole or not at all (a pipe writes up to PIPE_BUF octets at once): one
# that does not fit is not sent, and the main process keeps serving the last one.
_MAX_REPORT = 4096


@implementer(IStreamServerEndpoint)
class RecordingEndpoint:
    """
    An endpoint that keeps the port it listened on, so that its socket can be handed to the
    workers.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self._endpoint = endpoint
        self.listening: Deferred[IListeningPort] = Deferred()

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        def listened(port: IListeningPort) -> IListeningPort:
            self.listening.callback(port)
            return port

        return self._endpoint.listen(protocolFactory).addCallback(listened)


class _Worker(ProcessProtocol):
    """
    The main process's side of a worker: when it ends, and the counters it last reported.
    """

    def __init__(self, pool: WorkerPool, reportFD: int | None) -> None:
        self._pool = pool
        self._reportFD = reportFD
        self._pending = b""
        self.metrics = Metrics()
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != self._reportFD:
            return
        *reports, self._pending = (self._pending + data).split(b"\n")
        if len(self._pending) > _MAX_REPORT:
            self._pending = b""
        for report in reports:
            try:
                self.metrics = Metrics.fromSnapshot(json.loads(report))
            except ValueError:
                _log.failure("A worker's metrics report was not understood")

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self._pool._workerEnded(self, reason)


class WorkerPool(Service):
    """
    Starts C{count} worker processes once the listeners listen, starts again any that dies,
    forwards C{SIGHUP} to them, and stops them with the service.
    """

    def __init__(
        self,
        reactor: IReactorProcess,
        arguments: Sequence[str],
        listeners: Sequence[tuple[RecordingEndpoint, bool]],
        count: int,
        reportMetrics: bool = False,
    ) -> None:
        """
        @param arguments: the C{twistd popd} options, for the workers.
        @param listeners: the endpoints whose sockets the workers serve, each with whether it
            is an implicit-TLS listener.
        @param count: how many workers.
        @param reportMetrics: whether the workers report their counters (see L{metrics}).
        """
        self._reactor = reactor
        self._arguments = list(arguments)
        self._listeners = listeners
        self._count = count
        self._reportMetrics = reportMetrics
        self._ports: list[tuple[int, bool]] = []
        self._workers: dict[_Worker, None] = {}
        # What the workers that ended had counted: counters only go up.
        self._ended = Metrics()

    def metrics(self) -> list[Metrics]:
        """
        @return: the counters of the workers, as last reported, and of those that ended.
        """
        return [self._ended, *(worker.metrics for worker in self._workers)]

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        waiting = [endpoint.listening for endpoint, _ in self._listeners]
        DeferredList(waiting, fireOnOneErrback=True, consumeErrors=True).addCallback(
            self._listening
        )

    def _listening(self, results: list[tuple[bool, IListeningPort]]) -> None:
        self._ports = [
            (port.fileno(), tls)  # type: ignore[attr-defined]
            for (_, port), (_, tls) in zip(results, self._listeners, strict=True)
        ]
        for _ in range(self._count):
            self._spawn()

    def _spawn(self) -> None:
        if not self.running:
            return
        descriptors = [
            f"{3 + i}:{'tls' if tls else 'plain'}" for i, (_, tls) in enumerate(self._ports)
        ]
        childFDs: dict[int, int | str] = {0: "w", 1: 1, 2: 2}
        for i, (fileno, _) in enumerate(self._ports):
            childFDs[3 + i] = fileno
        reportFD = None
        if self._reportMetrics:
            reportFD = 3 + len(self._ports)
            childFDs[reportFD] = "r"
            descriptors.append(f"{reportFD}:metrics")
        worker = _Worker(self, reportFD)
        self._workers[worker] = None
        argv = [sys.executable, "-m", "popd.workers", *descriptors, "--", *self._arguments]
        self._reactor.spawnProcess(worker, sys.executable, argv, env=os.environ, childFDs=childFDs)

    def _workerEnded(self, worker: _Worker, reason: Failure) -> None:
        del self._workers[worker]
        # Its connections ended with it.
        worker.metrics.openConnections = 0
        self._ended.add(worker.metrics)
        if self.running:
            _log.error("A worker ended ({reason}); starting another", reason=reason.value)
            self._reactor.callLater(RESTART_DELAY, self._spawn)  # type: ignore[attr-defined]

    def hangup(self) -> None:
        """
        Forward C{SIGHUP} to every worker, so that they reload too.
        """
        self._signalAll("HUP")

    def _signalAll(self, name: str) -> None:
        for worker in self._workers:
            if worker.transport is not None:
                try:
                    worker.transport.signalProcess(name)
                except OSError:
                    pass

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        ended = [worker.ended for worker in self._workers]
        if not ended:
            return succeed(None)
        self._signalAll("TERM")
        killer = self._reactor.callLater(STOP_TIMEOUT, self._signalAll, "KILL")  # type: ignore[attr-defined]

        def stopped(ignored: object) -> None:
            if killer.active():
                killer.cancel()

        return DeferredList(ended).addCallback(stopped)


class MetricsReporter:
    """
    Writes a worker's counters to the main process, a JSON line every L{REPORT_INTERVAL}
    seconds, without ever waiting for it: a report that the pipe cannot take now is dropped
    (the next one counts everything anyway), and reporting stops once the main process is gone.
    """

    def __init__(self, metrics: Metrics, fd: int, clock: IReactorTime) -> None:
        os.set_blocking(fd, False)
        self._metrics = metrics
        self._fd = fd
        self._loop = LoopingCall(self.report)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(REPORT_INTERVAL)

    def report(self) -> None:
        line = json.dumps(self._metrics.snapshot(), separators=(",", ":")).encode("ascii")
        if len(line) >= _MAX_REPORT:
            return
        try:
            os.write(self._fd, line + b"\n")
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno != errno.EPIPE:
                _log.failure("Could not report the metrics")
            self._loop.stop()
            os.close(self._fd)


def main(argv: Sequence[str]) -> None:
    """
    Run one worker: C{DESCRIPTOR:KIND ... -- OPTIONS}, where each inherited descriptor is a
    listening socket and KIND is C{plain} or C{tls}, or the pipe to report the worker's
    counters on, and KIND is C{metrics}.
    """
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from popd.tap import Options, ReloadOnHangup, buildServer

    separator = list(argv).index("--")
    sockets = [spec.split(":") for spec in argv[:separator]]
    options = Options()
    options.parseOptions(argv[separator + 1 :])
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    server = buildServer(options, reactor, announce=False)
    for descriptor, kind in sockets:
        fileno = int(descriptor)
        if kind == "metrics":
            MetricsReporter(server.factory.metrics, fileno, reactor).start()
            continue
        probe = socket.socket(fileno=fileno)
        family = probe.family
        probe.detach()
        factory = server.implicitTLS() if kind == "tls" else server.factory
        reactor.adoptStreamPort(fileno, family, factory)  # type: ignore[attr-defined]
        # The port has its own descriptor now.
        os.close(fileno)
    ReloadOnHangup(reactor, server.reloads).startService()  # type: ignore[arg-type]
    # The main process stops workers with SIGTERM; the reactor's handler then ends their
    # sessions without UPDATE, as the main process ends its own.
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
