"""
An in-process POP3 server for the tests of POP3 clients: in-memory mailboxes on a free loopback
port, optional implicit TLS with a certificate made on the spot, and a view of what the clients'
sessions left in each mailbox.

L{serve} needs no Twisted knowledge and no running reactor, so plain C{unittest} and pytest tests
use it as they are; it works in trial tests too.  Its servers run in a reactor of this module's
own, in a daemon thread started on first use and shared by every server of the process.  That
reactor is deliberately not Twisted's global one: trial runs the global reactor only while a
test waits for a L{Deferred} (a synchronous test body runs while it is stopped, so no "is it
running?" check can tell that trial will run it next), and pytest-twisted or the code under test
may install or run it at any time; a reactor that no one else knows of never competes with them.

L{serveInReactor} serves in the global reactor instead, for tests that already run in it and
talk to the server with Twisted clients.

Either offers implicit TLS (C{tls=True}) or C{STLS} (C{stls=True}) with a certificate made for
the server.  For C{STLS} in this module's reactor, Twisted is told which reactor times the TLS
layers that C{startTLS} makes in that reactor's thread (see L{_timeTLSInThread}).
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTCP, IReactorTime, ITCPTransport
from twisted.internet.pollreactor import PollReactor
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure

from popd.memory import MemoryMailbox, MemoryRealm
from popd.protocol import POP3ServerFactory, POP3ServerProtocol
from popd.url import PopURL

if TYPE_CHECKING:
    from popd.tls import ReloadableTLSContext

__all__ = ["HOST", "ReactorServer", "Server", "serve", "serveInReactor"]

#: The address every test server listens on.
HOST = "127.0.0.1"

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _SessionProtocol(POP3ServerProtocol):
    """
    A POP3 session that its factory can end, and wait for, when the server stops.
    """

    factory: _SessionFactory

    def connectionMade(self) -> None:
        self.factory.sessions[self] = Deferred()
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.sessions.pop(self).callback(None)


class _SessionFactory(POP3ServerFactory):
    """
    A L{POP3ServerFactory} that keeps track of its sessions.

    @ivar sessions: each open session, with a L{Deferred} that fires once it has ended.
    """

    protocol = _SessionProtocol

    def __init__(self, portal: Portal, **options: Any) -> None:
        super().__init__(portal, **options)
        self.sessions: dict[_SessionProtocol, Deferred[None]] = {}


def _checkMessage(message: object) -> None:
    """
    Refuse a message that is not C{bytes} at once, rather than in the middle of a session.

    @raise TypeError: when it is not.
    """
    if not isinstance(message, bytes):
        raise TypeError(f"a message is bytes, not {type(message).__name__}")


class ReactorServer:
    """
    A POP3 server over in-memory mailboxes, listening on a loopback port in a running reactor.
    Every method must be called in that reactor's thread: L{serveInReactor} makes one in
    Twisted's global reactor, L{serve} one in its own reactor, wrapped in a L{Server}.

    @ivar host: the address to connect to, L{HOST}.
    @ivar port: the port to connect to.
    @ivar caFile: with C{tls} or C{stls}, a PEM file holding the server's self-signed
        certificate, for clients to trust (C{ssl.create_default_context(cafile=...)}); L{None}
        without TLS.
        It is removed when the server stops.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        users: Mapping[str, str] | None = None,
        mailboxes: Mapping[str, Iterable[bytes]] | None = None,
        *,
        tls: bool = False,
        stls: bool = False,
        **factoryOptions: Any,
    ) -> None:
        """
        Start listening.

        @param reactor: the running reactor to serve in; it must also provide L{IReactorTime}.
        @param users: each user's password; names and passwords are UTF-8 on the wire.
        @param mailboxes: the messages in each user's mailbox, oldest first; users without an
            entry have an empty mailbox.
        @param tls: serve implicit TLS (as on port 995) with a certificate for C{localhost}
            and C{127.0.0.1} made for this server.
        @param stls: offer C{STLS} with such a certificate.
        @param factoryOptions: keyword arguments for L{POP3ServerFactory}; C{authFailureDelay}
            is 0 unless given, so that tests of failed logins are fast.
        @raise ValueError: when C{mailboxes} names a user not in C{users}; for C{tls} with
            C{stls} (a TLS connection is not offered C{STLS}), or with C{tlsContextFactory}.
        @raise TypeError: when a message is not C{bytes}, or for an unknown factory option.
        """
        users = users or {}
        mailboxes = mailboxes or {}
        unknown = sorted(set(mailboxes) - set(users))
        if unknown:
            raise ValueError(f"mailboxes given for users that do not exist: {unknown}")
        if tls + stls + ("tlsContextFactory" in factoryOptions) > 1:
            raise ValueError("choose one of tls, stls and tlsContextFactory")
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        self._mailboxes: dict[str, MemoryMailbox] = {}
        for user, password in users.items():
            messages = list(mailboxes.get(user, ()))
            for message in messages:
                _checkMessage(message)
            checker.addUser(user.encode("utf-8"), password.encode("utf-8"))
            self._mailboxes[user] = MemoryMailbox(messages)
        realm = MemoryRealm({user.encode("utf-8"): box for user, box in self._mailboxes.items()})
        clock = IReactorTime(reactor)
        factoryOptions.setdefault("authFailureDelay", 0)
        self.caFile: str | None = None
        self._directory: str | None = None
        if stls:
            factoryOptions["tlsContextFactory"] = self._certificate()
        self._factory = _SessionFactory(Portal(realm, [checker]), reactor=clock, **factoryOptions)
        listening: ServerFactory[Any] = self._factory
        if tls:
            listening = self._implicitTLS(clock)
        self._port = reactor.listenTCP(0, listening, interface=HOST)
        address = self._port.getHost()
        assert isinstance(address, IPv4Address)
        self.host = HOST
        self.port = address.port
        self._stopped = False

    def _implicitTLS(self, clock: IReactorTime) -> ServerFactory[Any]:
        """
        Wrap the POP3 factory in TLS with a certificate made for this server.

        @param clock: the reactor, for the TLS layer's timed writes (by default Twisted's
            global reactor, which may not be the one serving).
        @return: the factory to listen with.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        # listenTCP is annotated with ServerFactory, but takes any protocol factory.
        return cast(
            ServerFactory[Any],
            TLSMemoryBIOFactory(self._certificate(), False, self._factory, clock),
        )

    def _certificate(self) -> ReloadableTLSContext:
        """
        Make a certificate for this server in a new directory (see L{caFile}).

        @return: the server's TLS context with it.
        """
        # Imported here: the certificate tools cost their import only to servers that use them.
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from popd.demo import selfSignedCertificate
        from popd.tls import ReloadableTLSContext

        self._directory = tempfile.mkdtemp(prefix="popd-testing-")
        keyAndCertificate = selfSignedCertificate()
        serverFile = f"{self._directory}/server.pem"
        with open(serverFile, "wb") as stream:
            stream.write(keyAndCertificate)
        # Clients get the certificate alone: they have no business with the key.
        self.caFile = f"{self._directory}/ca.pem"
        with open(self.caFile, "wb") as stream:
            certificate = x509.load_pem_x509_certificate(keyAndCertificate)
            stream.write(certificate.public_bytes(Encoding.PEM))
        return ReloadableTLSContext(serverFile, serverFile)

    def mailbox(self, user: str) -> list[bytes]:
        """
        The messages in a user's mailbox, oldest first: a session's C{DELE} removes a message
        only when that session ends with C{QUIT}.

        @raise KeyError: for a user this server does not have.
        """
        return self._mailboxOf(user).messages

    def deliver(self, user: str, message: bytes) -> None:
        """
        Add a message to a user's mailbox; sessions that start afterwards list it.

        @raise KeyError: for a user this server does not have.
        @raise TypeError: when C{message} is not C{bytes}.
        """
        _checkMessage(message)
        self._mailboxOf(user).deliver(message)

    def url(self, user: str) -> str:
        """
        The POP URL (RFC 2384) of a user's maildrop here, for clients configured by URL.
        """
        return str(PopURL(self.host, self.port, user))

    def _mailboxOf(self, user: str) -> MemoryMailbox:
        try:
            return self._mailboxes[user]
        except KeyError:
            raise KeyError(f"no such user: {user!r}") from None

    def sslContext(self) -> ssl.SSLContext:
        """
        A client TLS context that trusts this server's certificate, and checks it and the host
        name as for any server.  Thread-safe.

        @raise ValueError: when the server does not use TLS.
        """
        if self.caFile is None:
            raise ValueError("this server does not use TLS; start it with tls=True or stls=True")
        return ssl.create_default_context(cafile=self.caFile)

    def stop(self) -> Deferred[None]:
        """
        Stop listening and end every session at once, without UPDATE: their deletions are
        dropped, as when a connection is lost.  Calling it again does nothing.

        @return: fires once the port is closed and every session has ended.
        """
        if self._stopped:
            return succeed(None)
        self._stopped = True
        sessions = self._factory.sessions
        ended: list[Deferred[Any]] = [maybeDeferred(self._port.stopListening)]
        ended.extend(sessions.values())
        for session in list(sessions):
            ITCPTransport(session.transport).abortConnection()
        return gatherResults(ended).addCallback(self._removeFiles)

    def _removeFiles(self, ignored: object) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


def serveInReactor(
    users: Mapping[str, str] | None = None,
    mailboxes: Mapping[str, Iterable[bytes]] | None = None,
    *,
    tls: bool = False,
    stls: bool = False,
    **factoryOptions: Any,
) -> ReactorServer:
    """
    Start a POP3 server in Twisted's global reactor, for trial tests whose clients run in it:
    the server's methods are plain calls from the test, and its C{stop()} returns a
    L{Deferred} (for C{addCleanup}).  It takes L{serve}'s arguments.

    @return: the listening server.
    """
    from twisted.internet import reactor

    return ReactorServer(
        cast(IReactorTCP, reactor), users, mailboxes, tls=tls, stls=stls, **factoryOptions
    )


class _ReactorThread:
    """
    A reactor of this module's own, run for the rest of the process by a daemon thread.
    """

    def __init__(self) -> None:
        self.reactor = PollReactor()  # type: ignore[no-untyped-call]
        # Twisted's threadable.isInIOThread() keeps answering for the application's reactor.
        self.reactor._registerAsIOThread = False
        self._thread = threading.Thread(
            target=self.reactor.run,
            kwargs={"installSignalHandlers": False},
            name="popd.testing reactor",
            daemon=True,
        )
        self._thread.start()
        self._timingTLS = False

    def timeTLS(self) -> None:
        """
        Let this reactor's servers start TLS on their connections (C{STLS}): see
        L{_timeTLSInThread}.  Only the first call does something.
        """
        with _startLock:
            if not self._timingTLS:
                _timeTLSInThread(self._thread, self.reactor)
                self._timingTLS = True

    @overload
    def call(self, f: Callable[_P, Deferred[_R]], *args: _P.args, **kwargs: _P.kwargs) -> _R: ...

    @overload
    def call(self, f: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R: ...

    def call(self, f: Callable[_P, Any], *args: _P.args, **kwargs: _P.kwargs) -> Any:
        """
        Call C{f} in the reactor's thread and wait for its result.

        @raise RuntimeError: when called from the reactor's own thread, where waiting would
            never end.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "popd.testing.serve() and its servers' methods block, and cannot be called "
                "from the thread that runs the servers; use serveInReactor() there"
            )
        return blockingCallFromThread(self.reactor, f, *args, **kwargs)


