"""
Tests for popd's policies: connection and session limits, the growing failed-login penalty,
LOGIN-DELAY and EXPIRE (RFC 2449), UTF8 and LANG (RFC 6856), and L{popd.limits} itself.
"""

from __future__ import annotations

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from popd.limits import ConcurrencyLimit, FailurePenalty, IdleTimeouts, LoginDelay
from popd.memory import MemoryMailbox, MemoryRealm
from popd.protocol import POP3ServerFactory, Response
from tests.test_protocol import LOOPBACK, Session, multiline

DAY = 86400.0


class PolicyTestCase(SynchronousTestCase):
    """
    A memory store for bob and alice, a clock shared by the server and the store.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.bob = MemoryMailbox(
            [b"Subject: a\n\none\n", b"Subject: b\n\ntwo\n", b"Subject: c\n\nthree\n"],
            clock=self.clock.seconds,
        )
        self.alice = MemoryMailbox([b"Subject: x\n\nx\n"], clock=self.clock.seconds)
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret", alice=b"pw")
        self.portal = Portal(MemoryRealm({b"bob": self.bob, b"alice": self.alice}), [checker])

    def factory(self, **policy: object) -> POP3ServerFactory:
        return POP3ServerFactory(self.portal, reactor=self.clock, **policy)  # type: ignore[arg-type]


class ConnectionLimitTests(PolicyTestCase):
    """
    Connections per peer address and sessions per user are limited.
    """

    def test_perPeer(self) -> None:
        """
        Past the limit, a peer's new connection is refused with C{[SYS/TEMP]} and closed; other
        peers are not affected, and a closed connection frees its slot.
        """
        factory = self.factory(maxConnectionsPerPeer=2)
        first, _ = Session(factory), Session(factory)
        refused = Session(factory)
        self.assertEqual(refused.greeting, Response.TOO_MANY_CONNECTIONS + b"\r\n")
        self.assertTrue(refused.closed)
        refused.drop()
        other = Session(factory, IPv4Address("TCP", "127.0.0.2", 1))
        self.assertTrue(other.greeting.startswith(b"+OK"))
        first.drop()
        self.assertTrue(Session(factory).greeting.startswith(b"+OK"))

    def test_unixSocketsNotCounted(self) -> None:
        """
        UNIX-socket peers have no address to count by.
        """
        factory = self.factory(maxConnectionsPerPeer=1)
        for _ in range(3):
            self.assertTrue(Session(factory, UNIXAddress(None)).greeting.startswith(b"+OK"))

    def test_perUser(self) -> None:
        """
        Past the limit, a user's login is refused with C{[IN-USE]} even by a store without
        locks; logging out frees the slot.
        """
        factory = self.factory(maxSessionsPerUser=1)
        first = Session(factory)
        self.assertTrue(first.login().startswith(b"+OK"))
        self.bob.locked = False  # a store that would allow a second session
        second = Session(factory)
        self.assertEqual(second.login(), Response.TOO_MANY_SESSIONS + b"\r\n")
        first.command(b"QUIT")
        first.drop()
        self.assertTrue(second.login().startswith(b"+OK"))


class PenaltyTests(PolicyTestCase):
    """
    A peer's failed logins wait longer each time, up to a cap.
    """

    def failOnce(self, session: Session) -> float:
        """
        Fail a login and return how long its answer took.
        """
        session.login(password=b"wrong")
        waited = 0.0
        while not session.transport.value():
            self.clock.advance(0.5)
            waited += 0.5
        self.assertEqual(session.read(), Response.AUTH_FAILED + b"\r\n")
        return waited

    def test_growsAndCaps(self) -> None:
        """
        The delay doubles from C{authFailureDelay} to C{maxAuthFailureDelay}, across
        connections of the same peer.
        """
        factory = self.factory(authFailureDelay=1, maxAuthFailureDelay=5, maxAuthFailures=100)
        delays = [self.failOnce(Session(factory)) for _ in range(5)]
        self.assertEqual(delays, [1, 2, 4, 5, 5])

    def test_resetBySuccess(self) -> None:
        """
        A successful login from the peer starts it again from the base delay.
        """
        factory = self.factory(authFailureDelay=1, maxAuthFailures=100)
        session = Session(factory)
        self.failOnce(session)
        self.failOnce(session)
        session.login()
        session.drop()
        self.assertEqual(self.failOnce(Session(factory)), 1)

    def test_otherPeersUnaffected(self) -> None:
        factory = self.factory(authFailureDelay=1, maxAuthFailures=100)
        for _ in range(3):
            self.failOnce(Session(factory))
        other = Session(factory, IPv4Address("TCP", "127.0.0.9", 1))
        self.assertEqual(self.failOnce(other), 1)


class LoginDelayTests(PolicyTestCase):
    """
    R28: LOGIN-DELAY is advertised and enforced after a valid password.
    """

    def test_advertised(self) -> None:
        session = Session(self.factory(loginDelay=300))
        self.assertIn(b"LOGIN-DELAY 300", multiline(session.command(b"CAPA")))
        self.assertNotIn(b"LOGIN-DELAY", Session(self.factory()).command(b"CAPA"))

    def test_enforced(self) -> None:
        """
        A second login inside the window gets C{-ERR [LOGIN-DELAY]} and no maildrop; a wrong
        password inside the window still gets C{[AUTH]}, so the code reveals nothing to a
        guesser; after the window the login works.
        """
        factory = self.factory(loginDelay=300, authFailureDelay=0)
        first = Session(factory)
        self.assertTrue(first.login().startswith(b"+OK"))
        first.command(b"QUIT")
        second = Session(factory)
        self.assertEqual(second.login(), Response.LOGIN_DELAY + b"\r\n")
        self.assertFalse(self.bob.locked)
        second.login(password=b"wrong")
        self.clock.advance(0)
        self.assertEqual(second.read(), Response.AUTH_FAILED + b"\r\n")
        self.assertTrue(Session(factory).login(b"alice", b"pw").startswith(b"+OK"))
        self.clock.advance(300)
        self.assertTrue(Session(factory).login().startswith(b"+OK"))


class ExpireTests(PolicyTestCase):
    """
    R29: the EXPIRE policy is advertised and enforced: only retrieved messages expire.
    """

    def session(self, factory: POP3ServerFactory) -> Session:
        session = Session(factory)
        self.assertTrue(session.login().startswith(b"+OK"))
        return session

    def test_neverByDefault(self) -> None:
        session = self.session(self.factory())
        self.assertIn(b"EXPIRE NEVER", multiline(session.command(b"CAPA")))

    def test_zero(self) -> None:
        """
        With EXPIRE 0, the messages retrieved in a session are removed at its UPDATE; those
        only listed or read with TOP stay; a session that drops removes nothing.
        """
        factory = self.factory(expireDays=0)
        session = self.session(factory)
        self.assertIn(b"EXPIRE 0", multiline(session.command(b"CAPA")))
        session.command(b"RETR 1")
        session.drop()
        self.assertEqual(len(self.bob.messages), 3)
        session = self.session(factory)
        session.command(b"RETR 2")
        session.command(b"TOP 3 0")
        self.assertEqual(session.command(b"QUIT"), b"+OK Bye; 1 messages removed.\r\n")
        self.assertEqual(self.bob.messages, [b"Subject: a\n\none\n", b"Subject: c\n\nthree\n"])

    def test_days(self) -> None:
        """
        With EXPIRE n, a message first retrieved n days ago is removed at the next UPDATE;
        retrieving it again does not restart its clock; unretrieved messages stay for ever.
        """
        factory = self.factory(expireDays=2)
        session = self.session(factory)
        self.assertIn(b"EXPIRE 2", multiline(session.command(b"CAPA")))
        session.command(b"RETR 1")
        session.command(b"QUIT")
        self.clock.advance(DAY)
        session = self.session(factory)
        session.command(b"RETR 1")
        session.command(b"QUIT")
        self.assertEqual(len(self.bob.messages), 3)
        self.clock.advance(DAY)
        session = self.session(factory)
        self.assertEqual(session.command(b"QUIT"), b"+OK Bye; 1 messages removed.\r\n")
        self.assertEqual(len(self.bob.messages), 2)
        self.clock.advance(1000 * DAY)
        session = self.session(factory)
        self.assertEqual(session.command(b"QUIT"), b"+OK Bye; 0 messages removed.\r\n")
        self.assertEqual(len(self.bob.messages), 2)


class UTF8Tests(SynchronousTestCase):
    """
    R36: UTF8 mode and messages with raw UTF-8 header fields.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.mailbox = MemoryMailbox(
            [
                "Subject: Grüße\n\nbody\n".encode(),
                "Subject: plain\n\nbody with ü\n".encode(),
            ]
        )
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        checker.addUser("jörg".encode(), "pässword".encode())
        realm = MemoryRealm({"jörg".encode(): self.mailbox})
        self.factory = POP3ServerFactory(Portal(realm, [checker]), reactor=self.clock)

    def login(self, session: Session) -> None:
        response = session.login("jörg".encode(), "pässword".encode())
        self.assertTrue(response.startswith(b"+OK"), response)

    def test_capability(self) -> None:
        """
        C{UTF8 USER} is advertised, and UTF-8 user names and passwords work.
        """
        session = Session(self.factory)
        self.assertIn(b"UTF8 USER", multiline(session.command(b"CAPA")))
        self.login(session)
        self.assertIn(b"UTF8 USER", multiline(session.command(b"CAPA")))

    def test_refusedOutsideUTF8Mode(self) -> None:
        """
        Without C{UTF8}, a message with UTF-8 header fields is refused with C{[UTF8]} (by RETR
        and TOP); 8-bit bodies are sent as they are; the session goes on.
        """
        session = Session(self.factory)
        self.login(session)
        self.assertEqual(session.command(b"RETR 1"), Response.UTF8_HEADERS + b"\r\n")
        self.assertEqual(session.command(b"TOP 1 0"), Response.UTF8_HEADERS + b"\r\n")
        self.assertIn("body with ü".encode(), session.command(b"RETR 2"))

    def test_sentInUTF8Mode(self) -> None:
        """
        After C{UTF8} the message is sent as it is.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"UTF8"), b"+OK UTF8 mode enabled.\r\n")
        self.login(session)
        self.assertIn("Subject: Grüße".encode(), session.command(b"RETR 1"))

    def test_onlyInAuthorization(self) -> None:
        session = Session(self.factory)
        self.assertEqual(session.command(b"UTF8 x"), Response.SYNTAX + b"\r\n")
        self.login(session)
        self.assertEqual(session.command(b"UTF8"), Response.WRONG_STATE + b"\r\n")


class LangTests(SynchronousTestCase):
    """
    R36: C{LANG} lists and selects response languages.
    """

    def setUp(self) -> None:
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")
        portal = Portal(MemoryRealm({b"bob": MemoryMailbox()}), [checker])
        self.session = Session(POP3ServerFactory(portal, reactor=Clock()), LOOPBACK)

    def test_list(self) -> None:
        self.assertEqual(multiline(self.session.command(b"LANG")), [b"en English"])
        self.assertIn(b"LANG", multiline(self.session.command(b"CAPA")))

    def test_select(self) -> None:
        """
        C{en}, a range of it and C{*} select English; other languages are refused; LANG works
        after login too.
        """
        for argument in [b"en", b"EN", b"en-US", b"*"]:
            self.assertEqual(
                self.session.command(b"LANG " + argument), b"+OK en Language changed.\r\n"
            )
        self.assertEqual(self.session.command(b"LANG fr"), Response.NO_LANGUAGE + b"\r\n")
        self.session.login()
        self.assertEqual(self.session.command(b"LANG en"), b"+OK en Language changed.\r\n")


class LimitsTests(SynchronousTestCase):
    """
    L{popd.limits} on its own.
    """

    def test_concurrency(self) -> None:
        limit: ConcurrencyLimit[str] = ConcurrencyLimit(2)
        self.assertTrue(limit.acquire("a") and limit.acquire("a"))
        self.assertFalse(limit.acquire("a"))
        self.assertEqual(limit.held("a"), 2)
        limit.release("a")
        self.assertTrue(limit.acquire("a"))

    def test_penaltyForgets(self) -> None:
        """
        A peer quiet for C{forgetAfter} seconds starts again from the base delay.
        """
        clock = Clock()
        penalty: FailurePenalty[str] = FailurePenalty(1, 100, 600, clock.seconds)
        self.assertEqual([penalty.failed("p") for _ in range(3)], [1, 2, 4])
        clock.advance(600)
        self.assertEqual(penalty.failed("p"), 1)

    def test_penaltyNeverOverflows(self) -> None:
        penalty: FailurePenalty[str] = FailurePenalty(2, 15, 600, Clock().seconds)
        for _ in range(5000):
            delay = penalty.failed("p")
        self.assertEqual(delay, 15)

    def test_bounded(self) -> None:
        """
        A flood of distinct keys does not grow the records past expired ones.
        """
        clock = Clock()
        delay: LoginDelay[int] = LoginDelay(10, clock.seconds)
        for key in range(10_000):
            delay.allow(key)
        clock.advance(10)
        delay.allow(-1)
        self.assertEqual(len(delay._logins._records), 1)


class IdleTimeoutsTests(SynchronousTestCase):
    """
    L{IdleTimeouts} expires each key at its own deadline, with one timer for all of them.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.expired: list[str] = []
        self.timeouts: IdleTimeouts[str] = IdleTimeouts(self.clock, self.expired.append)

    def test_expires(self) -> None:
        """
        A key expires exactly its timeout after it was watched, and is then forgotten.
        """
        self.timeouts.watch("a", 10)
        self.clock.advance(9.5)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.5)
        self.assertEqual(self.expired, ["a"])
        self.assertFalse(self.timeouts.watching("a"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_touch(self) -> None:
        """
        Touching a key restarts its countdown; the others keep theirs.
        """
        self.timeouts.watch("a", 10)
        self.timeouts.watch("b", 10)
        self.clock.advance(6)
        self.timeouts.touch("a")
        self.clock.advance(4)
        self.assertEqual(self.expired, ["b"])
        self.clock.advance(5.9)
        self.assertEqual(self.expired, ["b"])
        self.clock.advance(0.1)
        self.assertEqual(self.expired, ["b", "a"])

    def test_touchUnwatched(self) -> None:
        self.timeouts.touch("a")
        self.assertFalse(self.timeouts.watching("a"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_oneTimer(self) -> None:
        """
        However many keys are watched, with whatever timeouts, one call is pending, and each
        key expires at its deadline.
        """
        deadlines = {}
        for number in range(30):
            key, timeout = f"k{number}", 10 + number % 3
            self.timeouts.watch(key, timeout)
            deadlines[key] = self.clock.seconds() + timeout
            self.clock.advance(1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        while deadlines:
            self.clock.advance(1)
            due = sorted((d, k) for k, d in deadlines.items() if d <= self.clock.seconds())
            self.assertEqual(self.expired, [key for _, key in due])
            self.expired.clear()
            for _, key in due:
                del deadlines[key]
            self.assertEqual(len(self.clock.getDelayedCalls()), 1 if deadlines else 0)

    def test_shorterTimeoutLater(self) -> None:
        """
        A key watched with a shorter timeout than those already watched expires first.
        """
        self.timeouts.watch("long", 600)
        self.clock.advance(1)
        self.timeouts.watch("short", 30)
        self.clock.advance(30)
        self.assertEqual(self.expired, ["short"])
        self.clock.advance(569)
        self.assertEqual(self.expired, ["short", "long"])

    def test_newTimeout(self) -> None:
        """
        Watching a watched key again restarts it with the new timeout, longer or shorter.
        """
        self.timeouts.watch("a", 180)
        self.clock.advance(100)
        self.timeouts.watch("a", 600)
        self.clock.advance(599)
        self.assertEqual(self.expired, [])
        self.timeouts.watch("a", 5)
        self.clock.advance(5)
        self.assertEqual(self.expired, ["a"])

    def test_forget(self) -> None:
        """
        A forgotten key never expires; with nothing left to watch, no call stays pending.
        """
        self.timeouts.watch("a", 10)
        self.timeouts.watch("b", 20)
        self.timeouts.forget("a")
        self.assertTrue(self.timeouts.watching("b"))
        self.clock.advance(10)
        self.assertEqual(self.expired, [])
        self.timeouts.forget("b")
        self.timeouts.forget("b")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_expiryMayForgetOthers(self) -> None:
        """
        What an expired key's callback does to the other keys is honoured.
        """

        def expired(key: str) -> None:
            self.expired.append(key)
            if key == "a":
                self.timeouts.forget("b")
                self.timeouts.watch("c", 1)

        timeouts: IdleTimeouts[str] = IdleTimeouts(self.clock, expired)
        self.timeouts = timeouts
        timeouts.watch("a", 10)
        timeouts.watch("b", 15)
        self.clock.advance(10)
        self.assertEqual(self.expired, ["a"])
        self.clock.advance(1)
        self.assertEqual(self.expired, ["a", "c"])
        self.clock.advance(100)
        self.assertEqual(self.expired, ["a", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
