"""
Worker processes for C{twistd popd --workers N}: one reactor uses one core, so popd starts
N - 1 more processes that serve the very sockets the first one listens on (the kernel hands
each new connection to one of them).  They share nothing but the sockets and the disk, where
the Maildir locks already work across processes.

A worker is C{python -m popd.workers DESCRIPTORS -- OPTIONS}: it parses the same options as
the main process, builds the same server, and adopts the listening sockets it inherited.
"""

from __future__ import annotations

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
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

_log = Logger()

#: Seconds before a worker that died is started again, so that one that cannot start does not
#: spin.
RESTART_DELAY = 1.0

#: Seconds a worker has to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


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
    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self.ended: Deferred[None] = Deferred()

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
    ) -> None:
        """
        @param arguments: the C{twistd popd} options, for the workers.
        @param listeners: the endpoints whose sockets the workers serve, each with whether it
            is an implicit-TLS listener.
        @param count: how many workers.
        """
        self._reactor = reactor
        self._arguments = list(arguments)
        self._listeners = listeners
        self._count = count
        self._ports: list[tuple[int, bool]] = []
        self._workers: dict[_Worker, None] = {}

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
        worker = _Worker(self)
        self._workers[worker] = None
        argv = [sys.executable, "-m", "popd.workers", *descriptors, "--", *self._arguments]
        self._reactor.spawnProcess(worker, sys.executable, argv, env=os.environ, childFDs=childFDs)

    def _workerEnded(self, worker: _Worker, reason: Failure) -> None:
        del self._workers[worker]
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


def main(argv: Sequence[str]) -> None:
    """
    Run one worker: C{DESCRIPTOR:KIND ... -- OPTIONS}, where each inherited descriptor is a
    listening socket and KIND is C{plain} or C{tls}.
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