def _timeTLSInThread(thread: threading.Thread, reactor: IReactorTime) -> None:
    """
    Make the TLS layers that Twisted makes without a clock in C{thread} time their writes with
    C{reactor}, the one that runs there.  C{startTLS} (for C{STLS}) makes its TLS layer so, and
    Twisted then times it with its global reactor, which is not running in C{thread}, if at
    all: the handshake would never be written.  Twisted asks
    C{twisted.protocols.tls._get_default_clock}, there to be replaced in tests; everywhere but
    in C{thread} it still answers as it did.
    """
    from twisted.protocols import tls

    original = tls._get_default_clock

    def clock() -> IReactorTime:
        return reactor if threading.current_thread() is thread else original()

    tls._get_default_clock = clock


_startLock = threading.Lock()
_reactorThread: _ReactorThread | None = None


def _theReactorThread() -> _ReactorThread:
    """
    The reactor thread of every L{serve} server, started on first use.
    """
    global _reactorThread
    with _startLock:
        if _reactorThread is None:
            _reactorThread = _ReactorThread()
        return _reactorThread


class Server:
    """
    A POP3 server started by L{serve}, for tests in any thread: each method waits for the
    server's thread to answer.  As a context manager it stops at the end of the C{with} block.

    @ivar host: the address to connect to, L{HOST}.
    @ivar port: the port to connect to.
    @ivar caFile: with C{tls=True} or C{stls=True}, a PEM file holding the server's
        self-signed certificate, for clients to trust (C{ssl.create_default_context(cafile=...)});
        L{None} otherwise.  It is removed when the server stops.
    """

    def __init__(self, thread: _ReactorThread, server: ReactorServer) -> None:
        self._thread = thread
        self._server = server
        self.host = server.host
        self.port = server.port
        self.caFile = server.caFile

    def mailbox(self, user: str) -> list[bytes]:
        """
        The messages in a user's mailbox, oldest first: a session's C{DELE} removes a message
        only when that session ends with C{QUIT}.  Usable after the server has stopped.

        @raise KeyError: for a user this server does not have.
        """
        return self._thread.call(self._server.mailbox, user)

    def deliver(self, user: str, message: bytes) -> None:
        """
        Add a message to a user's mailbox; sessions that start afterwards list it.

        @raise KeyError: for a user this server does not have.
        @raise TypeError: when C{message} is not C{bytes}.
        """
        self._thread.call(self._server.deliver, user, message)

    def sslContext(self) -> ssl.SSLContext:
        """
        A client TLS context that trusts this server's certificate, and checks it and the host
        name as for any server.

        @raise ValueError: when the server does not use TLS.
        """
        return self._server.sslContext()

    def url(self, user: str) -> str:
        """
        The POP URL (RFC 2384) of a user's maildrop here, for clients configured by URL.
        """
        return self._server.url(user)

    def stop(self) -> None:
        """
        Stop listening and end every session at once, without UPDATE: their deletions are
        dropped, as when a connection is lost.  Calling it again does nothing.
        """
        self._thread.call(self._server.stop)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        excValue: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    users: Mapping[str, str] | None = None,
    mailboxes: Mapping[str, Iterable[bytes]] | None = None,
    *,
    tls: bool = False,
    stls: bool = False,
    **factoryOptions: Any,
) -> Server:
    """
    Start a POP3 server over in-memory mailboxes on a free port of C{127.0.0.1}, in a
    background thread, for the tests of a POP3 client::

        with serve(users={"bob": "secret"}, mailboxes={"bob": [message]}) as server:
            client = poplib.POP3(server.host, server.port)
            ...
            assert server.mailbox("bob") == []

    Any number of servers may run at once, each with its own mailboxes.

    @param users: each user's password; names and passwords are UTF-8 on the wire.  Without
        it no one can log in.
    @param mailboxes: the messages in each user's mailbox, oldest first; users without an
        entry have an empty mailbox.
    @param tls: serve implicit TLS (as on port 995) with a certificate for C{localhost} and
        C{127.0.0.1} made for this server; see L{Server.caFile} and L{Server.sslContext}.
    @param stls: offer C{STLS} (RFC 2595) with such a certificate instead.
    @param factoryOptions: keyword arguments for L{POP3ServerFactory}, such as
        C{maxAuthFailures=1}, C{expireDays=0} or C{tlsContextFactory} (C{STLS} with a
        certificate of the test's); C{authFailureDelay} is 0 unless given, so that tests of
        failed logins are fast.
    @return: the listening server; it stops at the end of a C{with} block, or on
        L{Server.stop}.
    @raise ValueError: when C{mailboxes} names a user not in C{users}, or for more than one of
        C{tls}, C{stls} and C{tlsContextFactory}.
    @raise TypeError: when a message is not C{bytes}, or for an unknown factory option.
    @raise RuntimeError: when called from the servers' own thread.
    """
    thread = _theReactorThread()
    if stls or "tlsContextFactory" in factoryOptions:
        thread.timeTLS()
    server = thread.call(
        ReactorServer, thread.reactor, users, mailboxes, tls=tls, stls=stls, **factoryOptions
    )
    return Server(thread, server)
