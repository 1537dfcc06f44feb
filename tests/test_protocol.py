"""
Tests for L{popd.protocol}: the POP3 command grammar, states and policies, driven through
L{StringTransport} with a L{Clock}, over every store popd ships (see L{ConformanceMixin}).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, directlyProvides, implementer

from popd.errors import MessageGone, PermanentFailure, TemporaryFailure
from popd.interfaces import IMaildrop, IMessage, MessageInfo
from popd.maildir import MaildirRealm
from popd.memory import MemoryMailbox, MemoryRealm
from popd.protocol import POP3ServerFactory, POP3ServerProtocol, Response
from tests.support import canonical

LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)
REMOTE = IPv4Address("TCP", "192.0.2.7", 40000)

MESSAGES = [
    b"Subject: one\n\nfirst line\n.dot line\nlast\n",
    b"Subject: two\r\nX: y\r\n\r\nbody\r\n",
    b"Subject: three\n\nno final newline",
]


class TCPStringTransport(StringTransport):
    """
    A L{StringTransport} with the TCP option the server sets.
    """

    noDelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled


@implementer(ITLSTransport)
class TLSStringTransport(TCPStringTransport):
    """
    A L{StringTransport} that can be asked to start TLS, and records the request.
    """

    tlsStarted: object = None

    def startTLS(self, contextFactory: object) -> None:
        self.tlsStarted = contextFactory
        directlyProvides(self, ISSLTransport)


class Session:
    """
    One POP3 session over a L{StringTransport}, for tests.
    """

    def __init__(
        self,
        factory: POP3ServerFactory,
        peer: object = LOOPBACK,
        transport: StringTransport | None = None,
    ) -> None:
        self.transport = transport if transport is not None else StringTransport(peerAddress=peer)
        if transport is not None:
            transport.peerAddress = peer  # type: ignore[assignment]
        self.protocol: POP3ServerProtocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        self.protocol.makeConnection(self.transport)
        self.greeting = self.read()

    def read(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def send(self, data: bytes) -> bytes:
        """
        Send C{data} as it is and return everything the server wrote back.
        """
        self.protocol.dataReceived(data)
        return self.read()

    def command(self, line: bytes) -> bytes:
        """
        Send one command line and return the answer.
        """
        return self.send(line + b"\r\n")

    def login(self, user: bytes = b"bob", password: bytes = b"secret") -> bytes:
        self.command(b"USER " + user)
        return self.command(b"PASS " + password)

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def drop(self) -> None:
        self.protocol.connectionLost(Exception("dropped"))  # type: ignore[arg-type]


def multiline(response: bytes) -> list[bytes]:
    """
    The lines of a multi-line response after its first, un-stuffed, checking the terminator.
    """
    assert response.endswith(b"\r\n.\r\n"), response
    lines = response.split(b"\r\n")[1:-2]
    return [line[1:] if line.startswith(b".") else line for line in lines]


class ConformanceMixin:
    """
    RFC 1939 behaviour that must hold whatever the store.  Subclasses provide L{makeStore}.
    """

    assertEqual: Callable[..., None]
    assertTrue: Callable[..., None]
    assertFalse: Callable[..., None]
    assertIn: Callable[..., None]
    assertNotIn: Callable[..., None]

    def makeStore(self, messages: Sequence[bytes]) -> tuple[IRealm, Callable[[], list[bytes]]]:
        """
        Make a realm whose user C{bob} has C{messages}.

        @return: the realm, and a function returning bob's stored messages in order.
        """
        raise NotImplementedError()

    def setUp(self) -> None:
        self.clock = Clock()
        realm, self.stored = self.makeStore(MESSAGES)
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret", eve=b"other")
        self.portal = Portal(realm, [checker])
        self.factory = POP3ServerFactory(self.portal, reactor=self.clock)

    def session(self, peer: object = LOOPBACK) -> Session:
        return Session(self.factory, peer)

    def loggedIn(self) -> Session:
        session = self.session()
        self.assertTrue(session.login().startswith(b"+OK"))
        return session

    def test_greeting(self) -> None:
        """
        R9: the greeting is one C{+OK} line.
        """
        session = self.session()
        self.assertTrue(session.greeting.startswith(b"+OK "))
        self.assertEqual(session.greeting.count(b"\r\n"), 1)

    def test_caseInsensitive(self) -> None:
        """
        R1: keywords are case-insensitive.
        """
        session = self.session()
        self.assertEqual(session.command(b"user bob"), b"+OK\r\n")
        self.assertTrue(session.command(b"PaSs secret").startswith(b"+OK"))
        self.assertTrue(session.command(b"sTaT").startswith(b"+OK 3 "))
        self.assertTrue(session.command(b"noop").startswith(b"+OK"))

    def test_stat(self) -> None:
        """
        R17, R19: C{STAT} gives the count and the CRLF size of the maildrop.
        """
        session = self.loggedIn()
        total = sum(len(canonical(m)) for m in MESSAGES)
        self.assertEqual(session.command(b"STAT"), b"+OK 3 %d\r\n" % (total,))

    def test_listAndRetrieveAgree(self) -> None:
        """
        R19: the size in C{LIST}, in C{LIST n} and in the C{RETR} answer is the number of
        octets the client reads back, and the message is the CRLF form of what was stored.
        """
        session = self.loggedIn()
        scan = multiline(session.command(b"LIST"))
        for number, message in enumerate(MESSAGES, 1):
            expected = canonical(message)
            self.assertIn(b"%d %d" % (number, len(expected)), scan)
            self.assertEqual(
                session.command(b"LIST %d" % (number,)), b"+OK %d %d\r\n" % (number, len(expected))
            )
            response = session.command(b"RETR %d" % (number,))
            self.assertTrue(response.startswith(b"+OK %d octets\r\n" % (len(expected),)))
            self.assertEqual(b"".join(line + b"\r\n" for line in multiline(response)), expected)

    def test_byteStuffing(self) -> None:
        """
        R7: a line starting with "." is sent with one more, and the response ends with
        CRLF "." CRLF even when the message has no final newline.
        """
        session = self.loggedIn()
        self.assertIn(b"\r\n..dot line\r\n", session.command(b"RETR 1"))
        self.assertTrue(session.command(b"RETR 3").endswith(b"no final newline\r\n.\r\n"))

    def test_top(self) -> None:
        """
        R21: C{TOP n k} sends the header, the blank line and k body lines; a k beyond the
        body sends the whole message.
        """
        session = self.loggedIn()
        self.assertEqual(multiline(session.command(b"TOP 1 0")), [b"Subject: one", b""])
        self.assertEqual(
            multiline(session.command(b"TOP 1 2")),
            [b"Subject: one", b"", b"first line", b".dot line"],
        )
        self.assertEqual(
            multiline(session.command(b"TOP 2 99")), [b"Subject: two", b"X: y", b"", b"body"]
        )
        self.assertTrue(session.command(b"TOP 1 -1").startswith(b"-ERR"))
        self.assertTrue(session.command(b"TOP 1").startswith(b"-ERR"))

    def test_uidl(self) -> None:
        """
        R22: UIDLs are unique, 1-70 octets in 0x21-0x7E; C{UIDL n} answers on one line with
        the message number.
        """
        session = self.loggedIn()
        scan = multiline(session.command(b"UIDL"))
        self.assertEqual(len(scan), 3)
        uidls = [line.split(b" ", 1)[1] for line in scan]
        self.assertEqual(len(set(uidls)), 3)
        for uidl in uidls:
            self.assertTrue(1 <= len(uidl) <= 70)
            self.assertTrue(all(0x21 <= octet <= 0x7E for octet in uidl), uidl)
        self.assertEqual(session.command(b"UIDL 2"), b"+OK 2 " + uidls[1] + b"\r\n")

    def test_uidlStableAcrossSessions(self) -> None:
        """
        R22: a session that ends without UPDATE changes no UIDL, and deleting one message
        changes none of the others.
        """
        session = self.loggedIn()
        before = multiline(session.command(b"UIDL"))
        session.command(b"DELE 1")
        session.drop()
        session = self.loggedIn()
        self.assertEqual(multiline(session.command(b"UIDL")), before)
        session.command(b"DELE 1")
        session.command(b"QUIT")
        session = self.loggedIn()
        after = [line.split(b" ", 1)[1] for line in multiline(session.command(b"UIDL"))]
        self.assertEqual(after, [line.split(b" ", 1)[1] for line in before[1:]])

    def test_deleteOnlyMarks(self) -> None:
        """
        R18, R20: a deleted message disappears from STAT, LIST and UIDL and cannot be read,
        but stays stored until QUIT; C{RSET} unmarks it.
        """
        session = self.loggedIn()
        self.assertEqual(session.command(b"DELE 1"), b"+OK Message 1 deleted.\r\n")
        self.assertTrue(session.command(b"STAT").startswith(b"+OK 2 "))
        self.assertEqual([line[:1] for line in multiline(session.command(b"LIST"))], [b"2", b"3"])
        self.assertEqual([line[:1] for line in multiline(session.command(b"UIDL"))], [b"2", b"3"])
        for command in [b"RETR 1", b"TOP 1 0", b"LIST 1", b"UIDL 1", b"DELE 1"]:
            self.assertEqual(session.command(command), Response.DELETED + b"\r\n")
        self.assertEqual(len(self.stored()), 3)
        self.assertTrue(session.command(b"RSET").startswith(b"+OK"))
        self.assertTrue(session.command(b"STAT").startswith(b"+OK 3 "))

    def test_listingsFollowMarks(self) -> None:
        """
        R18: C{STAT}, the counts of C{LIST} and C{UIDL}, and their lines follow each C{DELE}
        and C{RSET}, however often they are asked for.
        """
        session = self.loggedIn()
        sizes = [len(canonical(m)) for m in MESSAGES]
        uidls = [line.split(b" ")[1] for line in multiline(session.command(b"UIDL"))]

        def check(numbers: list[int]) -> None:
            octets = sum(sizes[n - 1] for n in numbers)
            self.assertEqual(session.command(b"STAT"), b"+OK %d %d\r\n" % (len(numbers), octets))
            for command, values in [
                (b"LIST", [b"%d" % (size,) for size in sizes]),
                (b"UIDL", uidls),
            ]:
                for _ in range(2):
                    response = session.command(command)
                    first = b"+OK %d messages (%d octets)\r\n" % (len(numbers), octets)
                    self.assertTrue(response.startswith(first), response)
                    expected = [b"%d %s" % (n, values[n - 1]) for n in numbers]
                    self.assertEqual(multiline(response), expected)

        check([1, 2, 3])
        session.command(b"DELE 2")
        check([1, 3])
        session.command(b"DELE 1")
        session.command(b"DELE 3")
        check([])
        session.command(b"RSET")
        check([1, 2, 3])
        session.command(b"DELE 3")
        check([1, 2])
        session.command(b"RSET")
        check([1, 2, 3])

    def test_quitCommits(self) -> None:
        """
        R23: C{QUIT} in TRANSACTION removes exactly the marked messages, then answers C{+OK}
        and closes.
        """
        session = self.loggedIn()
        session.command(b"DELE 2")
        self.assertTrue(session.command(b"QUIT").startswith(b"+OK"))
        self.assertTrue(session.closed)
        self.assertEqual(self.stored(), [MESSAGES[0], MESSAGES[2]])

    def test_dropDeletesNothing(self) -> None:
        """
        R24: a session that ends without QUIT removes nothing, and its lock is released.
        """
        session = self.loggedIn()
        session.command(b"DELE 1")
        session.drop()
        self.assertEqual(self.stored(), MESSAGES)
        self.assertTrue(self.loggedIn().command(b"STAT").startswith(b"+OK 3 "))

    def test_timeoutDeletesNothing(self) -> None:
        """
        R8: the idle timer is at least ten minutes after login, any command resets it, and
        on expiry the session closes without a response and without UPDATE.
        """
        session = self.loggedIn()
        session.command(b"DELE 1")
        self.clock.advance(599)
        session.command(b"NOOP")
        self.clock.advance(599)
        self.assertFalse(session.closed)
        self.clock.advance(2)
        self.assertTrue(session.transport.disconnecting)
        self.assertEqual(session.read(), b"")
        session.drop()
        self.assertEqual(self.stored(), MESSAGES)

    def test_inUse(self) -> None:
        """
        R10: a second session for a locked maildrop gets C{-ERR [IN-USE]}; the first goes on.
        """
        first = self.loggedIn()
        second = self.session()
        self.assertEqual(second.login(), Response.IN_USE + b"\r\n")
        self.assertFalse(second.closed)
        self.assertTrue(first.command(b"STAT").startswith(b"+OK 3"))
        first.command(b"QUIT")
        self.assertTrue(second.login().startswith(b"+OK"))

    def test_numbersFixedForTheSession(self) -> None:
        """
        R16: numbering is fixed at login: mail delivered later is not listed until the next
        session, and is not removed by this one's commit.
        """
        session = self.loggedIn()
        self.deliver(b"Subject: late\n\nlate\n")
        self.assertTrue(session.command(b"STAT").startswith(b"+OK 3 "))
        self.assertEqual(session.command(b"RETR 4"), Response.NO_SUCH_MESSAGE + b"\r\n")
        session.command(b"DELE 1")
        session.command(b"QUIT")
        self.assertEqual(self.stored(), [*MESSAGES[1:], b"Subject: late\n\nlate\n"])

    def deliver(self, message: bytes) -> None:
        raise NotImplementedError()


class MemoryConformanceTests(ConformanceMixin, SynchronousTestCase):
    """
    L{ConformanceMixin} over L{popd.memory}.
    """

    def makeStore(self, messages: Sequence[bytes]) -> tuple[IRealm, Callable[[], list[bytes]]]:
        self.mailbox = MemoryMailbox(messages)
        realm = MemoryRealm({b"bob": self.mailbox, b"eve": MemoryMailbox()})
        return realm, lambda: self.mailbox.messages

    def deliver(self, message: bytes) -> None:
        self.mailbox.deliver(message)


class MaildirConformanceTests(ConformanceMixin, SynchronousTestCase):
    """
    L{ConformanceMixin} over L{popd.maildir}, on a real Maildir on disk.
    """

    def makeStore(self, messages: Sequence[bytes]) -> tuple[IRealm, Callable[[], list[bytes]]]:
        self.root = FilePath(self.mktemp())
        self.maildir = self.root.child("bob").child("Maildir")
        for name in ["new", "cur", "tmp"]:
            self.maildir.child(name).makedirs()
        self.delivered = 0
        for message in messages:
            self.deliver(message)
        return MaildirRealm(self.root.path + "/%u/Maildir"), self.storedMessages

    def deliver(self, message: bytes) -> None:
        self.delivered += 1
        name = "%d.M%dP1.test" % (1700000000 + self.delivered, self.delivered)
        self.maildir.child("tmp").child(name).setContent(message)
        self.maildir.child("tmp").child(name).moveTo(self.maildir.child("new").child(name))

    def storedMessages(self) -> list[bytes]:
        files = self.maildir.child("new").children() + self.maildir.child("cur").children()
        return [f.getContent() for f in sorted(files, key=lambda f: f.basename())]


class GrammarTests(SynchronousTestCase):
    """
    Rules R2-R6: every malformed or misplaced command gets one C{-ERR} line and the session
    goes on.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.mailbox = MemoryMailbox(MESSAGES)
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret pass")
        self.portal = Portal(MemoryRealm({b"bob": self.mailbox}), [checker])
        self.factory = POP3ServerFactory(self.portal, reactor=self.clock, maxBadCommands=100)

    def loggedIn(self) -> Session:
        session = Session(self.factory)
        self.assertTrue(session.login(password=b"secret pass").startswith(b"+OK"))
        return session

    def assertError(self, session: Session, line: bytes) -> bytes:
        response = session.command(line)
        self.assertTrue(response.startswith(b"-ERR "), (line, response))
        self.assertEqual(response.count(b"\r\n"), 1, (line, response))
        self.assertFalse(session.closed, line)
        return response

    def test_badArguments(self) -> None:
        """
        R5: extra, missing, non-numeric, zero, negative, overflowing arguments and double
        spaces give C{-ERR}, and nothing is marked.
        """
        session = self.loggedIn()
        for line in [
            b"NOOP x",
            b"STAT 1",
            b"RSET 4",
            b"QUIT now",
            b"RETR",
            b"DELE",
            b"TOP",
            b"TOP 1",
            b"DELE abc",
            b"DELE 0",
            b"LIST -1",
            b"LIST 4294967297",
            b"RETR 18446744073709551616",
            b"DELE  1",
            b"DELE 1 ",
            b"LIST 1 2",
            b"UIDL x",
            b"TOP 1 x",
            b"TOP 0 1",
            b"RETR 4",
            b"CAPA x",
            b"DELE +1",
            b"",
            b" ",
            b"FOO",
            b"RETR 1\tx",
        ]:
            self.assertError(session, line)
        self.assertTrue(session.command(b"STAT").startswith(b"+OK 3 "))

    def test_wrongState(self) -> None:
        """
        R6: commands of the other state are refused: C{STAT} before login, C{USER}, C{PASS}
        and C{STLS} after it.
        """
        session = Session(self.factory)
        for line in [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP", b"RSET", b"UIDL", b"TOP 1 1"]:
            self.assertEqual(self.assertError(session, line), Response.WRONG_STATE + b"\r\n")
        self.assertTrue(session.login(password=b"secret pass").startswith(b"+OK"))
        for line in [b"USER bob", b"PASS x", b"APOP bob " + b"0" * 32]:
            self.assertError(session, line)

    def test_upperCaseStatus(self) -> None:
        """
        R2, R27: every fixed response starts with C{+OK} or C{-ERR} in upper case, and free text
        after C{-ERR} never starts with C{[} unless it is a response code.
        """
        codes = (b"[AUTH]", b"[IN-USE]", b"[SYS/TEMP]", b"[SYS/PERM]", b"[LOGIN-DELAY]", b"[UTF8]")
        for name, value in vars(Response).items():
            if name.isupper():
                self.assertTrue(value.startswith((b"+OK", b"-ERR")), name)
                text = value.split(b" ", 1)[1] if b" " in value else b""
                self.assertTrue(not text.startswith(b"[") or text.startswith(codes), name)

    def test_noEcho(self) -> None:
        """
        R3: a long argument is never echoed; every response line stays within 512 octets.
        """
        session = Session(self.factory)
        name = b"x" * 2000
        for line in [b"USER " + name, b"PASS " + name, b"X" * 2000, b"APOP " + name]:
            for response in session.command(line).split(b"\r\n"):
                self.assertNotIn(b"x" * 40, response)
                self.assertLessEqual(len(response) + 2, 512)

    def test_longLine(self) -> None:
        """
        R4: a 255-octet command line is read; an over-long line gets one C{-ERR}, its octets are
        dropped, and the next command works, even when it came in the same segment.
        """
        session = self.loggedIn()
        self.assertEqual(session.command(b"NOOP" + b" " * 0 + b"x" * 0), b"+OK\r\n")
        self.assertTrue(session.command(b"LIST " + b"0" * 248 + b"1").startswith(b"-ERR"))
        response = session.send(b"X" * 5000 + b"\r\nNOOP\r\n")
        self.assertEqual(response, Response.LINE_TOO_LONG + b"\r\n+OK\r\n")
        response = session.send(b"Y" * 3000)
        self.assertEqual(response, b"")
        self.assertEqual(
            session.send(b"Y" * 3000 + b"\r\nNOOP\r\n"), Response.LINE_TOO_LONG + b"\r\n+OK\r\n"
        )

    def test_maxLineLengthSetting(self) -> None:
        """
        The line limit is a setting; below RFC 2449's 255 octets it is refused.
        """
        factory = POP3ServerFactory(self.portal, reactor=self.clock, maxLineLength=300)
        session = Session(factory)
        self.assertEqual(session.command(b"X" * 400), Response.LINE_TOO_LONG + b"\r\n")
        self.assertEqual(session.command(b"CAPA " + b"x" * 280)[:4], b"-ERR")
        self.assertNotEqual(
            session.command(b"CAPA " + b"x" * 280), Response.LINE_TOO_LONG + b"\r\n"
        )
        self.assertRaises(ValueError, POP3ServerFactory, self.portal, maxLineLength=254)

    def test_nul(self) -> None:
        """
        A line with a NUL octet is refused.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"USER b\0ob"), Response.NUL + b"\r\n")

    def test_bareLineFeed(self) -> None:
        """
        Commands ended by a bare LF are accepted.
        """
        session = Session(self.factory)
        self.assertEqual(session.send(b"USER bob\n"), b"+OK\r\n")

    def test_tooManyBadCommands(self) -> None:
        """
        After the configured number of bad commands the connection is closed.
        """
        factory = POP3ServerFactory(self.portal, reactor=self.clock, maxBadCommands=3)
        session = Session(factory)
        for _ in range(3):
            self.assertEqual(session.command(b"FOO"), Response.UNKNOWN + b"\r\n")
        self.assertEqual(session.command(b"FOO"), Response.TOO_MANY_BAD + b"\r\n")
        self.assertTrue(session.closed)

    def test_pipelining(self) -> None:
        """
        R26: a whole session sent in one segment is answered completely and in order.
        """
        session = Session(self.factory)
        response = session.send(
            b"USER bob\r\nPASS secret pass\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nLIST\r\nQUIT\r\n"
        )
        lines = response.split(b"\r\n")
        self.assertEqual(lines[0], b"+OK")
        self.assertTrue(lines[1].startswith(b"+OK"))
        self.assertTrue(lines[2].startswith(b"+OK 3 "))
        self.assertTrue(lines[3].startswith(b"+OK ") and lines[3].endswith(b" octets"))
        self.assertIn(b"\r\n.\r\n+OK Message 1 deleted.\r\n+OK 2 messages", response)
        self.assertTrue(response.endswith(b"\r\n.\r\n+OK Bye; 1 messages removed.\r\n"))
        self.assertEqual(len(self.mailbox.messages), 2)

    def test_capa(self) -> None:
        """
        R25: C{CAPA} works in both states with registered tags, and what is offered before login
        is still listed after it.
        """
        session = Session(self.factory)
        before = multiline(session.command(b"CAPA"))
        for tag in [b"TOP", b"UIDL", b"USER", b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE"]:
            self.assertIn(tag, before)
        session.login(password=b"secret pass")
        after = multiline(session.command(b"CAPA"))
        self.assertEqual([c for c in before if c not in after], [])

    def test_lastOnlyWhenEnabled(self) -> None:
        """
        R38: C{LAST} is unknown by default; enabled, it gives the highest message number
        accessed and C{RSET} resets it; it is never advertised in C{CAPA}.
        """
        session = self.loggedIn()
        self.assertEqual(session.command(b"LAST"), Response.UNKNOWN + b"\r\n")
        factory = POP3ServerFactory(self.portal, reactor=self.clock, enableLast=True)
        session.drop()
        session = Session(factory)
        session.login(password=b"secret pass")
        self.assertEqual(session.command(b"LAST"), b"+OK 0\r\n")
        session.command(b"RETR 2")
        self.assertEqual(session.command(b"LAST"), b"+OK 2\r\n")
        session.command(b"TOP 3 0")
        self.assertEqual(session.command(b"LAST"), b"+OK 2\r\n")
        session.command(b"DELE 3")
        self.assertEqual(session.command(b"LAST"), b"+OK 3\r\n")
        session.command(b"RSET")
        self.assertEqual(session.command(b"LAST"), b"+OK 0\r\n")
        self.assertNotIn(b"LAST", session.command(b"CAPA"))


class AuthorizationTests(SynchronousTestCase):
    """
    Rules R9-R15 and R34: logging in.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.mailbox = MemoryMailbox(MESSAGES)
        self.checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret pass")
        self.portal = Portal(MemoryRealm({b"bob": self.mailbox}), [self.checker])
        self.factory = POP3ServerFactory(self.portal, reactor=self.clock, authFailureDelay=2)

    def test_passwordWithSpaces(self) -> None:
        """
        R12: the rest of the PASS line, spaces included, is the password.
        """
        session = Session(self.factory)
        self.assertTrue(session.login(password=b"secret pass").startswith(b"+OK"))

    def test_userRevealsNothing(self) -> None:
        """
        R14: C{USER} answers C{+OK} for any name, and a failed login answers the same for an
        unknown user as for a wrong password.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"USER nobody"), b"+OK\r\n")
        self.assertEqual(session.command(b"PASS x"), b"")
        self.clock.advance(2)
        unknown = session.read()
        session.command(b"USER bob")
        session.command(b"PASS wrong")
        self.clock.advance(60)
        self.assertEqual(session.read(), unknown)
        self.assertEqual(unknown, Response.AUTH_FAILED + b"\r\n")

    def test_failureDelayed(self) -> None:
        """
        A failed login is answered only after the delay, and nothing else is read meanwhile;
        then a new attempt works (R11).
        """
        session = Session(self.factory)
        session.command(b"USER bob")
        self.assertEqual(session.send(b"PASS wrong\r\nUSER bob\r\nPASS secret pass\r\n"), b"")
        self.clock.advance(1.9)
        self.assertEqual(session.read(), b"")
        self.clock.advance(0.1)
        response = session.read()
        self.assertTrue(response.startswith(Response.AUTH_FAILED + b"\r\n+OK\r\n+OK"), response)

    def test_tooManyFailures(self) -> None:
        """
        After the configured number of failed logins the connection is closed.
        """
        session = Session(self.factory)
        for _ in range(2):
            session.login(password=b"wrong")
            self.clock.advance(60)
            self.assertEqual(session.read(), Response.AUTH_FAILED + b"\r\n")
        session.login(password=b"wrong")
        self.clock.advance(60)
        self.assertEqual(session.read(), Response.TOO_MANY_FAILURES + b"\r\n")
        self.assertTrue(session.closed)

    def test_passWithoutUser(self) -> None:
        """
        C{PASS} before C{USER} is refused without consulting the checker.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"PASS secret pass"), Response.USER_FIRST + b"\r\n")

    def test_quitInAuthorization(self) -> None:
        """
        R15: C{QUIT} before login ends the session without UPDATE.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"QUIT"), Response.BYE + b"\r\n")
        self.assertTrue(session.closed)
        self.assertEqual(len(self.mailbox.messages), 3)

    def test_authorizationTimeout(self) -> None:
        """
        Before login the idle timeout is the shorter C{authorizationTimeout}.
        """
        factory = POP3ServerFactory(self.portal, reactor=self.clock, authorizationTimeout=30)
        session = Session(factory)
        self.clock.advance(29)
        self.assertFalse(session.closed)
        self.clock.advance(1)
        self.assertTrue(session.closed)

    def test_apop(self) -> None:
        """
        R9, R13: with a checker that knows plaintext secrets the greeting carries a timestamp,
        new on every connection, and C{APOP} with MD5(timestamp + secret) logs in.
        """
        session = Session(self.factory)
        other = Session(self.factory)
        timestamp = session.greeting.split(b" ")[-1].strip()
        self.assertTrue(timestamp.startswith(b"<") and timestamp.endswith(b">"), timestamp)
        self.assertNotIn(timestamp, other.greeting)
        wrong = hashlib.md5(timestamp + b"wrong").hexdigest().encode("ascii")
        session.command(b"APOP bob " + wrong)
        self.clock.advance(2)
        self.assertEqual(session.read(), Response.AUTH_FAILED + b"\r\n")
        digest = hashlib.md5(timestamp + b"secret pass").hexdigest().encode("ascii")
        self.assertTrue(session.command(b"APOP bob " + digest).startswith(b"+OK"))

    def test_noApopWithoutPlaintextSecrets(self) -> None:
        """
        R13: a portal whose checkers only verify passwords offers no timestamp and no APOP.
        """

        @implementer(__import__("twisted.cred.checkers").cred.checkers.ICredentialsChecker)
        class HashedOnly:
            credentialInterfaces = (IUsernamePassword,)

            def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
                return succeed(credentials.username)

        portal = Portal(MemoryRealm({b"bob": self.mailbox}), [HashedOnly()])
        session = Session(POP3ServerFactory(portal, reactor=self.clock))
        self.assertNotIn(b"<", session.greeting)
        self.assertEqual(session.command(b"APOP bob " + b"0" * 32), Response.UNKNOWN + b"\r\n")

    def test_cleartextRefusedOnRemotePlainConnection(self) -> None:
        """
        R34: on a connection that is neither TLS nor loopback, USER and PASS are refused with
        C{[AUTH]} and USER is not advertised.
        """
        session = Session(self.factory, REMOTE)
        self.assertNotIn(b"USER", multiline(session.command(b"CAPA")))
        self.assertEqual(session.command(b"USER bob"), Response.CLEARTEXT_DISABLED + b"\r\n")
        self.assertEqual(session.command(b"PASS x"), Response.CLEARTEXT_DISABLED + b"\r\n")

    def test_cleartextAllowed(self) -> None:
        """
        Cleartext login works from loopback (IPv4, IPv6, UNIX sockets) and, when the admin
        allows it, from anywhere.
        """
        for peer in [LOOPBACK, IPv6Address("TCP", "::1", 1), UNIXAddress(None)]:
            self.assertTrue(
                Session(self.factory, peer).login(password=b"secret pass").startswith(b"+OK")
            )
            self.mailbox.locked = False
        factory = POP3ServerFactory(self.portal, reactor=self.clock, allowCleartext=True)
        session = Session(factory, REMOTE)
        self.assertIn(b"USER", multiline(session.command(b"CAPA")))
        self.assertTrue(session.login(password=b"secret pass").startswith(b"+OK"))

    def test_cleartextOverTLS(self) -> None:
        """
        Over TLS, cleartext login is allowed from anywhere.
        """
        transport = TCPStringTransport()
        directlyProvides(transport, ISSLTransport)
        session = Session(self.factory, REMOTE, transport)
        self.assertTrue(session.login(password=b"secret pass").startswith(b"+OK"))


class STLSTests(SynchronousTestCase):
    """
    Rules R32, R33: C{STLS}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.mailbox = MemoryMailbox(MESSAGES)
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")
        self.portal = Portal(MemoryRealm({b"bob": self.mailbox}), [checker])
        self.context = object()
        self.factory = POP3ServerFactory(
            self.portal,
            reactor=self.clock,
            tlsContextFactory=self.context,  # type: ignore[arg-type]
        )

    def session(self) -> Session:
        return Session(self.factory, REMOTE, TLSStringTransport())

    def test_offeredAndStarted(self) -> None:
        """
        R32: C{STLS} is advertised before TLS, starts TLS with the configured context, and is
        no longer advertised or accepted afterwards; the session stays in AUTHORIZATION and
        cleartext login becomes available.
        """
        session = self.session()
        capabilities = multiline(session.command(b"CAPA"))
        self.assertIn(b"STLS", capabilities)
        self.assertNotIn(b"USER", capabilities)
        self.assertEqual(session.command(b"STLS"), Response.TLS_BEGIN + b"\r\n")
        self.assertIs(session.transport.tlsStarted, self.context)  # type: ignore[attr-defined]
        capabilities = multiline(session.command(b"CAPA"))
        self.assertNotIn(b"STLS", capabilities)
        self.assertIn(b"USER", capabilities)
        self.assertEqual(session.command(b"STLS"), Response.TLS_ACTIVE + b"\r\n")
        self.assertTrue(session.login().startswith(b"+OK"))

    def test_pipelinedPlaintextDiscarded(self) -> None:
        """
        R33: commands pipelined after C{STLS} in the same segment are dropped, not answered.
        """
        session = self.session()
        response = session.send(b"STLS\r\nCAPA\r\nUSER bob\r\n")
        self.assertEqual(response, Response.TLS_BEGIN + b"\r\n")
        self.assertEqual(session.command(b"NOOP"), Response.WRONG_STATE + b"\r\n")

    def test_argument(self) -> None:
        """
        R32: C{STLS} takes no argument.
        """
        self.assertEqual(self.session().command(b"STLS now"), Response.SYNTAX + b"\r\n")

    def test_notOfferedWithoutCertificate(self) -> None:
        """
        Without a certificate there is no C{STLS}.
        """
        session = Session(
            POP3ServerFactory(self.portal, reactor=self.clock), REMOTE, TLSStringTransport()
        )
        self.assertNotIn(b"STLS", session.command(b"CAPA"))
        self.assertEqual(session.command(b"STLS"), Response.UNKNOWN + b"\r\n")

    def test_notAfterLogin(self) -> None:
        """
        R6, R32: C{STLS} is refused in TRANSACTION.
        """
        factory = POP3ServerFactory(
            self.portal, reactor=self.clock, allowCleartext=True, tlsContextFactory=self.context
        )  # type: ignore[arg-type]
        session = Session(factory, REMOTE, TLSStringTransport())
        session.login()
        self.assertEqual(session.command(b"STLS"), Response.WRONG_STATE + b"\r\n")


