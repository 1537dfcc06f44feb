"""
Tests for L{popd.twistedmail}: realms written for C{twisted.mail.pop3} work unchanged, and
get popd's guarantees (exact sizes, valid UIDLs, one session at a time, deletion at UPDATE).
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.mail import maildir
from twisted.mail.pop3 import IMailbox
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer

from popd.protocol import POP3ServerFactory, Response
from tests.test_protocol import Session, multiline

MESSAGES = [b"Subject: one\n\nfirst\n.dot\n", b"Subject: two\n\nsecond\n"]


@implementer(IRealm)
class TwistedRealm:
    """
    A realm as written for Twisted's own POP3 server: it only knows L{IMailbox}.
    """

    def __init__(self, mailbox: Any) -> None:
        self.mailbox = mailbox
        self.logouts = 0

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: type[Interface]) -> Any:
        if IMailbox not in interfaces:
            raise NotImplementedError()

        def logout() -> None:
            self.logouts += 1

        return (IMailbox, self.mailbox, logout)


class RecordingMailbox(maildir.StringListMailbox):
    """
    Twisted's in-memory mailbox, recording what popd asks of it, answering with Deferreds as
    asynchronous mailboxes do, and with a UIDL that RFC 1939 does not allow.
    """

    failSync = False

    def __init__(self, messages: list[bytes]) -> None:
        super().__init__(messages)
        self.calls: list[tuple[str, int | None]] = []

    def listMessages(self, i: int | None = None) -> Any:
        return succeed(super().listMessages(i))

    def getUidl(self, i: int) -> bytes:
        return b"uid with spaces %d" % (i,)

    def deleteMessage(self, i: int) -> None:
        self.calls.append(("deleteMessage", i))
        super().deleteMessage(i)

    def sync(self) -> None:
        self.calls.append(("sync", None))
        if self.failSync:
            raise OSError("disk gone")


class AdaptedMailboxTests(SynchronousTestCase):
    """
    An L{IMailbox} avatar served through L{popd.twistedmail.MailboxMaildrop}.
    """

    def setUp(self) -> None:
        self.mailbox = RecordingMailbox(list(MESSAGES))
        self.realm = TwistedRealm(self.mailbox)
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")
        self.factory = POP3ServerFactory(Portal(self.realm, [checker]), reactor=Clock())

    def loggedIn(self) -> Session:
        session = Session(self.factory)
        self.assertTrue(session.login().startswith(b"+OK"))
        return session

    def test_sizes(self) -> None:
        """
        R19: sizes are counted as transmitted, with CRLF, although the mailbox stores LF.
        """
        session = self.loggedIn()
        self.assertEqual(multiline(session.command(b"LIST")), [b"1 29", b"2 24"])
        response = session.command(b"RETR 1")
        self.assertTrue(response.startswith(b"+OK 29 octets\r\n"))
        self.assertIn(b"\r\n..dot\r\n", response)

    def test_uidls(self) -> None:
        """
        R22: a UIDL the mailbox gives that RFC 1939 does not allow is replaced by a digest of
        it: valid, unique and the same in every session.
        """
        session = self.loggedIn()
        first = multiline(session.command(b"UIDL"))
        session.drop()
        second = multiline(self.loggedIn().command(b"UIDL"))
        self.assertEqual(first, second)
        uidls = [line.split(b" ")[1] for line in first]
        self.assertEqual(len(set(uidls)), 2)
        for uidl in uidls:
            self.assertTrue(all(0x21 <= octet <= 0x7E for octet in uidl))

    def test_deleteAtUpdateOnly(self) -> None:
        """
        R20, R23: C{DELE} only marks; at C{QUIT} popd calls C{deleteMessage} for each mark and
        then C{sync}, once.
        """
        session = self.loggedIn()
        session.command(b"DELE 2")
        self.assertEqual(self.mailbox.calls, [])
        self.assertTrue(session.command(b"QUIT").startswith(b"+OK"))
        self.assertEqual(self.mailbox.calls, [("deleteMessage", 1), ("sync", None)])

    def test_dropDeletesNothing(self) -> None:
        """
        R24: a dropped session never touches the mailbox, and logs out once.
        """
        session = self.loggedIn()
        session.command(b"DELE 1")
        session.drop()
        self.assertEqual(self.mailbox.calls, [])
        self.assertEqual(self.realm.logouts, 1)

    def test_syncFailure(self) -> None:
        """
        R23, R30: when C{sync} fails, C{QUIT} reports the deletions as not done.
        """
        self.mailbox.failSync = True
        session = self.loggedIn()
        session.command(b"DELE 1")
        self.assertEqual(session.command(b"QUIT"), Response.NOT_REMOVED + b"\r\n")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_oneSessionAtATime(self) -> None:
        """
        R10: L{IMailbox} has no lock, so popd keeps one: a second session gets C{[IN-USE]}
        until the first ends.
        """
        first = self.loggedIn()
        second = Session(self.factory)
        self.assertEqual(second.login(), Response.IN_USE + b"\r\n")
        first.drop()
        self.assertTrue(second.login().startswith(b"+OK"))


class TwistedMaildirTests(SynchronousTestCase):
    """
    Twisted's own Maildir mailbox, on a real Maildir, served by popd.
    """

    def test_retrieveAndFailedDelete(self) -> None:
        """
        Messages are retrieved as stored, with CRLF.  Twisted 26.10's
        C{MaildirMailbox.deleteMessage} mixes C{bytes} and C{str} paths and raises, so C{QUIT}
        reports the deletion as not done, with C{[SYS/TEMP]}, and the message stays.
        """
        path = FilePath(self.mktemp())
        maildir.initializeMaildir(path.path)
        for number, message in enumerate(MESSAGES):
            name = "%d.M%dP1.test" % (1700000000 + number, number)
            path.child("new").child(name).setContent(message)
        realm = TwistedRealm(maildir.MaildirMailbox(path.path.encode()))
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")
        session = Session(POP3ServerFactory(Portal(realm, [checker]), reactor=Clock()))
        self.assertTrue(session.login().startswith(b"+OK"))
        retrieved = {
            b"".join(line + b"\r\n" for line in multiline(session.command(b"RETR %d" % (n,))))
            for n in (1, 2)
        }
        self.assertEqual(retrieved, {m.replace(b"\n", b"\r\n") for m in MESSAGES})
        session.command(b"DELE 1")
        self.assertEqual(session.command(b"QUIT"), Response.NOT_REMOVED + b"\r\n")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertEqual(len(path.child("new").children() + path.child("cur").children()), 2)
