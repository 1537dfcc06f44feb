"""
The one log event each session ends with (issue 6): who, from where, how, what it did, how it
ended, and never a secret.
"""

from __future__ import annotations

import base64

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from popd.memory import MemoryMailbox, MemoryRealm
from popd.protocol import POP3ServerFactory
from tests.test_protocol import Session

PASSWORD = b"tr0ub4dor&3"


class SessionLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=PASSWORD)
        mailbox = MemoryMailbox([b"Subject: a\n\none\n", b"Subject: b\n\ntwo\n"])
        self.factory = POP3ServerFactory(
            Portal(MemoryRealm({b"bob": mailbox}), [checker]), reactor=self.clock
        )

    def sessionEvents(self, run: object) -> list[LogEvent]:
        with capturedLogs() as events:
            run()  # type: ignore[operator]
        return [event for event in events if "session end" in event.get("log_format", "")]

    def test_fields(self) -> None:
        """
        The event names the user, the peer, TLS, the mechanism, the outcome, the counts of
        RETR, TOP and DELE, the octets sent and the duration.
        """

        def run() -> None:
            session = Session(self.factory)
            session.login(password=PASSWORD)
            session.command(b"RETR 1")
            session.command(b"TOP 2 0")
            session.command(b"DELE 1")
            self.clock.advance(3)
            session.command(b"QUIT")
            session.drop()

        (event,) = self.sessionEvents(run)
        self.assertEqual(
            {
                key: event[key]
                for key in ("user", "tls", "mechanism", "outcome", "retr", "top", "dele")
            },
            {
                "user": "bob",
                "tls": False,
                "mechanism": "USER",
                "outcome": "committed",
                "retr": 1,
                "top": 1,
                "dele": 1,
            },
        )
        self.assertIn("127.0.0.1", event["peer"])
        self.assertEqual(event["octets"], len(b"Subject: a\r\n\r\none\r\nSubject: b\r\n\r\n"))
        self.assertEqual(event["duration"], 3)

    def test_noSecret(self) -> None:
        """
        Neither the password nor its base64 form appears in any event of a session, whatever
        the mechanism, whether the login succeeds or fails.
        """

        def run() -> None:
            for password in (PASSWORD, b"wrong " + PASSWORD):
                session = Session(self.factory)
                session.login(password=password)
                session.command(b"AUTH PLAIN " + base64.b64encode(b"\0bob\0" + password))
                self.clock.advance(60)
                session.drop()

        with capturedLogs() as events:
            run()
        text = "\n".join(formatEvent(event) + repr(event) for event in events)
        self.assertTrue(events)
        self.assertNotIn(PASSWORD.decode(), text)
        self.assertNotIn(base64.b64encode(PASSWORD).decode(), text)

    def test_timeout(self) -> None:
        """
        A session that times out says so.
        """

        def run() -> None:
            session = Session(self.factory)
            session.login(password=PASSWORD)
            self.clock.advance(601)
            session.drop()

        (event,) = self.sessionEvents(run)
        self.assertEqual(event["outcome"], "timeout")
