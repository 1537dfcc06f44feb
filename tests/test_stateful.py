"""
A hypothesis state machine that drives random POP3 sessions (LIST, STAT, UIDL, RETR, TOP,
DELE, RSET, NOOP, bad commands and numbers, wrong passwords, QUIT and reconnect, dropped
connection and reconnect, deliveries during and between sessions) against a live server, and
checks every answer and, after every step, the store itself against a model of the maildrop.

It runs on both stores: the Maildir store behind a real C{twistd popd} process (blocking
sockets, real files), and the memory store behind an in-process server connected with
L{twisted.test.iosim}.  Examples are few and short, derandomized and without a database, so
that the test is quick and gives the same result on every run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from popd.memory import MemoryMailbox, MemoryRealm
from popd.protocol import POP3ServerFactory
from tests.servers import Client, Sandbox, ServerProcess, messageName
from tests.support import CRLF, canonical, unstuff

_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=20,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_LINES = st.sampled_from(
    [b"", b".", b"..", b".x", b"hello", b"two words", b"From: someone", b"x" * 90, b"end."]
)


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    """
    A message with a header, and body lines that start with dots or are empty, stored with
    LF or CRLF line ends, with or without a final line end.
    """
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    lines = draw(st.lists(_LINES, max_size=6))
    final = draw(st.booleans())
    body = eol.join(lines) + (eol if final and lines else b"")
    return b"Subject: test" + eol + eol + body


# Message numbers: valid ones, 0, past the end, malformed, and missing.
_ARGUMENTS = st.one_of(
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=0, max_value=7),
    st.sampled_from([b"-1", b"4294967297", b"1x", b"+1", b"1 1", b""]),
)


def _top(content: bytes, lines: int) -> bytes:
    """
    What C{TOP} sends of C{content}: the header, the blank line, C{lines} body lines (R21).
    """
    transmitted = canonical(content).split(CRLF)[:-1]
    end = transmitted.index(b"")
    return b"".join(line + CRLF for line in transmitted[: end + 1 + lines])


# Drivers: a connection to a live server, and the store behind it.


class _Connection:
    """
    One client connection: send a line, read response lines and multi-line bodies.
    """

    def command(self, line: bytes) -> bytes:
        raise NotImplementedError()

    def readLine(self) -> bytes:
        raise NotImplementedError()

    def readBody(self) -> bytes:
        raise NotImplementedError()

    def closed(self) -> bool:
        raise NotImplementedError()

    def send(self, data: bytes) -> None:
        raise NotImplementedError()

    def drop(self, pending: bytes = b"") -> None:
        """
        Send C{pending}, then drop the connection.
        """
        raise NotImplementedError()


def _login(connection: _Connection, user: bytes, password: bytes, pipelined: bool) -> bytes:
    """
    Send USER and PASS, in one write or one at a time.

    @return: the answer to PASS.
    """
    if pipelined:
        connection.send(b"USER " + user + CRLF)
        assert connection.command(b"PASS " + password) == b"+OK"
        return connection.readLine()
    assert connection.command(b"USER " + user) == b"+OK"
    return connection.command(b"PASS " + password)


class _SocketConnection(_Connection):
    def __init__(self, client: Client) -> None:
        self._client = client

    def command(self, line: bytes) -> bytes:
        return self._client.command(line)

    def readLine(self) -> bytes:
        return self._client.readLine()

    def readBody(self) -> bytes:
        return self._client.readBody()

    def closed(self) -> bool:
        return self._client.closed(10)

    def send(self, data: bytes) -> None:
        self._client.send(data)

    def drop(self, pending: bytes = b"") -> None:
        if pending:
            self._client.send(pending)
        self._client.abort()


class _ProcessDriver:
    """
    A real C{twistd popd} serving a Maildir; the store is the Maildir's files.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.sandbox = Sandbox(testCase)
        self.server: ServerProcess = self.sandbox.server("--max-bad-commands", "1000")
        self.maildir = self.sandbox.maildir()
        self._serial = 0

    def reset(self) -> None:
        self.maildir.remove()
        self.maildir.create()

    def deliver(self, content: bytes) -> None:
        self._serial += 1
        self.maildir.deliver(messageName(self._serial), content)

    def stored(self) -> list[bytes]:
        files = self.maildir.files()
        return [files[base].getContent() for base in sorted(files)]

    def connect(self) -> tuple[_Connection, bytes]:
        client = self.server.connect()
        return _SocketConnection(client), b"+OK"

    def login(
        self, password: bytes, pipelined: bool = False, user: bytes = b"bob"
    ) -> tuple[_Connection, bytes]:
        """
        Log in; a maildrop still locked by a session the server has not yet seen dropped
        (R10) is tried again, for a few seconds.
        """
        deadline = time.monotonic() + 10
        while True:
            connection, _ = self.connect()
            answer = _login(connection, user, password, pipelined)
            if not answer.startswith(b"-ERR [IN-USE]") or time.monotonic() > deadline:
                return connection, answer
            connection.drop()
            time.sleep(0.02)


