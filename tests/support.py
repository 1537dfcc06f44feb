"""
Helpers for the end-to-end tests: mail stores on disk, an in-process popd on a loopback port,
a self-signed certificate, external programs run without blocking the reactor, and a blocking
POP3 connection for worker threads.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol, connectionDone
from twisted.internet.ssl import CertificateOptions
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, TestCase

from popd.cred import PasswdFileChecker, hashPassword
from popd.demo import prepareDemo
from popd.maildir import MaildirRealm
from popd.memory import MemoryMailbox, MemoryRealm
from popd.protocol import POP3ServerFactory, POP3ServerProtocol
from popd.tls import loadCertificateOptions

HOST = "127.0.0.1"
CRLF = b"\r\n"


# Messages


def canonical(stored: bytes) -> bytes:
    """
    A stored message as POP3 transmits it before byte-stuffing (RFC 1939 section 3, rule R19):
    every line end a CRLF, and a final CRLF when the message lacks one.
    """
    transmitted = stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not transmitted.endswith(b"\r\n"):
        transmitted += b"\r\n"
    return transmitted


def dotLineAt(offset: int, eol: bytes, tail: int = 300) -> bytes:
    """
    A message whose stored octet at C{offset} is a C{.} that starts a line made of that dot
    alone: on the wire it must become C{..}, not the terminator.  Other dot lines follow.

    @param offset: where the lone dot lies in the stored file; put it at a read-chunk
        boundary to test the encoder's state across reads.
    @param eol: the stored line end, C{b"\\n"} or C{b"\\r\\n"}.
    @param tail: about how many octets follow the dot line.
    """
    message = bytearray(b"Subject: a lone dot at offset %d" % (offset,) + eol + eol)
    filler = b"x" * 70 + eol
    while offset - len(message) > 100:
        message += filler
    message += b"y" * (offset - len(message) - len(eol)) + eol
    assert len(message) == offset
    message += b"." + eol + b".. two dots" + eol + b".x" + eol
    while len(message) < offset + tail:
        message += filler
    return bytes(message)


def bigMessage(size: int, eol: bytes) -> bytes:
    """
    A message of about C{size} stored octets with dot lines spread through it, including at
    every multiple of 64 KiB that the store reads.
    """
    message = bytearray(b"Subject: big, %d octets" % (size,) + eol + eol)
    line = 0
    while len(message) < size:
        line += 1
        if line % 97 == 0:
            message += b"." + eol
        elif line % 89 == 0:
            message += b".%d starts with a dot" % (line,) + eol
        else:
            message += b"%07d " % (line,) + b"z" * 64 + eol
    return bytes(message)


# Stores


class MaildirStore:
    """
    Users' Maildirs on disk, served by L{MaildirRealm} with the template C{ROOT/%u/Maildir}.
    """

    def __init__(self, root: FilePath[str]) -> None:
        self.root = root
        self._serial = 0

    def realm(self) -> IRealm:
        return MaildirRealm(self.root.path.replace("%", "%%") + "/%u/Maildir")

    def maildir(self, user: str) -> FilePath[str]:
        return self.root.descendant([user, "Maildir"])

    def deliver(self, user: str, messages: Sequence[bytes]) -> None:
        """
        Deliver messages to C{new/}, in order: their names start with increasing delivery
        times, as an MTA names them.
        """
        maildir = self.maildir(user)
        for subdirectory in ("new", "cur", "tmp"):
            maildir.child(subdirectory).makedirs(ignoreExistingDirectory=True)
        for message in messages:
            self._serial += 1
            name = f"{1_700_000_000 + self._serial}.M{self._serial}P{os.getpid()}.popd-test"
            temporary = maildir.child("tmp").child(name)
            temporary.setContent(message)
            temporary.moveTo(maildir.child("new").child(name))

    def files(self, user: str) -> list[FilePath[str]]:
        """
        The message files of C{user}, in delivery order.
        """
        maildir = self.maildir(user)
        found = [
            child
            for subdirectory in ("new", "cur")
            for child in maildir.child(subdirectory).children()
        ]
        return sorted(found, key=lambda child: child.basename())

    def stored(self, user: str) -> list[bytes]:
        """
        The messages that C{user} has, in delivery order.
        """
        return [child.getContent() for child in self.files(user)]

    def markSeen(self, user: str) -> None:
        """
        Do what an IMAP server does on reading: move every message to C{cur/} and add the
        C{S} flag to its name.
        """
        maildir = self.maildir(user)
        for child in self.files(user):
            baseName = child.basename().partition(":")[0]
            child.moveTo(maildir.child("cur").child(baseName + ":2,S"))


class MemoryStore:
    """
    Users' mailboxes in memory, served by L{MemoryRealm}.
    """

    def __init__(self, root: FilePath[str]) -> None:
        self._mailboxes: dict[bytes, MemoryMailbox] = {}

    def realm(self) -> IRealm:
        return MemoryRealm(self._mailboxes)

    def deliver(self, user: str, messages: Sequence[bytes]) -> None:
        mailbox = self._mailboxes.setdefault(user.encode("utf-8"), MemoryMailbox())
        for message in messages:
            mailbox.deliver(message)

    def stored(self, user: str) -> list[bytes]:
        return self._mailboxes[user.encode("utf-8")].messages

    def markSeen(self, user: str) -> None:
        pass


#: The store every end-to-end test uses: Maildirs on disk.  Switch to L{MemoryStore} to run the
#: same tests against the in-memory store.
Store = MaildirStore


def writePasswdFile(path: FilePath[str], users: Mapping[str, str], scheme: str) -> None:
    """
    Write a Dovecot-style passwd-file for C{users} (name to plaintext password), mode 0600.
    """
    path.setContent(
        "".join(
            f"{name}:{hashPassword(password, scheme)}\n" for name, password in users.items()
        ).encode("utf-8")
    )
    path.chmod(0o600)


# TLS


@dataclass(frozen=True)
class Certificate:
    """
    The demo's self-signed certificate for C{localhost} and C{127.0.0.1}.

    @ivar certificate: a PEM file with the certificate alone (what clients trust).
    @ivar keyAndCertificate: a PEM file with the private key and the certificate.
    """

    certificate: FilePath[str]
    keyAndCertificate: FilePath[str]

    def serverOptions(self) -> CertificateOptions:
        """
        What the server presents, loaded as C{twistd popd --tls-cert --tls-key} loads it.
        """
        path = self.keyAndCertificate.path
        return loadCertificateOptions(path, path)

    def clientContext(self) -> ssl.SSLContext:
        """
        A client context that trusts this certificate only, verifying host names.
        """
        return ssl.create_default_context(cafile=self.certificate.path)


def makeCertificate(directory: FilePath[str]) -> Certificate:
    """
    Make a certificate with L{popd.demo}, which promises one that clients trusting it
    explicitly accept, host name checks included.
    """
    demo = prepareDemo(directory)
    certificate = x509.load_pem_x509_certificate(demo.tls.getContent())
    result = Certificate(directory.child("cert.pem"), demo.tls)
    result.certificate.setContent(certificate.public_bytes(serialization.Encoding.PEM))
    return result


# The server


class _TrackedProtocol(POP3ServerProtocol):
    """
    A session that its factory knows about until the connection is lost.
    """

    factory: _TrackingFactory

    def connectionMade(self) -> None:
        self.factory.sessions.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.factory.sessions.discard(self)
            self.factory.sessionEnded()


class _TrackingFactory(POP3ServerFactory):
    """
    A L{POP3ServerFactory} that keeps its open sessions, so that a test can wait for the server
    to see a connection end and none is left open when the test ends.
    """

    protocol = _TrackedProtocol

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sessions: set[_TrackedProtocol] = set()
        self._idleWaiters: list[Deferred[None]] = []

    def sessionEnded(self) -> None:
        if not self.sessions:
            waiters, self._idleWaiters = self._idleWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def whenIdle(self) -> Deferred[None]:
        """
        @return: a L{Deferred} that fires once no session is open.
        """
        if not self.sessions:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idleWaiters.append(waiter)
        return waiter


@dataclass
class RunningServer:
    """
    An in-process popd listening on loopback.

    @ivar port: the plain port (C{STLS} offered when the server has a certificate).
    @ivar tlsPort: the implicit-TLS port, or L{None}.
    @ivar users: user name to plaintext password.
    """

    factory: _TrackingFactory
    store: MaildirStore | MemoryStore
    users: dict[str, str]
    port: int
    tlsPort: int | None = None
    certificate: Certificate | None = None
    _listeners: list[IListeningPort] = field(default_factory=list)

    def whenIdle(self) -> Deferred[None]:
        """
        @return: a L{Deferred} that fires once the server has seen every connection end (a
            maildrop stays locked until then).
        """
        return self.factory.whenIdle()

    async def stop(self) -> None:
        """
        Stop listening; give open sessions a few seconds to end, then abort them.
        """
        await DeferredList([maybeDeferred(each.stopListening) for each in self._listeners])
        idle = self.factory.whenIdle()
        timer = reactor.callLater(5, self._abortAll)
        await idle
        if timer.active():
            timer.cancel()

    def _abortAll(self) -> None:
        for session in list(self.factory.sessions):
            assert session.transport is not None
            session.transport.abortConnection()  # type: ignore[attr-defined]


async def startServer(
    testCase: TestCase,
    mailboxes: Mapping[str, Sequence[bytes]],
    *,
    passwords: Mapping[str, str] | None = None,
    scheme: str = "SHA512-CRYPT",
    tls: bool = False,
    **factoryOptions: object,
) -> RunningServer:
    """
    Start a popd on loopback for one test, with its own store and passwd-file in the test's
    temporary directory; it is stopped when the test ends.

    @param mailboxes: user name to the messages delivered to that user.
    @param passwords: user name to password; by default every user's password is
        C{"correct horse"} (with a space: rule R12).
    @param scheme: how the passwd-file stores passwords; a plaintext scheme enables APOP.
    @param tls: also offer C{STLS} on the plain port and listen for implicit TLS.
    @param factoryOptions: more keyword arguments for L{POP3ServerFactory}.
    """
    directory = FilePath(testCase.mktemp())
    directory.makedirs()
    if passwords is None:
        passwords = {user: "correct horse" for user in mailboxes}
    store = Store(directory.child("mail"))
    for user, messages in mailboxes.items():
        store.deliver(user, messages)
    passwd = directory.child("passwd")
    writePasswdFile(passwd, passwords, scheme)
    portal = Portal(store.realm(), [PasswdFileChecker(passwd)])
    certificate = makeCertificate(directory.child("tls")) if tls else None
    options: dict[str, object] = {"authFailureDelay": 0}
    if certificate is not None:
        options["tlsContextFactory"] = certificate.serverOptions()
    options.update(factoryOptions)
    factory = _TrackingFactory(portal, **options)
    listener = await TCP4ServerEndpoint(reactor, 0, interface=HOST).listen(factory)
    server = RunningServer(
        factory, store, dict(passwords), listener.getHost().port, certificate=certificate
    )
    server._listeners.append(listener)
    testCase.addCleanup(lambda: Deferred.fromCoroutine(server.stop()))
    if certificate is not None:
        tlsEndpoint = SSL4ServerEndpoint(reactor, 0, certificate.serverOptions(), interface=HOST)
        tlsListener = await tlsEndpoint.listen(factory)
        server._listeners.append(tlsListener)
        server.tlsPort = tlsListener.getHost().port
    return server


# External programs


class ProcessTimeout(Exception):
    """
    An external program ran too long and was killed.
    """


@dataclass(frozen=True)
class ProcessResult:
    out: bytes
    err: bytes
    code: int | None

    def describe(self) -> str:
        return (
            f"exit code {self.code}\n--- stdout ---\n{self.out.decode('utf-8', 'replace')}"
            f"\n--- stderr ---\n{self.err.decode('utf-8', 'replace')}"
        )


class _Collector(ProcessProtocol):
    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = argv
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[ProcessResult] = Deferred()
        self._timer = reactor.callLater(timeout, self._kill)
        self._timedOut = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def _kill(self) -> None:
        self._timedOut = True
        assert self.transport is not None
        self.transport.signalProcess("KILL")

    def processEnded(self, reason: Failure) -> None:
        if self._timer.active():
            self._timer.cancel()
        ended = reason.value
        code = ended.exitCode if isinstance(ended, (ProcessDone, ProcessTerminated)) else None
        result = ProcessResult(b"".join(self.out), b"".join(self.err), code)
        if self._timedOut:
            self.ended.errback(
                ProcessTimeout(f"{' '.join(self.argv)} was killed: {result.describe()}")
            )
        else:
            self.ended.callback(result)


def runProcess(
    argv: Sequence[str], home: FilePath[str], *, timeout: float = 60
) -> Deferred[ProcessResult]:
    """
    Run a program without blocking the reactor, so that the in-process server keeps serving
    it; kill it after C{timeout} seconds.

    @param argv: the program (an absolute path) and its arguments; no shell is involved.
    @param home: C{HOME} (and C{FETCHMAILHOME}, C{TMPDIR}) for the program, created if needed,
        so that it reads and writes no file of the user running the tests.
    @return: a L{Deferred} firing with a L{ProcessResult}, or failing with L{ProcessTimeout}.
    """
    home.makedirs(ignoreExistingDirectory=True)
    home.chmod(0o700)
    env = {
        "HOME": home.path,
        "FETCHMAILHOME": home.path,
        "TMPDIR": home.path,
        "PATH": "/usr/bin:/bin",
        "LANG": "C",
        "LC_ALL": "C",
    }
    collector = _Collector(argv, timeout)
    reactor.spawnProcess(collector, argv[0], list(argv), env=env, path=home.path)
    return collector.ended


# A second host


class TestHost:
    """
    A second host for tests that need a peer other than loopback: a network namespace of its
    own, joined to this one by a veth pair, as in a real network but entirely inside this
    machine.  Needs root and iproute2 (CI has both); it is removed when the test ends.

    @ivar hostAddress: this side's address, for servers to listen on.
    @ivar peerAddress: the namespace's address, which the server sees as the peer.
    """

    _serial = itertools.count()

    def __init__(self, testCase: TestCase) -> None:
        ip = shutil.which("ip") or "/usr/sbin/ip"
        if os.geteuid() != 0 or not os.path.exists(ip):
            raise SkipTest("a network namespace needs root and iproute2's ip")
        serial = next(self._serial)
        # Interface names are at most 15 characters.
        tag = f"{os.getpid() % 100000}{serial}"
        self.name = f"popd{tag}"
        self._ip = ip
        outside, inside = f"ph{tag}", f"pc{tag}"
        subnet = f"10.213.{serial % 250}"
        self.hostAddress, self.peerAddress = f"{subnet}.1", f"{subnet}.2"
        testCase.addCleanup(self._remove, outside)
        for command in [
            ["netns", "add", self.name],
            ["link", "add", outside, "type", "veth", "peer", "name", inside],
            ["link", "set", inside, "netns", self.name],
            ["addr", "add", f"{self.hostAddress}/30", "dev", outside],
            ["link", "set", outside, "up"],
            [
                "netns",
                "exec",
                self.name,
                ip,
                "addr",
                "add",
                f"{self.peerAddress}/30",
                "dev",
                inside,
            ],
            ["netns", "exec", self.name, ip, "link", "set", inside, "up"],
            ["netns", "exec", self.name, ip, "link", "set", "lo", "up"],
        ]:
            subprocess.run([ip, *command], check=True, capture_output=True, timeout=30)

    def _remove(self, outside: str) -> None:
        for command in [["netns", "del", self.name], ["link", "del", outside]]:
            subprocess.run([self._ip, *command], capture_output=True, timeout=30)

    def run(self, argv: Sequence[str], home: FilePath[str]) -> Deferred[ProcessResult]:
        """
        Run a program on this host; see L{runProcess}.
        """
        return runProcess([self._ip, "netns", "exec", self.name, *argv], home)


# A blocking POP3 connection, for worker threads


class RawConnection:
    """
    A POP3 connection on a plain socket that reads responses byte-exact, lines with their
    CRLF: blocking, so run in a worker thread (C{deferToThread}) in a test that runs a reactor,
    never in the reactor thread.  L{tests.servers.Client} builds on it.
    """

    def __init__(
        self, port: int, timeout: float = 30, *, host: str = HOST, source: str | None = None
    ) -> None:
        """
        @param source: the local address to connect from, if not the default.
        """
        self.sock: socket.socket = socket.create_connection(
            (host, port), timeout=timeout, source_address=None if source is None else (source, 0)
        )
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self._buffer += data
        return bool(data)

    def readLine(self) -> bytes:
        """
        @return: one line, CRLF included.
        @raise EOFError: the server closed the connection first.
        """
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line, self._buffer = self._buffer[: end + 2], self._buffer[end + 2 :]
                return line
            if not self._fill():
                raise EOFError(f"connection closed; unread: {self._buffer[:200]!r}")

    def readBody(self) -> bytes:
        """
        Read the rest of a multi-line response, exactly as sent.

        @return: the octets between the first line and the terminator, byte-stuffing
            included, terminator excluded.
        """
        while True:
            if self._buffer.startswith(b".\r\n"):
                self._buffer = self._buffer[3:]
                return b""
            end = self._buffer.find(b"\r\n.\r\n")
            if end >= 0:
                body, self._buffer = self._buffer[: end + 2], self._buffer[end + 5 :]
                return body
            if not self._fill():
                raise EOFError("connection closed in a multi-line response")

    def readUntilClosed(self) -> bytes:
        while self._fill():
            pass
        rest, self._buffer = self._buffer, b""
        return rest

    def command(self, line: bytes) -> bytes:
        self.send(line + CRLF)
        return self.readLine()

    def close(self) -> None:
        self.sock.close()


def unstuff(body: bytes) -> bytes:
    """
    Undo byte-stuffing (RFC 1939 section 3) of a multi-line body as L{RawConnection.readBody}
    returns it.
    """
    lines = body.split(CRLF)
    return CRLF.join(line[1:] if line.startswith(b".") else line for line in lines)


def stuff(transmitted: bytes) -> bytes:
    """
    Byte-stuff a CRLF-canonical message (see L{canonical}) as a multi-line response carries
    it: one more C{.} in front of every line that starts with one (RFC 1939 section 3).
    """
    lines = transmitted.split(CRLF)
    return CRLF.join(b"." + line if line.startswith(b".") else line for line in lines)
