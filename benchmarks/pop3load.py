"""
The load generator: a lean POP3 client, and the load patterns of the benchmark.

Standard library only.  The generator runs on the same two cores as the servers, so every
microsecond it spends is taken from the server under test; its own ceiling is measured against a
trivial server (see C{trivial_server.py}) and reported with the results.

  - Concurrent sessions (L{runSessions}) run in one thread on C{epoll}: each client is a
    non-blocking socket driving a session script (a generator that yields commands and is sent
    their answers), so a command costs one C{recv}, one C{send} and a generator step, with no
    thread switch and no GIL hand-off.
  - Single connections (the RETR, idle and maildrop scenarios) use the blocking L{Connection}.

Clients behave as mail clients do: one command at a time, waiting for each answer (no
pipelining), with C{TCP_NODELAY} set so that the client side adds no Nagle delay of its own.
Answers are scanned, never parsed line by line: a multi-line answer is searched for its
terminator only (see L{BodyScanner}).
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import ssl
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

#: How much one C{recv} asks for: large enough that a 50 MB RETR needs few calls.
RECEIVE_SIZE = 256 * 1024

#: The end of a multi-line answer: the CRLF of the last line, then a line with a single dot.
_TERMINATOR = b"\r\n.\r\n"

#: Unique parts of delivered file names.
_deliveries = itertools.count()

_TICKS = os.sysconf("SC_CLK_TCK")


class POP3Error(Exception):
    """
    A server answered C{-ERR}, closed the connection early, or sent something the benchmark did
    not expect (a wrong message count or size).
    """


class BodyScanner:
    """
    Finds the end of the body of a multi-line answer in data received piece by piece, without
    looking at any octet twice (but the last four of each piece, where a terminator may
    straddle two pieces), and keeps the body only when asked to.
    """

    def __init__(self, keep: bool) -> None:
        """
        @param keep: whether to keep the body, or only count its octets.
        """
        # The CRLF of the status line goes in front, so that an empty body is found as well.
        self._window = b"\r\n"
        self._dropped = 0
        self._keep = keep
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> tuple[int, bytes, bytes] | None:
        """
        Scan the next data received after the status line.

        @return: L{None} until the terminator is found; then the size of the body as sent
            (byte-stuffed, CRLF line ends, terminator excluded), the body if kept (else
            C{b""}), and the data received after the terminator.
        """
        window = self._window + data
        end = window.find(_TERMINATOR)
        if end < 0:
            cut = max(0, len(window) - 4)
            if self._keep:
                self._parts.append(window[:cut])
            self._dropped += cut
            self._window = window[cut:]
            return None
        rest = window[end + len(_TERMINATOR) :]
        if not self._keep:
            return self._dropped + end, b"", rest
        self._parts.append(window[: end + 2])
        return self._dropped + end, b"".join(self._parts)[2:], rest


class Connection:
    """
    One blocking POP3 connection, driven one command at a time: a 50 MB message costs it a few
    hundred C{recv} calls and no per-line work.
    """

    def __init__(self, sock: socket.socket) -> None:
        """
        @param sock: a connected socket (TLS already negotiated, for implicit TLS), owned by this
            object from now on.
        """
        self._sock = sock
        self._pending = b""

    @classmethod
    def open(
        cls,
        address: tuple[str, int],
        tls: ssl.SSLContext | None = None,
        timeout: float = 120.0,
    ) -> Connection:
        """
        Connect, negotiate TLS when C{tls} is given (implicit TLS, as on port 995), and read the
        greeting.

        @raise POP3Error: the greeting is not C{+OK}.
        @raise OSError: the connection or the TLS handshake failed.
        """
        sock = socket.create_connection(address, timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock)
            connection = cls(sock)
            connection._status()
        except BaseException:
            sock.close()
            raise
        return connection

    def close(self) -> None:
        """
        Close the socket, without QUIT.
        """
        self._sock.close()

    def _receive(self) -> bytes:
        data = self._sock.recv(RECEIVE_SIZE)
        if not data:
            raise POP3Error("connection closed by the server")
        return data

    def _status(self) -> bytes:
        """
        Read one status line.

        @raise POP3Error: it is not C{+OK}.
        """
        while True:
            end = self._pending.find(b"\r\n")
            if end >= 0:
                break
            self._pending += self._receive()
        line, self._pending = self._pending[:end], self._pending[end + 2 :]
        if not line.startswith(b"+OK"):
            raise POP3Error(line.decode("ascii", "replace"))
        return line

    def command(self, line: bytes) -> bytes:
        """
        Send a command with a single-line answer.

        @return: the status line, without CRLF.
        @raise POP3Error: the answer is not C{+OK}.
        """
        self._sock.sendall(line + b"\r\n")
        return self._status()

    def multiline(self, line: bytes, keep: bool = False) -> tuple[int, bytes]:
        """
        Send a command with a multi-line answer and read the answer to its terminator.

        @param keep: whether to return the body; otherwise only its size is counted.
        @return: the size of the body as sent (byte-stuffed, with CRLF line ends, without the
            terminator line), and the body when C{keep}, else C{b""}.
        @raise POP3Error: the answer is not C{+OK}.
        """
        self.command(line)
        scanner = BodyScanner(keep)
        found = scanner.feed(self._pending)
        while found is None:
            found = scanner.feed(self._receive())
        size, body, self._pending = found
        return size, body

    def login(self, user: bytes, password: bytes) -> None:
        """
        Log in with C{USER} and C{PASS}.

        @raise POP3Error: either is refused.
        """
        self.command(b"USER " + user)
        self.command(b"PASS " + password)


@dataclass(frozen=True)
class Account:
    """
    A user of the benchmark, and where its Maildir is on the server under test.

    @ivar user: the user name.
    @ivar password: its password.
    @ivar maildir: the path of its Maildir in the copy of the server under test.
    """

    user: bytes
    password: bytes
    maildir: str


@dataclass(frozen=True)
class Batch:
    """
    The messages delivered to a user before each session, and what a session must find.

    @ivar templates: message files, hard-linked into the Maildir at each delivery: a delivery
        costs the generator one C{link} per message, and no copying.
    @ivar sizes: the octets a server sends for each of them in a RETR answer (CRLF line ends,
        byte-stuffed, terminator excluded).
    """

    templates: Sequence[str]
    sizes: Sequence[int]

    @property
    def octets(self) -> int:
        """
        The octets a server sends for all the messages in RETR answers.
        """
        return sum(self.sizes)


def deliver(maildir: str, batch: Batch) -> None:
    """
    Deliver C{batch} into the C{new/} directory of C{maildir}, under conventional unique names
    (C{time.MnPpid.host}), as an MTA does.
    """
    now = int(time.time())
    pid = os.getpid()
    for template in batch.templates:
        os.link(template, os.path.join(maildir, "new", f"{now}.M{next(_deliveries)}P{pid}.bench"))


def emptyMaildir(maildir: str) -> None:
    """
    Remove every message from C{new/} and C{cur/} of C{maildir}: resynchronises a user whose
    session failed halfway.
    """
    for subdirectory in ("new", "cur"):
        directory = os.path.join(maildir, subdirectory)
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))


@dataclass(frozen=True)
class Command:
    """
    What a session script asks the event loop to send.

    @ivar line: the command line without CRLF, or L{None} to read the greeting.
    @ivar multiline: whether the answer is multi-line.
    @ivar keep: whether to hand the body of a multi-line answer back (else only its size).
    """

    line: bytes | None
    multiline: bool = False
    keep: bool = False


#: The answer handed back to a script: the status line, the body's size as sent and the body
#: when it was kept (else C{b""}).
Reply = tuple[bytes, int, bytes]

#: A session script: yields commands, is sent their answers.  C{-ERR} answers never reach it:
#: they end the session as failed.
Script = Generator[Command, Reply, None]


def downloadAndDelete(account: Account, batch: Batch) -> Script:
    """
    One session as a mail client that leaves nothing on the server runs it: log in, C{STAT},
    C{LIST}, C{UIDL}, C{RETR} and C{DELE} every message, C{QUIT}.

    @raise POP3Error: the messages found, or their sizes, are not those of C{batch}.
    """
    yield Command(None)
    yield Command(b"USER " + account.user)
    yield Command(b"PASS " + account.password)
    status, _, _ = yield Command(b"STAT")
    count = int(status.split()[1])
    if count != len(batch.templates):
        raise POP3Error(f"STAT found {count} messages, not {len(batch.templates)}")
    for listing in (b"LIST", b"UIDL"):
        _, _, body = yield Command(listing, multiline=True, keep=True)
        if body.count(b"\r\n") != count:
            raise POP3Error(f"{listing.decode()} listed a wrong number of messages")
    octets = 0
    for number in range(1, count + 1):
        _, size, _ = yield Command(b"RETR %d" % (number,), multiline=True)
        octets += size
    if octets != batch.octets:
        raise POP3Error(f"RETR sent {octets} octets, not {batch.octets}")
    for number in range(1, count + 1):
        yield Command(b"DELE %d" % (number,))
    yield Command(b"QUIT")


@dataclass
class LoadResult:
    """
    What a timed load run measured.

    @ivar sessions: sessions completed inside the measurement window.
    @ivar seconds: the length of the window.
    @ivar latencies: the duration of each of those sessions, in seconds, sorted.
    @ivar errors: what went wrong, one entry per failed session (anywhere in the run).
    @ivar generatorCpu: CPU seconds the generator process used during the window.
    @ivar serverCpu: CPU seconds the server used during the window, from the probe.
    @ivar machineCpu: CPU seconds all processes of the machine used during the window: what
        neither the generator nor the server used was taken by something else running.
    @ivar tls: the TLS version and cipher of one session, when TLS was used.
    """

    sessions: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    generatorCpu: float = 0.0
    serverCpu: float = 0.0
    machineCpu: float = 0.0
    tls: str | None = None

    @property
    def rate(self) -> float:
        """
        Sessions per second.
        """
        return self.sessions / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        """
        A session-latency percentile, in seconds (0 without sessions).
        """
        if not self.latencies:
            return 0.0
        return self.latencies[min(len(self.latencies) - 1, int(fraction * len(self.latencies)))]


def machineCpuSeconds() -> float:
    """
    The CPU time the whole machine has spent busy (user, nice, system, interrupts, steal), from
    C{/proc/stat}.
    """
    with open("/proc/stat", "rb") as f:
        fields = [int(value) for value in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy.
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICKS


class _Session:
    """
    One client of the event loop: a non-blocking connection running one session script, then
    the next, for one account.
    """

    def __init__(self, load: _SessionLoad, account: Account) -> None:
        self._load = load
        self.account = account
        self._sock: socket.socket | None = None
        self._script: Script | None = None
        self._command = Command(None)
        self._pending = b""
        self._scanner: BodyScanner | None = None
        self._status = b""
        self._handshaking = False
        self._connecting = False
        self.started = 0.0

    def start(self) -> None:
        """
        Open a connection and start a session script on it.
        """
        load = self._load
        self.started = time.perf_counter()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect_ex(load.address)
        self._sock = sock
        self._connecting = True
        self._pending = b""
        self._scanner = None
        self._script = downloadAndDelete(self.account, load.batch)
        self._command = next(self._script)
        load.register(sock.fileno(), self, select.EPOLLOUT)

    def handle(self, events: int) -> None:
        """
        React to readiness of the socket; a failure ends the session as failed.
        """
        try:
            if self._connecting:
                self._connected()
            elif self._handshaking:
                self._handshake()
            else:
                self._read()
        except (OSError, POP3Error, ValueError) as e:
            self._load.failed(self, f"{self.account.user.decode()}: {e!r}")

    def _connected(self) -> None:
        assert self._sock is not None
        error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
        self._connecting = False
        tls = self._load.tls
        if tls is None:
            self._load.modify(self._sock.fileno(), select.EPOLLIN)
            return
        self._sock = tls.wrap_socket(self._sock, do_handshake_on_connect=False)
        self._handshaking = True
        self._handshake()

    def _handshake(self) -> None:
        sock = self._sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._load.modify(sock.fileno(), select.EPOLLIN)
            return
        except ssl.SSLWantWriteError:
            self._load.modify(sock.fileno(), select.EPOLLOUT)
            return
        self._handshaking = False
        if self._load.tlsVersion is None:
            cipher = sock.cipher()
            self._load.tlsVersion = f"{sock.version()} {cipher[0] if cipher else '?'}"
        self._load.modify(sock.fileno(), select.EPOLLIN)
        self._read()

    def _read(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(RECEIVE_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            if not data:
                raise POP3Error("connection closed by the server")
            self._received(data)
            # TLS may hold decrypted data that the socket no longer signals.
            if self._sock is not sock or not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                return

    def _received(self, data: bytes) -> None:
        if self._scanner is None:
            self._pending += data
            end = self._pending.find(b"\r\n")
            if end < 0:
                return
            status, data = self._pending[:end], self._pending[end + 2 :]
            if not status.startswith(b"+OK"):
                raise POP3Error(status.decode("ascii", "replace"))
            if not self._command.multiline:
                self._pending = data
                self._answer((status, 0, b""))
                return
            self._status = status
            self._scanner = BodyScanner(self._command.keep)
        found = self._scanner.feed(data)
        if found is not None:
            size, body, self._pending = found
            self._scanner = None
            self._answer((self._status, size, body))

    def _answer(self, reply: Reply) -> None:
        assert self._script is not None and self._sock is not None
        try:
            self._command = self._script.send(reply)
        except StopIteration:
            self._load.succeeded(self)
            return
        line = self._command.line
        assert line is not None
        data = line + b"\r\n"
        if self._sock.send(data) != len(data):
            raise POP3Error("a command line did not fit in the socket buffer")

    def close(self) -> None:
        """
        Close the connection (without QUIT when the script has not sent it).
        """
        sock, self._sock = self._sock, None
        if sock is not None:
            self._load.unregister(sock.fileno())
            sock.close()


class _SessionLoad:
    """
    The event loop of L{runSessions}: C{epoll} over one non-blocking socket per client, each
    driving a session script, in the generator's one thread.
    """

    def __init__(
        self,
        address: tuple[str, int],
        tls: ssl.SSLContext | None,
        batch: Batch,
    ) -> None:
        self.address = address
        self.tls = tls
        self.batch = batch
        self.tlsVersion: str | None = None
        self.ended: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self._epoll = select.epoll()
        self._sessions: dict[int, _Session] = {}
        self._retry: list[tuple[float, _Session]] = []
        self.running = True

    def register(self, fd: int, session: _Session, events: int) -> None:
        self._sessions[fd] = session
        self._epoll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        del self._sessions[fd]
        self._epoll.unregister(fd)

    def succeeded(self, session: _Session) -> None:
        """
        A session ended well: record it, deliver the batch again, start the next one.
        """
        end = time.perf_counter()
        self.ended.append((end, end - session.started))
        session.close()
        deliver(session.account.maildir, self.batch)
        if self.running:
            session.start()

    def failed(self, session: _Session, error: str) -> None:
        """
        A session failed: record it, restore the maildrop, start again a little later.
        """
        self.errors.append(error)
        session.close()
        self._retry.append((time.perf_counter() + 0.1, session))

    def runUntil(self, deadline: float) -> None:
        """
        Serve events until C{deadline} (a C{time.perf_counter} value).
        """
        poll = self._epoll.poll
        sessions = self._sessions
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            if self._retry and self.running:
                due = [session for when, session in self._retry if when <= now]
                if due:
                    self._retry = [(when, s) for when, s in self._retry if when > now]
                    for session in due:
                        emptyMaildir(session.account.maildir)
                        deliver(session.account.maildir, self.batch)
                        session.start()
            for fd, events in poll(min(0.05, deadline - now)):
                ready = sessions.get(fd)
                if ready is not None:
                    ready.handle(events)

    def close(self) -> None:
        """
        Stop: close every connection where it stands.
        """
        self.running = False
        for session in list(self._sessions.values()):
            session.close()
        self._epoll.close()


def runSessions(
    address: tuple[str, int],
    tls: ssl.SSLContext | None,
    accounts: Sequence[Account],
    batch: Batch,
    warmup: float,
    duration: float,
    serverCpu: Callable[[], float],
) -> LoadResult:
    """
    Run L{downloadAndDelete} sessions back to back, one client per account (so as many
    concurrent clients as accounts, each on its own maildrop), delivering the batch again after
    each session, and count those that end in a window of C{duration} seconds starting after
    C{warmup} seconds.

    All clients run in this thread, on C{epoll}: no thread switches, no GIL hand-offs, one
    C{recv} and one C{send} per command.  A failed session is recorded, its Maildir emptied and
    delivered to again, and the client starts over.  Sessions still running at the end are cut
    off (the servers then remove nothing, as POP3 requires).

    @param serverCpu: returns the CPU seconds the server has used so far; read at both ends of
        the window.
    """
    load = _SessionLoad(address, tls, batch)
    try:
        for account in accounts:
            _Session(load, account).start()
        load.runUntil(time.perf_counter() + warmup)
        windowStart, cpuStart = time.perf_counter(), time.process_time()
        serverStart, machineStart = serverCpu(), machineCpuSeconds()
        load.runUntil(windowStart + duration)
        windowEnd, cpuEnd = time.perf_counter(), time.process_time()
        serverEnd, machineEnd = serverCpu(), machineCpuSeconds()
    finally:
        load.close()
    inside = sorted(d for end, d in load.ended if windowStart <= end < windowEnd)
    return LoadResult(
        sessions=len(inside),
        seconds=windowEnd - windowStart,
        latencies=inside,
        errors=load.errors,
        generatorCpu=cpuEnd - cpuStart,
        serverCpu=serverEnd - serverStart,
        machineCpu=machineEnd - machineStart,
        tls=load.tlsVersion,
    )


def openIdle(address: tuple[str, int], count: int, threads: int = 8) -> list[Connection]:
    """
    Open C{count} connections and read their greetings, then leave them idle.

    @raise OSError: a connection failed (those already open are closed).
    @raise POP3Error: a greeting was not C{+OK}.
    """
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(Connection.open, address) for _ in range(count)]
    connections: list[Connection] = []
    failure: BaseException | None = None
    for future in futures:
        error = future.exception()
        if error is None:
            connections.append(future.result())
        else:
            failure = error
    if failure is not None:
        closeAll(connections)
        raise failure
    return connections


def logInAll(
    connections: Sequence[Connection], accounts: Sequence[Account], threads: int = 8
) -> None:
    """
    Log each connection in as the account at the same position.

    @raise POP3Error: a login was refused.
    """
    with ThreadPoolExecutor(threads) as pool:
        for future in [
            pool.submit(c.login, a.user, a.password)
            for c, a in zip(connections, accounts, strict=True)
        ]:
            future.result()


def closeAll(connections: Sequence[Connection]) -> None:
    """
    Close connections without QUIT: nothing is committed.
    """
    for connection in connections:
        connection.close()


def timeCommands(address: tuple[str, int], account: Account, messages: int) -> dict[str, float]:
    """
    Time each step of a session on a large maildrop: C{USER}, C{PASS} (authentication, locking
    and listing the maildrop), C{STAT}, C{UIDL}, C{LIST} and C{QUIT} (nothing deleted), each
    from sending the command to the end of its answer.

    @param messages: how many messages the maildrop must have.
    @return: seconds per command.
    @raise POP3Error: a command failed, or a listing did not have C{messages} lines.
    """
    times: dict[str, float] = {}
    connection = Connection.open(address)
    try:
        steps = ((b"USER", b"USER " + account.user), (b"PASS", b"PASS " + account.password))
        for name, line in steps:
            start = time.perf_counter()
            connection.command(line)
            times[name.decode()] = time.perf_counter() - start
        start = time.perf_counter()
        count = int(connection.command(b"STAT").split()[1])
        times["STAT"] = time.perf_counter() - start
        if count != messages:
            raise POP3Error(f"STAT found {count} messages, not {messages}")
        for name in (b"UIDL", b"LIST"):
            start = time.perf_counter()
            _, body = connection.multiline(name, keep=True)
            times[name.decode()] = time.perf_counter() - start
            if body.count(b"\r\n") != messages:
                raise POP3Error(f"{name.decode()} did not list {messages} messages")
        start = time.perf_counter()
        connection.command(b"QUIT")
        times["QUIT"] = time.perf_counter() - start
    finally:
        connection.close()
    return times


def timeRetrieve(
    address: tuple[str, int],
    account: Account,
    octets: int,
    repeat: int,
    beforeFirst: Callable[[], None],
    afterLast: Callable[[], None],
) -> list[float]:
    """
    Log in and retrieve message 1 C{repeat} times in one session.

    @param octets: the octets the server must send for the message.
    @param beforeFirst: called once logged in, just before the first C{RETR}.
    @param afterLast: called after the last C{RETR}, before C{QUIT} (the session's process,
        for a server with one per session, still exists).
    @return: the seconds each C{RETR} took, from sending it to its terminator.
    @raise POP3Error: a command failed or the message did not have C{octets} octets.
    """
    connection = Connection.open(address)
    try:
        connection.login(account.user, account.password)
        beforeFirst()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            received, _ = connection.multiline(b"RETR 1")
            times.append(time.perf_counter() - start)
            if received != octets:
                raise POP3Error(f"RETR sent {received} octets, not {octets}")
        afterLast()
        connection.command(b"QUIT")
    finally:
        connection.close()
    return times


def clientTLSContext() -> ssl.SSLContext:
    """
    The client side of implicit TLS: any version and cipher the server prefers, no certificate
    check (the certificate is self-signed), no session resumption across connections (each
    session pays for a full handshake, as separate client runs do).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