class _Collector(Protocol):
    def connectionMade(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


class _PumpConnection(_Connection):
    def __init__(self, client: _Collector, pump: iosim.IOPump, clock: Clock) -> None:
        self._client = client
        self._pump = pump
        self._clock = clock

    def _flush(self) -> None:
        self._pump.flush()
        # Failed logins are answered after a delay of 0 on the server's clock.
        self._clock.advance(0)
        self._pump.flush()

    def _take(self, end: bytes) -> bytes:
        self._flush()
        position = self._client.received.find(end)
        if position < 0:
            raise AssertionError(f"no {end!r} in {self._client.received[:300]!r}")
        taken = self._client.received[: position + len(end)]
        self._client.received = self._client.received[position + len(end) :]
        return taken

    def command(self, line: bytes) -> bytes:
        assert self._client.transport is not None
        self._client.transport.write(line + CRLF)
        return self._take(CRLF)[:-2]

    def readLine(self) -> bytes:
        return self._take(CRLF)[:-2]

    def readBody(self) -> bytes:
        if self._client.received.startswith(b".\r\n"):
            self._client.received = self._client.received[3:]
            return b""
        return self._take(b"\r\n.\r\n")[:-3]

    def closed(self) -> bool:
        self._flush()
        return self._client.lost and not self._client.received

    def send(self, data: bytes) -> None:
        assert self._client.transport is not None
        self._client.transport.write(data)

    def drop(self, pending: bytes = b"") -> None:
        assert self._client.transport is not None
        self._client.transport.write(pending)
        self._client.transport.loseConnection()
        self._flush()


class _MemoryDriver:
    """
    An in-process server for a L{MemoryMailbox}, connected through L{iosim}.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.reset()

    def reset(self) -> None:
        self.mailbox = MemoryMailbox()
        portal = Portal(
            MemoryRealm({b"bob": self.mailbox}),
            [InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")],
        )
        self.clock = Clock()
        self.factory = POP3ServerFactory(
            portal, allowCleartext=True, authFailureDelay=0, maxBadCommands=1000,
            reactor=self.clock,
        )  # fmt: skip

    def deliver(self, content: bytes) -> None:
        self.mailbox.deliver(content)

    def stored(self) -> list[bytes]:
        return self.mailbox.messages

    def connect(self) -> tuple[_Connection, bytes]:
        client, _, pump = iosim.connectedServerAndClient(
            lambda: self.factory.buildProtocol(None), _Collector, clock=self.clock
        )
        connection = _PumpConnection(client, pump, self.clock)
        return connection, connection._take(CRLF)[:-2]

    def login(
        self, password: bytes, pipelined: bool = False, user: bytes = b"bob"
    ) -> tuple[_Connection, bytes]:
        connection, _ = self.connect()
        return connection, _login(connection, user, password, pipelined)


# The model


@dataclass(eq=False)
class _Message:
    content: bytes
    uidl: bytes | None = None

    @property
    def size(self) -> int:
        return len(canonical(self.content))


@dataclass
class _Session:
    connection: _Connection
    listing: list[_Message]
    marked: set[int] = field(default_factory=set)

    def visible(self) -> list[tuple[int, _Message]]:
        return [(n, m) for n, m in enumerate(self.listing, 1) if n not in self.marked]


class _Maildrop(RuleBasedStateMachine):
    """
    The model: the committed messages, and the open session's listing and marks.
    """

    driver: _ProcessDriver | _MemoryDriver
    # What the runs checked: answers to each command, messages retrieved.
    counts: Counter[str]

    def __init__(self) -> None:
        super().__init__()
        self.store: list[_Message] = []
        self.session: _Session | None = None
        self.uidls: dict[bytes, _Message] = {}
        self.driver.reset()

    def _number(self, number: int | bytes) -> bytes:
        return number if isinstance(number, bytes) else b"%d" % (number,)

    def _target(self, number: int | bytes) -> _Message | bytes:
        """
        The message a number names in the session, or the C{-ERR} it must get (R16, R18).
        """
        assert self.session is not None
        if isinstance(number, bytes):
            return b"-ERR"
        if not 1 <= number <= len(self.session.listing):
            return b"-ERR No such message."
        if number in self.session.marked:
            return b"-ERR Message already deleted."
        return self.session.listing[number - 1]

    def _sawUidl(self, message: _Message, uidl: bytes) -> None:
        """
        A UIDL is 1-70 printable octets, the same for the life of the message, and never
        another message's (R22).
        """
        assert 1 <= len(uidl) <= 70 and all(0x21 <= c <= 0x7E for c in uidl), uidl
        if message.uidl is None:
            assert self.uidls.get(uidl, message) is message, f"UIDL {uidl!r} reused"
            message.uidl = uidl
            self.uidls[uidl] = message
        assert message.uidl == uidl, (message.uidl, uidl)

    @initialize(contents=st.lists(_messages(), min_size=1, max_size=4))
    def delivered(self, contents: list[bytes]) -> None:
        """
        The maildrop starts with a few messages.
        """
        for content in contents:
            self.mdaDelivers(content)

    # Between sessions, or during one

    @rule(content=_messages())
    def mdaDelivers(self, content: bytes) -> None:
        """
        An MDA delivers: the open session does not see it (R16); the next one does.
        """
        self.driver.deliver(content)
        self.store.append(_Message(content))

    @precondition(lambda self: self.session is None)
    @rule(
        attempt=st.sampled_from(
            [(b"bob", b"secret", False), (b"bob", b"secret", True), (b"bob", b"secret", False)]
            + [(b"bob", b"wrong", False), (b"nobody", b"secret", False)]
        )
    )
    def login(self, attempt: tuple[bytes, bytes, bool]) -> None:
        """
        Log in, with USER and PASS in one write or one at a time (R26).  A wrong password
        and an unknown user get the same C{-ERR [AUTH]} (R14, R30); that session stays in
        AUTHORIZATION (R6, R11) and its C{QUIT} removes nothing (R15).
        """
        user, password, pipelined = attempt
        connection, answer = self.driver.login(password, pipelined, user)
        if password == b"secret" and user == b"bob":
            assert answer == b"+OK Logged in.", answer
            self.session = _Session(connection, list(self.store))
            return
        assert answer == b"-ERR [AUTH] Authentication failed.", answer
        assert connection.command(b"STAT") == b"-ERR Command not valid in this state."
        assert connection.command(b"QUIT") == b"+OK Bye."
        assert connection.closed()

    # TRANSACTION

    @precondition(lambda self: self.session is not None)
    @rule(
        commands=st.lists(
            st.tuples(
                st.sampled_from(
                    ["RETR", "DELE", "TOP", "LIST", "UIDL", "LIST n", "UIDL n", "STAT"]
                    + ["RSET", "NOOP", "noop", "NOOP x", "FOO", "USER bob", "STAT 1"]
                ),
                _ARGUMENTS,
                st.integers(min_value=0, max_value=8),
            ),
            min_size=1,
            max_size=12,
        )
    )
    def commands(self, commands: list[tuple[str, int | bytes, int]]) -> None:
        """
        A few commands in TRANSACTION, each with a message number or a line count where it
        takes one.  (Drawn as a list: hypothesis spreads the elements of a list better than
        it spreads its choice of rules.)
        """
        for command, number, lines in commands:
            self.command(command, number, lines)

    @precondition(lambda self: self.session is not None)
    @rule(how=st.sampled_from(["QUIT", "quit", "drop", "drop QUI", "drop DELE 1"]))
    def end(self, how: str) -> None:
        """
        End the session: with C{QUIT}, in any case (R1), or by dropping the connection,
        possibly in the middle of a command line.
        """
        if how.startswith("drop"):
            self.drop(how[len("drop ") :].encode("ascii"))
        else:
            self.quit(how.encode("ascii"))

    def command(self, command: str, number: int | bytes, lines: int) -> None:
        """
        Send one command and check its answer against the model.
        """
        if command == "RETR":
            self.retr(number)
        elif command == "DELE":
            self.dele(number)
        elif command == "TOP":
            self.top(number, lines)
        elif command in ("LIST", "UIDL"):
            self.scanListing(command == "UIDL")
        elif command in ("LIST n", "UIDL n"):
            # C{LIST } and C{UIDL } (an empty argument after the space) may be read as
            # C{LIST} and C{UIDL}, as by Dovecot: not asked.
            self.scanOne(number or 1, command == "UIDL n")
        elif command == "STAT":
            self.stat()
        elif command == "RSET":
            self.rset()
        else:
            self.other(command.encode("ascii"))

    def stat(self) -> None:
        assert self.session is not None
        visible = self.session.visible()
        expected = b"+OK %d %d" % (len(visible), sum(m.size for _, m in visible))
        assert self.session.connection.command(b"STAT") == expected

    def scanListing(self, uidl: bool) -> None:
        """
        C{LIST} and C{UIDL} without argument: every unmarked message (R18, R22).
        """
        assert self.session is not None
        connection = self.session.connection
        visible = self.session.visible()
        first = connection.command(b"UIDL" if uidl else b"LIST")
        total = sum(m.size for _, m in visible)
        assert first == b"+OK %d messages (%d octets)" % (len(visible), total), first
        lines = connection.readBody().split(CRLF)[:-1]
        assert [int(line.split(b" ")[0]) for line in lines] == [n for n, _ in visible]
        for line, (_, message) in zip(lines, visible, strict=True):
            value = line.split(b" ", 1)[1]
            if uidl:
                self._sawUidl(message, value)
            else:
                assert value == b"%d" % (message.size,)

    def scanOne(self, number: int | bytes, uidl: bool) -> None:
        assert self.session is not None
        target = self._target(number)
        answer = self.session.connection.command(
            (b"UIDL " if uidl else b"LIST ") + self._number(number)
        )
        if isinstance(target, bytes):
            assert answer.startswith(target), (number, answer)
            return
        assert isinstance(number, int)
        prefix = b"+OK %d " % (number,)
        assert answer.startswith(prefix), answer
        if uidl:
            self._sawUidl(target, answer[len(prefix) :])
        else:
            assert answer == prefix + b"%d" % (target.size,)

    def retr(self, number: int | bytes) -> None:
        assert self.session is not None
        target = self._target(number)
        connection = self.session.connection
        answer = connection.command(b"RETR " + self._number(number))
        if isinstance(target, bytes):
            assert answer.startswith(target), (number, answer)
            return
        assert answer == b"+OK %d octets" % (target.size,), answer
        assert unstuff(connection.readBody()) == canonical(target.content)
        self.counts["retrieved"] += 1

    def top(self, number: int | bytes, lines: int) -> None:
        assert self.session is not None
        target = self._target(number)
        connection = self.session.connection
        answer = connection.command(b"TOP %s %d" % (self._number(number), lines))
        if isinstance(target, bytes):
            assert answer.startswith(target), (number, answer)
            return
        assert answer == b"+OK", answer
        assert unstuff(connection.readBody()) == _top(target.content, lines)

    def dele(self, number: int | bytes) -> None:
        """
        C{DELE} only marks (R20).
        """
        assert self.session is not None
        target = self._target(number)
        answer = self.session.connection.command(b"DELE " + self._number(number))
        if isinstance(target, bytes):
            assert answer.startswith(target), (number, answer)
            return
        assert isinstance(number, int)
        assert answer == b"+OK Message %d deleted." % (number,), answer
        self.session.marked.add(number)

    def rset(self) -> None:
        assert self.session is not None
        answer = self.session.connection.command(b"RSET")
        assert answer == b"+OK %d messages." % (len(self.session.listing),), answer
        self.session.marked.clear()

    def other(self, line: bytes) -> None:
        """
        C{NOOP}, any case (R1); extra arguments, unknown commands and commands of another
        state are answered C{-ERR} and change nothing (R5, R6).
        """
        assert self.session is not None
        answer = self.session.connection.command(line)
        if line.upper() == b"NOOP":
            assert answer == b"+OK", answer
        else:
            assert answer.startswith(b"-ERR "), answer

    def quit(self, keyword: bytes = b"QUIT") -> None:
        """
        C{QUIT}, in any case (R1), removes exactly the marked messages (R23).
        """
        assert self.session is not None
        session, self.session = self.session, None
        removed = {id(session.listing[n - 1]) for n in session.marked}
        answer = session.connection.command(keyword)
        assert answer == b"+OK Bye; %d messages removed." % (len(removed),), answer
        assert session.connection.closed()
        self.store = [m for m in self.store if id(m) not in removed]

    def drop(self, pending: bytes = b"") -> None:
        """
        A dropped connection removes nothing (R24), even after a command sent without its
        line end (C{pending}).
        """
        assert self.session is not None
        session, self.session = self.session, None
        session.connection.drop(pending)

    @invariant()
    def storeMatches(self) -> None:
        """
        The store holds exactly the committed messages, byte for byte, in delivery order.
        """
        assert self.driver.stored() == [m.content for m in self.store]
        self.counts["steps"] += 1

    def teardown(self) -> None:
        if self.session is not None:
            self.quit()
        self.storeMatches()


class StatefulTests(SynchronousTestCase):
    """
    Random sessions against a model of the maildrop, on both stores.
    """

    def _drive(self, driver: _ProcessDriver | _MemoryDriver) -> None:
        counts: Counter[str] = Counter()
        machine = type("Machine", (_Maildrop,), {"driver": driver, "counts": counts})
        run_state_machine_as_test(machine, settings=_SETTINGS)
        # The runs are not vacuous: messages were retrieved and compared.
        self.assertGreater(counts["retrieved"], 20)

    def test_maildirServerProcess(self) -> None:
        """
        Random sessions against a C{twistd popd} process serving a Maildir: every answer
        and the Maildir's files match the model.

        Rules: R1, R5, R6, R14-R24, R26.
        """
        self._drive(_ProcessDriver(self))

    def test_memoryStore(self) -> None:
        """
        Random sessions against the memory store, in process: every answer and the
        mailbox's messages match the model.

        Rules: R1, R5, R6, R14-R24, R26.
        """
        self._drive(_MemoryDriver(self))