@implementer(IMessage)
class ControlledMessage:
    """
    A message whose reads fire when the test says so, or fail.
    """

    def __init__(self, chunks: list[bytes | Exception]) -> None:
        self.chunks = chunks
        self.pending: list[Deferred[bytes]] = []
        self.closed = False

    def read(self, size: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.pending.append(d)
        return d

    def deliverNext(self) -> None:
        chunk = self.chunks.pop(0) if self.chunks else b""
        d = self.pending.pop(0)
        if isinstance(chunk, Exception):
            d.errback(chunk)
        else:
            d.callback(chunk)

    def close(self) -> None:
        self.closed = True


@implementer(IMaildrop)
class ControlledMaildrop:
    """
    A maildrop whose answers the test chooses: failures, late answers, partial commits.
    """

    def __init__(self) -> None:
        self.messages: dict[int, Deferred[IMessage]] = {}
        self.commitResult: Deferred[Collection[int]] = succeed(())
        self.committed: list[Collection[int]] = []
        self.closed = 0

    def listing(self) -> Deferred[Sequence[MessageInfo]]:
        return succeed([MessageInfo(10, b"a"), MessageInfo(20, b"b")])

    def open(self, index: int) -> Deferred[IMessage]:
        return self.messages[index]

    def commit(
        self, deleted: Collection[int], retrieved: Collection[int]
    ) -> Deferred[Collection[int]]:
        self.committed.append(deleted)
        return self.commitResult

    def close(self) -> Deferred[None]:
        self.closed += 1
        return succeed(None)


@implementer(IRealm)
class ControlledRealm:
    def __init__(self, maildrop: ControlledMaildrop) -> None:
        self.maildrop = maildrop
        self.logouts = 0

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: type[Interface]) -> Any:
        def logout() -> None:
            self.logouts += 1

        return succeed((IMaildrop, self.maildrop, logout))


class StoreFailureTests(SynchronousTestCase):
    """
    What the client sees when the store fails or is slow: a fixed C{-ERR} with a response
    code, never exception text, and never a half-sent message presented as whole.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.maildrop = ControlledMaildrop()
        self.realm = ControlledRealm(self.maildrop)
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")
        factory = POP3ServerFactory(Portal(self.realm, [checker]), reactor=self.clock)
        self.session = Session(factory)
        self.session.login()

    def test_openFailures(self) -> None:
        """
        A vanished message, a temporary and a permanent failure, and an unexpected exception
        each get their own fixed answer, and the session goes on.
        """
        for error, response in [
            (MessageGone(), Response.GONE),
            (TemporaryFailure("disk on fire"), Response.SYS_TEMP),
            (PermanentFailure("disk gone"), Response.SYS_PERM),
            (ZeroDivisionError("oops"), Response.SYS_TEMP),
        ]:
            self.maildrop.messages[0] = fail(error)
            self.assertEqual(self.session.command(b"RETR 1"), response + b"\r\n")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.session.command(b"NOOP"), b"+OK\r\n")

    def test_slowStorePipelined(self) -> None:
        """
        R26: while a message is still being read, later commands wait and are answered after
        it, in order.
        """
        message = ControlledMessage([b"H: 1\n\n", b"a\n", b".b\n"])
        self.maildrop.messages[0] = succeed(message)  # type: ignore[arg-type]
        self.assertEqual(self.session.send(b"RETR 1\r\nSTAT\r\nNOOP\r\n"), b"")
        message.deliverNext()
        self.assertEqual(self.session.read(), b"+OK 10 octets\r\nH: 1\r\n\r\n")
        message.deliverNext()
        self.assertEqual(self.session.read(), b"a\r\n")
        message.deliverNext()
        message.deliverNext()
        self.assertEqual(self.session.read(), b"..b\r\n.\r\n+OK 2 30\r\n+OK\r\n")
        self.assertTrue(message.closed)

    def test_readFailureMidMessage(self) -> None:
        """
        A store failure after the C{+OK} line drops the connection instead of ending the
        message with a terminator: a truncated message is never presented as complete.
        """
        message = ControlledMessage([b"H: 1\n\n", b"a\n", OSError("EIO")])
        self.maildrop.messages[0] = succeed(message)  # type: ignore[arg-type]
        self.session.send(b"RETR 1\r\n")
        for _ in range(3):
            message.deliverNext()
        self.assertNotIn(b"\r\n.\r\n", self.session.read())
        self.assertTrue(self.session.closed)
        self.assertTrue(message.closed)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_headerReadFailure(self) -> None:
        """
        A store failure while the header is read, before the C{+OK} line, is answered with
        C{-ERR [SYS/TEMP]} and the session goes on.
        """
        message = ControlledMessage([OSError("EIO")])
        self.maildrop.messages[0] = succeed(message)  # type: ignore[arg-type]
        self.session.send(b"RETR 1\r\n")
        message.deliverNext()
        self.assertEqual(self.session.read(), Response.SYS_TEMP + b"\r\n")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.session.command(b"NOOP"), b"+OK\r\n")

    def test_headerAcrossReads(self) -> None:
        """
        A header section that arrives over several reads is read whole before the C{+OK}
        line goes out.
        """
        message = ControlledMessage([b"A: 1\n", b"B: 2\n", b"\nbody\n"])
        self.maildrop.messages[0] = succeed(message)  # type: ignore[arg-type]
        self.assertEqual(self.session.send(b"RETR 1\r\n"), b"")
        message.deliverNext()
        message.deliverNext()
        self.assertEqual(self.session.read(), b"")
        message.deliverNext()
        self.assertEqual(self.session.read(), b"+OK 10 octets\r\nA: 1\r\nB: 2\r\n\r\nbody\r\n")
        message.deliverNext()
        self.assertEqual(self.session.read(), b".\r\n")
        self.assertTrue(message.closed)

    def test_eightBitHeaderAcrossReads(self) -> None:
        """
        R36: an 8-bit octet in a later read of the header section refuses the message
        before anything of it is sent; its body may have them.
        """
        message = ControlledMessage([b"A: 1\n", "B: \u00fc\n".encode(), b"\nbody\n"])
        self.maildrop.messages[0] = succeed(message)  # type: ignore[arg-type]
        self.session.send(b"RETR 1\r\n")
        for _ in range(3):
            message.deliverNext()
        self.assertEqual(self.session.read(), Response.UTF8_HEADERS + b"\r\n")
        self.assertTrue(message.closed)
        body = ControlledMessage([b"A: 1\n\n", "\u00fc\n".encode()])
        self.maildrop.messages[1] = succeed(body)  # type: ignore[arg-type]
        self.session.send(b"RETR 2\r\n")
        for _ in range(3):
            body.deliverNext()
        self.assertEqual(
            self.session.read(), "+OK 20 octets\r\nA: 1\r\n\r\n\u00fc\r\n.\r\n".encode()
        )

    def test_headerReadFailureClosesMessage(self) -> None:
        """
        A message whose header could not be read is closed.
        """
        message = ControlledMessage([b"A: 1\n", OSError("EIO")])
        self.maildrop.messages[0] = succeed(message)  # type: ignore[arg-type]
        self.session.send(b"RETR 1\r\n")
        message.deliverNext()
        message.deliverNext()
        self.assertEqual(self.session.read(), Response.SYS_TEMP + b"\r\n")
        self.assertTrue(message.closed)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_partialCommit(self) -> None:
        """
        R23, R30: when some marked messages could not be removed, C{QUIT} answers
        C{-ERR [SYS/TEMP]}, and the maildrop is closed once.
        """
        self.maildrop.commitResult = succeed([1])
        self.session.command(b"DELE 1")
        self.session.command(b"DELE 2")
        self.assertEqual(self.session.command(b"QUIT"), Response.NOT_REMOVED + b"\r\n")
        self.assertEqual(self.maildrop.committed, [[0, 1]])
        self.assertTrue(self.session.closed)
        self.session.drop()
        self.assertEqual((self.maildrop.closed, self.realm.logouts), (1, 1))

    def test_commitFailures(self) -> None:
        """
        R30: a commit that fails outright answers with the matching response code.
        """
        self.maildrop.commitResult = fail(PermanentFailure())
        self.assertEqual(self.session.command(b"QUIT"), Response.SYS_PERM + b"\r\n")

    def test_dropReleasesOnce(self) -> None:
        """
        R24: a dropped session never commits, and closes its maildrop exactly once.
        """
        self.session.command(b"DELE 1")
        self.session.drop()
        self.assertEqual(self.maildrop.committed, [])
        self.assertEqual((self.maildrop.closed, self.realm.logouts), (1, 1))


class ConnectionResourceTests(SynchronousTestCase):
    """
    What each connection costs the server: one timer serves every connection's idle timeout,
    and a protocol's attributes all exist from its construction.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret", eve=b"other")
        realm = MemoryRealm({b"bob": MemoryMailbox(MESSAGES), b"eve": MemoryMailbox()})
        self.factory = POP3ServerFactory(
            Portal(realm, [checker]),
            reactor=self.clock,
            authorizationTimeout=30,
            timeout=600,
            authFailureDelay=1,
            enableLast=True,
        )

    def test_oneTimer(self) -> None:
        """
        Idle connections, logged in or not, share one pending call, and each times out at
        its own deadline; when the last connection is gone, no call is left pending.
        """
        sessions = [Session(self.factory) for _ in range(3)]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        sessions[0].login()
        self.clock.advance(20)
        sessions[1].command(b"NOOP")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        self.assertEqual([s.closed for s in sessions], [False, False, True])
        self.clock.advance(20)
        self.assertEqual([s.closed for s in sessions], [False, True, True])
        sessions[1].drop()
        sessions[2].drop()
        self.clock.advance(549)
        self.assertFalse(sessions[0].closed)
        self.clock.advance(1)
        self.assertTrue(sessions[0].closed)
        sessions[0].drop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slowTransferKeptAlive(self) -> None:
        """
        While a message is being sent, each piece of it restarts the idle countdown.
        """
        maildrop = ControlledMaildrop()
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")
        portal = Portal(ControlledRealm(maildrop), [checker])
        session = Session(POP3ServerFactory(portal, reactor=self.clock, timeout=600))
        session.login()
        message = ControlledMessage([b"A: 1\n\n", b"a\n", b"b\n"])
        maildrop.messages[0] = succeed(message)  # type: ignore[arg-type]
        session.send(b"RETR 1\r\n")
        for _ in range(3):
            self.clock.advance(599)
            message.deliverNext()
        message.deliverNext()
        self.assertTrue(session.read().endswith(b"b\r\n.\r\n"))
        self.clock.advance(599)
        self.assertFalse(session.closed)
        self.clock.advance(1)
        self.assertTrue(session.closed)

    def test_attributesSetAtConstruction(self) -> None:
        """
        A session through every kind of command sets no attribute that the constructor did
        not, but the factory that Twisted sets: CPython stores the attributes of many
        instances compactly only under names set early (see L{POP3ServerProtocol.__init__}).
        """
        names = set(vars(POP3ServerProtocol()))
        session = Session(self.factory)
        for line in [b"CAPA", b"UTF8", b"X" * 3000, b"NOOP\0", b"FOO", b"STAT"]:
            session.command(line)
        session.login(password=b"wrong")
        self.clock.advance(1)
        session.read()
        session.command(b"AUTH PLAIN")
        session.command(b"*")
        session.login()
        for line in [b"STAT", b"LIST", b"UIDL", b"LIST 1", b"RETR 1", b"TOP 2 1", b"DELE 3"]:
            session.command(line)
        for line in [b"LAST", b"RSET", b"DELE 1", b"QUIT"]:
            session.command(line)
        session.drop()
        self.assertEqual(set(vars(session.protocol)) - names, {"factory"})
