"""
Tests for L{popd.maildir}: real Maildirs on disk, faults injected at the OS-call boundary.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from hashlib import sha256
from typing import Any, BinaryIO

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.cred.checkers import ANONYMOUS, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface
from zope.interface.verify import verifyObject

from popd import _index, _sizing, maildir
from popd._filememo import FileMemo
from popd.errors import MaildropInUse, MessageGone, TemporaryFailure
from popd.interfaces import IMaildrop, IMessage, MessageInfo
from popd.maildir import Maildir, MaildirRealm, expandTemplate, openMaildir, validUsername
from tests.support import canonical

# The directory that holds the popd package, for child processes.
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(maildir.__file__)))

# Takes the lock of the Maildir in argv[1] and reports; holds it until stdin closes.
_LOCKER = """
import sys
from popd.errors import MaildropInUse
from popd.maildir import openMaildir
try:
    openMaildir(sys.argv[1])
except MaildropInUse:
    print("in-use", flush=True)
else:
    print("locked", flush=True)
    sys.stdin.read()
"""


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class _MaildirTestCase(SynchronousTestCase):
    """
    Helpers to build Maildirs and open them.  Each test starts with nothing remembered of the
    files popd keeps (see L{popd._filememo}).
    """

    def setUp(self) -> None:
        self.patch(maildir, "_INDEX_DIGESTS", FileMemo(maildir._INDEX_DIGESTS._capacity))
        self.patch(maildir, "_LISTINGS", FileMemo(maildir._LISTINGS._capacity))

    @contextmanager
    def rewriting(self, path: str) -> Iterator[BinaryIO]:
        """
        Open the file at C{path} to be written over in place, as another program would; then
        forget what this process remembers of the files popd keeps, as a new process would: a
        change in place within one tick of a coarse file system clock would not be seen.
        """
        with open(path, "wb") as f:
            yield f
        maildir._INDEX_DIGESTS.clear()
        maildir._LISTINGS.clear()

    def makeMaildir(self) -> str:
        """
        @return: the absolute path of a new, empty Maildir.
        """
        path: str = os.path.abspath(self.mktemp())
        for subdirectory in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(path, subdirectory))
        return path

    def deliver(self, path: str, subdirectory: str, name: str | bytes, content: bytes) -> str:
        """
        Write a message file as an MDA would.

        @return: its path.
        """
        if isinstance(name, bytes):
            target = os.fsdecode(os.path.join(os.fsencode(path), subdirectory.encode(), name))
        else:
            target = os.path.join(path, subdirectory, name)
        with open(target, "wb") as f:
            f.write(content)
        return target

    def openDrop(self, path: str) -> Maildir:
        """
        Open and lock a Maildir for the rest of the test.
        """
        drop = openMaildir(path)
        self.addCleanup(drop.close)
        return drop

    def listing(self, drop: IMaildrop) -> Sequence[MessageInfo]:
        return list(self.successResultOf(drop.listing()))

    def uidls(self, path: str) -> list[bytes]:
        """
        @return: the UIDLs of a new session on C{path}, which is then closed.
        """
        drop = openMaildir(path)
        try:
            return [info.uidl for info in self.listing(drop)]
        finally:
            drop.close()

    def readAll(self, message: IMessage, size: int = 4) -> bytes:
        chunks: list[bytes] = []
        while True:
            chunk = self.successResultOf(message.read(size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def forbidMeasuring(self) -> None:
        """
        Make any reading of a message body to size it fail the test.
        """

        def refuse(path: str, directoryFD: int | None = None) -> int:
            self.fail("a message was opened to size it")

        self.patch(_sizing, "openMessage", refuse)

    def countMeasuring(self) -> list[int]:
        """
        @return: a list that grows by one item each time a message body is read to size it.
        """
        calls: list[int] = []
        real = _sizing.openMessage

        def counting(path: str, directoryFD: int | None = None) -> int:
            calls.append(1)
            return real(path, directoryFD)

        self.patch(_sizing, "openMessage", counting)
        return calls

    def failOn(self, name: str, target: Callable[[str], bool], code: int) -> None:
        """
        Make C{os.<name>} fail with C{code} for the paths that C{target} accepts.
        """
        real = getattr(os, name)

        def faulty(path: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(path, str) and target(path):
                raise _oserror(code)
            return real(path, *args, **kwargs)

        self.patch(os, name, faulty)


class TemplateTests(SynchronousTestCase):
    """
    Tests for L{expandTemplate} and the template given to L{MaildirRealm}.
    """

    def test_placeholders(self) -> None:
        """
        C{%u} is the user name, C{%n} its local part, C{%d} its domain, C{%%} a percent sign.
        """
        self.assertEqual(
            expandTemplate("/m/%d/%n/%u/%%", "bob@example.com"),
            "/m/example.com/bob/bob@example.com/%",
        )

    def test_noDomain(self) -> None:
        """
        Without C{@}, C{%n} is the whole user name and C{%d} is empty.
        """
        self.assertEqual(expandTemplate("/m/%n/[%d]", "bob"), "/m/bob/[]")

    def test_lastAt(self) -> None:
        """
        The domain is what follows the last C{@}.
        """
        self.assertEqual(expandTemplate("%n|%d", "a@b@c"), "a@b|c")

    def test_singlePass(self) -> None:
        """
        A C{%} in the user name is copied, not interpreted, and C{%%u} is a literal C{%u}.
        """
        self.assertEqual(expandTemplate("/m/%u", "%u%d%%"), "/m/%u%d%%")
        self.assertEqual(expandTemplate("/m/%%u/%u", "bob"), "/m/%u/bob")

    def test_unknownPlaceholder(self) -> None:
        """
        Any other placeholder, or a C{%} ending the template, is a L{ValueError}, raised by the
        realm's constructor so that a bad configuration is reported before listening.
        """
        for template in ["/m/%x", "/m/%U", "/m/%", "/m/%%%", "/m/%u/%/"]:
            self.assertRaises(ValueError, MaildirRealm, template)
            self.assertRaises(ValueError, expandTemplate, template, "bob")


class ValidUsernameTests(SynchronousTestCase):
    """
    Tests for L{validUsername}.
    """

    def test_valid(self) -> None:
        """
        Ordinary names, with or without a domain, non-ASCII letters and a percent sign that
        decodes to nothing dangerous are valid, up to 255 octets.
        """
        for name in [
            "bob",
            "bob@example.com",
            "b.o-b_1+tag@mail.example.com",
            "jos\u00e9@exampl\u00e9.fr",
            "user%example.org",
            "%41lice",
            "a..b",
            "x" * 255,
            "\u00e9" * 127,
        ]:
            self.assertTrue(validUsername(name), name)

    def test_invalid(self) -> None:
        """
        Names that are empty, too long, contain separators, control, format or space
        characters, more than one C{@}, or a local part or domain that is empty or starts with
        C{.} are refused.
        """
        for name in [
            "",
            ".",
            "..",
            "../x",
            "x/..",
            "a/b",
            "/etc",
            "a\\b",
            "..\\x",
            "a\x00b",
            "a\nb",
            "a\rb",
            "a\tb",
            "a b",
            "a\x7fb",
            "a\x85b",
            "a\x9bb",
            "a\u00a0b",
            "a\u2028b",
            "a\u202eb",
            "a\u200bb",
            "a\udcffb",
            "x" * 256,
            "\u00e9" * 128,
            "@",
            "a@",
            "@b",
            "a@..",
            "a@.",
            "..@x",
            ".@x",
            ".hidden",
            "a@.b",
            "a@b@c",
        ]:
            self.assertFalse(validUsername(name), repr(name))


class RealmTests(_MaildirTestCase):
    """
    Tests for L{MaildirRealm}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.top = os.path.abspath(self.mktemp())
        self.root = os.path.join(self.top, "mail")
        os.makedirs(self.root)
        self.realm = MaildirRealm(os.path.join(self.root, "%u", "Maildir"))

    def login(self, avatarId: bytes) -> tuple[Any, Any, Callable[[], None]]:
        result: tuple[Any, Any, Callable[[], None]] = self.successResultOf(
            self.realm.requestAvatar(avatarId, None, IMaildrop)
        )
        self.addCleanup(result[2])
        return result

    def test_interface(self) -> None:
        """
        L{MaildirRealm} provides L{IRealm} and its avatars provide L{IMaildrop}.
        """
        self.assertTrue(verifyObject(IRealm, self.realm))
        interface, avatar, logout = self.login(b"bob")
        self.assertIs(interface, IMaildrop)
        self.assertTrue(verifyObject(IMaildrop, avatar))

    def test_portal(self) -> None:
        """
        Through a L{Portal}, a user who authenticates gets an L{IMaildrop}.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")
        portal = Portal(self.realm, [checker])
        interface, avatar, logout = self.successResultOf(
            portal.login(UsernamePassword(b"bob", b"secret"), None, IMaildrop)
        )
        self.addCleanup(logout)
        self.assertEqual(self.listing(IMaildrop(avatar)), [])

    def test_otherInterface(self) -> None:
        """
        Asking for anything but L{IMaildrop} fails with L{NotImplementedError}, and nothing is
        created.
        """

        class IOther(Interface):
            pass

        self.failureResultOf(self.realm.requestAvatar(b"bob", None, IOther), NotImplementedError)
        self.assertEqual(os.listdir(self.root), [])

    def test_createsMaildir(self) -> None:
        """
        The Maildir of a valid user that does not exist is created with C{new}, C{cur} and
        C{tmp} private to their owner, as Dovecot does, and is empty.
        """
        interface, avatar, logout = self.login(b"bob")
        path = os.path.join(self.root, "bob", "Maildir")
        for subdirectory in ("new", "cur", "tmp"):
            mode = os.stat(os.path.join(path, subdirectory)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)
        self.assertEqual(self.listing(avatar), [])

    def test_existingMaildir(self) -> None:
        """
        An existing Maildir is used as it is.
        """
        path = os.path.join(self.root, "bob", "Maildir")
        for subdirectory in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(path, subdirectory))
        self.deliver(path, "new", "1700000000.a", b"hello\n")
        interface, avatar, logout = self.login(b"bob")
        self.assertEqual(self.listing(avatar), [MessageInfo(7, b"1700000000.a")])

    def test_domainTemplate(self) -> None:
        """
        C{%d} and C{%n} place a user's Maildir under its domain.
        """
        realm = MaildirRealm(os.path.join(self.root, "%d", "%n"))
        result = self.successResultOf(realm.requestAvatar(b"bob@example.com", None, IMaildrop))
        self.addCleanup(result[2])
        self.assertTrue(os.path.isdir(os.path.join(self.root, "example.com", "bob", "new")))

    def test_partialPrefix(self) -> None:
        """
        A template whose first placeholder is inside a file name (C{user-%u}) works.
        """
        realm = MaildirRealm(os.path.join(self.root, "user-%u"))
        result = self.successResultOf(realm.requestAvatar(b"bob", None, IMaildrop))
        self.addCleanup(result[2])
        self.assertTrue(os.path.isdir(os.path.join(self.root, "user-bob", "cur")))

    def test_encodedTraversal(self) -> None:
        """
        A name that another program could decode into a path, by percent-decoding (C{%2e%2e},
        C{%2fetc}) or Unicode normalisation (fullwidth dots and slashes), is refused and
        creates nothing.
        """
        for name in ["%2e%2e", "%2E%2E%2Fevil", "%2fetc", "%00bob", "\uff0e\uff0e", "a\uff0fb"]:
            self.assertFalse(validUsername(name), name)
            self.failureResultOf(
                self.realm.requestAvatar(name.encode("utf-8"), None, IMaildrop), UnauthorizedLogin
            )
        self.assertEqual(os.listdir(self.top), ["mail"])

    def test_invalidNames(self) -> None:
        """
        A user name that is not valid UTF-8 (including overlong encodings of C{.}), or that
        L{validUsername} refuses, fails with L{UnauthorizedLogin} before any path is built:
        nothing is created, inside the mail root or outside it.
        """
        for avatarId in [
            b"..",
            b"../x",
            b"../../etc",
            b"a/b",
            b"a\\b",
            b"a\x00b",
            b"a\nb",
            b"a\rb",
            b"\xc2\x85",
            b"\xe2\x80\xae",
            b"x" * 256,
            b"@",
            b"a@..",
            b"..@x",
            b"\xff",
            b"\xc0\xae\xc0\xae",
            b"\xed\xb3\xbf",
        ]:
            self.failureResultOf(
                self.realm.requestAvatar(avatarId, None, IMaildrop), UnauthorizedLogin
            )
        self.assertEqual(os.listdir(self.root), [])
        self.assertEqual(os.listdir(self.top), ["mail"])

    def test_anonymous(self) -> None:
        """
        The anonymous avatar has no Maildir.
        """
        self.failureResultOf(
            self.realm.requestAvatar(ANONYMOUS, None, IMaildrop), UnauthorizedLogin
        )

    def test_confinement(self) -> None:
        """
        Should a name that escapes the mail root get past L{validUsername}, the expanded path
        is still refused because, normalised, it leaves the template's fixed prefix.
        """
        self.patch(maildir, "validUsername", lambda name: True)
        for avatarId in [b"..", b"../x", b"../../tmp/x"]:
            self.failureResultOf(
                self.realm.requestAvatar(avatarId, None, IMaildrop), UnauthorizedLogin
            )
        partial = MaildirRealm(os.path.join(self.root, "user-%u"))
        self.failureResultOf(partial.requestAvatar(b"/../x", None, IMaildrop), UnauthorizedLogin)
        self.assertEqual(os.listdir(self.top), ["mail"])
        self.assertEqual(os.listdir(self.root), [])

    def test_inUse(self) -> None:
        """
        A second login while the first session holds the lock fails with L{MaildropInUse}
        (R10); after C{logout} it succeeds.
        """
        interface, avatar, logout = self.successResultOf(
            self.realm.requestAvatar(b"bob", None, IMaildrop)
        )
        self.failureResultOf(self.realm.requestAvatar(b"bob", None, IMaildrop), MaildropInUse)
        logout()
        self.login(b"bob")

    def test_createFailure(self) -> None:
        """
        A Maildir that cannot be created fails the login with L{TemporaryFailure}; the cause is
        logged, not passed on.
        """
        self.failOn("makedirs", lambda path: True, errno.EIO)
        failure = self.failureResultOf(
            self.realm.requestAvatar(b"bob", None, IMaildrop), TemporaryFailure
        )
        self.assertEqual(str(failure.value), "")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class ListingTests(_MaildirTestCase):
    """
    Tests for L{Maildir.listing}: which messages, in which order, with which sizes and UIDLs.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.makeMaildir()

    def test_interface(self) -> None:
        """
        L{openMaildir} returns an L{IMaildrop}.
        """
        self.assertTrue(verifyObject(IMaildrop, self.openDrop(self.path)))

    def test_order(self) -> None:
        """
        Messages from C{new/} and C{cur/} are listed by delivery time, then base name; the time
        is the number that starts the name, or else the file's modification time.  Unicode
        digits are not a time.
        """
        self.deliver(self.path, "new", "1700000002.a", b"x\n")
        self.deliver(self.path, "cur", "1700000001.b:2,S", b"x\n")
        self.deliver(self.path, "new", "1700000001.a", b"x\n")
        os.utime(self.deliver(self.path, "cur", "msg:2,", b"x\n"), (0, 1700000001.5))
        self.deliver(self.path, "new", "9.z", b"x\n")
        os.utime(self.deliver(self.path, "new", "\u0661\u0662.x", b"x\n"), (0, 1700000003))
        uidls = [info.uidl for info in self.listing(self.openDrop(self.path))]
        self.assertEqual(
            uidls,
            [
                b"9.z",
                b"1700000001.a",
                b"1700000001.b",
                b"msg",
                b"1700000002.a",
                sha256("\u0661\u0662.x".encode()).hexdigest()[:40].encode(),
            ],
        )

    def test_lineFeedInName(self) -> None:
        """
        A name with a line feed in it is one name: a time after the line feed does not start
        it.
        """
        self.deliver(self.path, "new", "1700000002.b", b"x\n")
        os.utime(self.deliver(self.path, "new", "x\n1700000001.a", b"x\n"), (0, 1700000003))
        uidls = [info.uidl for info in self.listing(self.openDrop(self.path))]
        self.assertEqual(uidls[0], b"1700000002.b")
        self.assertEqual(len(uidls), 2)

    def test_notMessages(self) -> None:
        """
        Files in C{tmp/}, dot-files, directories and symbolic links are not messages.
        """
        target = self.deliver(self.path, "new", "1.real", b"x\n")
        self.deliver(self.path, "tmp", "2.tmp", b"x\n")
        self.deliver(self.path, "new", ".3.hidden", b"x\n")
        self.deliver(self.path, "cur", ".4.hidden:2,", b"x\n")
        os.mkdir(os.path.join(self.path, "cur", "5.dir"))
        os.symlink(target, os.path.join(self.path, "cur", "6.link"))
        os.symlink("/etc/passwd", os.path.join(self.path, "new", "7.link"))
        self.assertEqual(self.listing(self.openDrop(self.path)), [MessageInfo(3, b"1.real")])

    def test_empty(self) -> None:
        """
        An empty Maildir lists nothing.
        """
        self.assertEqual(self.listing(self.openDrop(self.path)), [])

    def test_sizes(self) -> None:
        """
        Sizes count octets as transmitted, CRLF line ends included (R19): LF, CRLF and mixed
        line ends all give the same size, and a missing final line end counts as a CRLF.
        """
        self.deliver(self.path, "new", "1.lf", b"a\nb\n")
        self.deliver(self.path, "new", "2.crlf", b"a\r\nb\r\n")
        self.deliver(self.path, "new", "3.mixed", b"a\r\nb\n")
        self.deliver(self.path, "new", "4.unterminated", b"a\nb")
        self.deliver(self.path, "new", "5.blank", b"\n\n\r\n")
        sizes = [info.size for info in self.listing(self.openDrop(self.path))]
        self.assertEqual(sizes, [6, 6, 6, 6, 6])

    def test_sizesInTwoProcesses(self) -> None:
        """
        When many messages are sized at once, a child process sizes part of them, to the same
        sizes (R19): in a first listing (no index), from as soon as C{new/} is read; in a later
        one that finds many new messages, half of them.
        """
        self.patch(maildir, "_FORK_MINIMUM", 2)
        self.patch(os, "cpu_count", lambda: 2)
        contents = [
            b"a\nb\n",
            b"a\r\nb\r\n",
            b"a\r\nb\n",
            b"a\nb",
            b"\n\n\r\n",
            b"x" * 65535 + b"\r\ny\n",
        ]
        for number, content in enumerate(contents):
            self.deliver(self.path, "new", f"{number}.m", content)
        record = os.path.abspath(self.mktemp())
        real = _sizing.openMessage

        def measure(path: str, directoryFD: int | None = None) -> int:
            with open(record, "a") as f:
                f.write(f"{os.getpid()}\n")
            return real(path, directoryFD)

        self.patch(_sizing, "openMessage", measure)
        expected = [6, 6, 6, 6, 6, 65535 + 2 + 3]
        drop = openMaildir(self.path)
        sizes = [info.size for info in self.listing(drop)]
        drop.close()
        self.assertEqual(sizes, expected)
        with open(record) as f:
            byProcess = Counter(f.read().split())
        # The child, started early, takes the larger share.
        self.assertEqual(len(byProcess), 2)
        self.assertLess(byProcess[str(os.getpid())], len(contents) / 2)
        os.unlink(record)
        for number, content in enumerate(contents, len(contents)):
            self.deliver(self.path, "new", f"{number}.m", content)
        sizes = [info.size for info in self.listing(self.openDrop(self.path))]
        self.assertEqual(sizes, expected * 2)
        with open(record) as f:
            measured = f.read().split()
        self.assertEqual((len(measured), len(set(measured))), (len(contents), 2))

    def test_removedWhileSizedByChild(self) -> None:
        """
        A message that another agent removes while a child process sizes it is not listed.
        """
        self.patch(maildir, "_FORK_MINIMUM", 2)
        self.patch(os, "cpu_count", lambda: 2)
        for number in range(4):
            self.deliver(self.path, "new", f"{number}.m", b"m\n")
        real = _sizing.openMessage
        record = os.path.abspath(self.mktemp())
        parent = os.getpid()

        def measure(path: str, directoryFD: int | None = None) -> int:
            if os.getpid() != parent and not os.path.exists(record):
                with open(record, "w") as f:
                    f.write(path)
                os.unlink(path, dir_fd=directoryFD)
            return real(path, directoryFD)

        self.patch(_sizing, "openMessage", measure)
        uidls = [info.uidl for info in self.listing(self.openDrop(self.path))]
        with open(record) as f:
            removed = f.read().encode()
        self.assertEqual(uidls, [b"%d.m" % (n,) for n in range(4) if b"%d.m" % (n,) != removed])
        self.assertEqual(len(uidls), 3)

    def test_sizedUnderDescriptorLimit(self) -> None:
        """
        With fewer descriptors left to the process than a batch of messages to size opens, the
        listing still sizes every message (R19), and leaves no descriptor open.
        """
        self.patch(_sizing, "_BATCH", 64)
        contents = [b"m\n" * n for n in range(100)]
        for number, content in enumerate(contents):
            self.deliver(self.path, "new", f"{number:03d}.m", content)
        drop = self.openDrop(self.path)
        before = len(os.listdir("/proc/self/fd"))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # The directory, the scan's, and 16 messages at most.
        resource.setrlimit(resource.RLIMIT_NOFILE, (before + 18, hard))
        try:
            sizes = [info.size for info in self.listing(drop)]
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        self.assertEqual(sizes, [len(canonical(content)) for content in contents])
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)

    def test_sizeAcrossChunks(self) -> None:
        """
        A CRLF split between two reads of a large message is counted once (R19).
        """
        content = b"x" * 65535 + b"\r\n" + b"y\n" * 100000
        self.deliver(self.path, "new", "1.big", content)
        size = self.listing(self.openDrop(self.path))[0].size
        self.assertEqual(size, len(content) + 100000)

    def test_accessTimeKept(self) -> None:
        """
        Reading a message to size it leaves its access time as it was; where the process may
        not do that (a file it does not own), it reads the message all the same.
        """
        path = self.deliver(self.path, "new", "1.a", b"a\n")
        os.utime(path, (1000, 2000))
        self.patch(_sizing, "_noAccessTime", [os.O_NOATIME])
        drop = openMaildir(self.path)
        self.assertEqual(self.listing(drop), [MessageInfo(3, b"1.a")])
        drop.close()
        self.assertEqual(os.stat(path).st_atime, 1000)
        realOpen = os.open

        def notOwner(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & os.O_NOATIME:
                raise _oserror(errno.EPERM)
            return realOpen(path, flags, *args, **kwargs)

        self.patch(os, "open", notOwner)
        os.unlink(os.path.join(self.path, "popd-index"))
        path = self.deliver(self.path, "new", "2.b", b"bb\n")
        self.assertEqual(
            self.listing(self.openDrop(self.path)), [MessageInfo(3, b"1.a"), MessageInfo(4, b"2.b")]
        )
        self.assertEqual(_sizing._noAccessTime, [0])

    def test_dovecotSize(self) -> None:
        """
        Dovecot's C{,W=<size>} in the base name is the size, used without reading the message
        nor writing an index, even after flags were added to the name.
        """
        self.forbidMeasuring()
        self.deliver(self.path, "new", "1700000000.M1P2.host,S=10,W=12", b"not 12 octets")
        self.deliver(self.path, "cur", "1700000001.M3P4.host,W=99,S=98:2,S", b"")
        listing = self.listing(self.openDrop(self.path))
        self.assertEqual([info.size for info in listing], [12, 99])
        self.assertFalse(os.path.exists(os.path.join(self.path, "popd-index")))

    def test_notDovecotSize(self) -> None:
        """
        C{W=} that is not a whole comma-separated field, or that follows the C{:}, is not a
        size.
        """
        self.deliver(self.path, "new", "1.a,W=12x", b"a\n")
        self.deliver(self.path, "cur", "2.b:2,W=12", b"a\n")
        self.deliver(self.path, "cur", "3.cW=12", b"a\n")
        sizes = [info.size for info in self.listing(self.openDrop(self.path))]
        self.assertEqual(sizes, [3, 3, 3])

    def test_noStat(self) -> None:
        """
        Listing messages with timestamped C{,W=} names makes no per-file system call.
        """
        for n in range(100):
            self.deliver(self.path, "new", f"{1700000000 + n}.M{n}.host,W=5", b"a\n")
        drop = self.openDrop(self.path)
        self.forbidMeasuring()
        for name in ["stat", "lstat", "open"]:
            self.failOn(name, lambda path: "/new/" in path, errno.EIO)
        self.assertEqual(len(self.listing(drop)), 100)

    def test_snapshot(self) -> None:
        """
        The listing is taken once: mail delivered during the session is not part of it (R16).
        """
        self.deliver(self.path, "new", "1.a", b"a\n")
        drop = self.openDrop(self.path)
        first = self.listing(drop)
        self.deliver(self.path, "new", "2.b", b"a\n")
        self.assertEqual(self.listing(drop), first)
        self.assertEqual(len(first), 1)

    def test_movedDuringListing(self) -> None:
        """
        A message that another agent moves from C{new/} to C{cur/} between the scans of the two
        directories is listed, once.
        """
        self.deliver(self.path, "new", "1.a", b"a\n")
        realScandir = os.scandir
        scanned: list[str] = []

        def scandir(path: str) -> Any:
            scanned.append(path)
            if len(scanned) == 2:
                os.rename(
                    os.path.join(self.path, "new", "1.a"),
                    os.path.join(self.path, "cur", "1.a:2,S"),
                )
            return realScandir(path)

        self.patch(os, "scandir", scandir)
        self.assertEqual(self.listing(self.openDrop(self.path)), [MessageInfo(3, b"1.a")])

    def test_renamedBeforeSizing(self) -> None:
        """
        A message renamed by another agent after the directory scan and before it is sized is
        found again by base name.
        """
        self.deliver(self.path, "new", "1.a", b"a\n")
        real = _sizing.openMessage
        renamed: list[str] = []

        def measure(path: str, directoryFD: int | None = None) -> int:
            if not renamed:
                renamed.append(path)
                target = os.path.join(self.path, "cur", "1.a:2,S")
                os.rename(path, target, src_dir_fd=directoryFD)
            return real(path, directoryFD)

        self.patch(_sizing, "openMessage", measure)
        drop = self.openDrop(self.path)
        self.assertEqual(self.listing(drop), [MessageInfo(3, b"1.a")])
        self.assertEqual(self.readAll(self.successResultOf(drop.open(0))), b"a\n")

    def test_removedDuringListing(self) -> None:
        """
        A message removed by another agent while the listing is taken is not listed.
        """
        self.deliver(self.path, "new", "1.a", b"a\n")
        self.deliver(self.path, "new", "2.b", b"bb\n")
        real = _sizing.openMessage

        def measure(path: str, directoryFD: int | None = None) -> int:
            if path.endswith("1.a"):
                os.unlink(path, dir_fd=directoryFD)
            return real(path, directoryFD)

        self.patch(_sizing, "openMessage", measure)
        self.assertEqual(self.listing(self.openDrop(self.path)), [MessageInfo(4, b"2.b")])

    def test_childStoppedWhenListingFails(self) -> None:
        """
        When a first listing fails after a child process began sizing the messages of C{new/},
        the child is stopped and reaped, and no descriptor is left open.
        """
        self.patch(maildir, "_FORK_MINIMUM", 2)
        self.patch(os, "cpu_count", lambda: 2)
        for number in range(4):
            self.deliver(self.path, "new", f"{number}.m", b"m\n")
        cancelled: list[object] = []
        real = maildir.ForkedMap.cancel

        def cancel(forked: maildir.ForkedMap[str]) -> None:
            cancelled.append(forked)
            real(forked)

        self.patch(maildir.ForkedMap, "cancel", cancel)
        drop = self.openDrop(self.path)
        descriptors = len(os.listdir("/proc/self/fd"))
        self.failOn("scandir", lambda path: path.endswith("cur"), errno.EIO)
        self.failureResultOf(drop.listing(), TemporaryFailure)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(len(os.listdir("/proc/self/fd")), descriptors)

    def test_unreadableMaildir(self) -> None:
        """
        A Maildir that cannot be scanned fails the listing with L{TemporaryFailure}; the cause
        is logged.
        """
        drop = self.openDrop(self.path)
        self.failOn("scandir", lambda path: True, errno.EIO)
        self.failureResultOf(drop.listing(), TemporaryFailure)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class UIDLTests(_MaildirTestCase):
    """
    Tests for the UIDLs of a Maildir (R22).
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.makeMaildir()

    def test_baseName(self) -> None:
        """
        The UIDL is the base name when it is 1 to 70 octets in 0x21-0x7E.
        """
        name = "1700000000.M1P2Q3.host,S=3,W=4"
        self.deliver(self.path, "cur", name + ":2,RS", b"a\n")
        self.deliver(self.path, "new", "1" + "x" * 69, b"a\n")
        self.assertEqual(self.uidls(self.path), [name.encode(), b"1" + b"x" * 69])

    def test_digest(self) -> None:
        """
        Base names that are too long or have octets outside 0x21-0x7E get the first 40 hex
        digits of their SHA-256 as UIDL (R22).
        """
        names = [b"2.with space", b"3.\xff\xfe", "4.caf\u00e9".encode(), b"5." + b"x" * 70]
        for name in names:
            self.deliver(self.path, "new", name, b"a\n")
        self.assertEqual(
            self.uidls(self.path), [sha256(name).hexdigest()[:40].encode() for name in names]
        )

    def test_stable(self) -> None:
        """
        UIDLs do not change across sessions, nor when another agent adds flags to a file or
        moves it from C{new/} to C{cur/}, nor when other messages are removed (R22).
        """
        self.deliver(self.path, "new", "1.a", b"a\n")
        self.deliver(self.path, "new", "2.b", b"a\n")
        self.deliver(self.path, "new", "3.c" + "x" * 80, b"a\n")
        before = self.uidls(self.path)
        self.assertEqual(before, self.uidls(self.path))
        os.rename(os.path.join(self.path, "new", "2.b"), os.path.join(self.path, "cur", "2.b:2,"))
        os.rename(
            os.path.join(self.path, "new", "3.c" + "x" * 80),
            os.path.join(self.path, "cur", "3.c" + "x" * 80 + ":2,S"),
        )
        self.assertEqual(before, self.uidls(self.path))
        os.unlink(os.path.join(self.path, "new", "1.a"))
        self.assertEqual(before[1:], self.uidls(self.path))

    def test_bulk(self) -> None:
        """
        The UIDLs of many base names at once are each one's own, whatever the names.
        """
        names = ["1.a", "x" * 70, "x" * 71, "", "a b", "line\nbreak", "caf\u00e9", "\udcff", "!~"]
        for chosen in [names, names[:2], names[:1], [name for name in names if "\n" in name]]:
            self.assertEqual(_index.ownUidls(chosen), [_index.ownUidl(name) for name in chosen])
        self.assertEqual(_index.ownUidls([]), [])

    @settings(max_examples=50, deadline=None)
    @given(
        st.sets(
            st.text(
                st.characters(exclude_categories=["Cs"], exclude_characters="/\0:"),
                min_size=1,
                max_size=80,
            ).filter(lambda name: not name.startswith(".") and len(name.encode()) <= 255),
            max_size=8,
        )
    )
    def test_uidlProperty(self, names: set[str]) -> None:
        """
        Whatever the file names, every UIDL is 1 to 70 octets in 0x21-0x7E and UIDLs are unique
        (R22).
        """
        path = self.makeMaildir()
        for name in names:
            self.deliver(path, "new", name, b"a\n")
        uidls = self.uidls(path)
        self.assertEqual(len(uidls), len(names))
        self.assertEqual(len(set(uidls)), len(uidls))
        for uidl in uidls:
            self.assertTrue(1 <= len(uidl) <= 70)
            self.assertTrue(all(0x21 <= octet <= 0x7E for octet in uidl), uidl)


def _signedIndex(lines: Sequence[bytes], header: bytes = b"popd-index 2", count: int = -1) -> bytes:
    """
    Build an index file whose trailer is right for its content.
    """
    content = b"".join(line + b"\n" for line in [header, *lines])
    total = len(lines) if count < 0 else count
    return content + b"end %d %s\n" % (total, sha256(content).hexdigest().encode())


class IndexTests(_MaildirTestCase):
    """
    Tests for the index C{popd-index}: sizes, and retrieval times (see L{RetrievalTests}).
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.makeMaildir()
        self.index = os.path.join(self.path, "popd-index")
        self.deliver(self.path, "new", "1.a", b"a\nb\n")
        self.deliver(self.path, "cur", "2.b:2,S", b"ccc\r\n")

    def session(self) -> list[int]:
        """
        @return: the sizes listed by a new session, which is then closed.
        """
        drop = openMaildir(self.path)
        try:
            return [info.size for info in self.listing(drop)]
        finally:
            drop.close()

    def readIndex(self) -> bytes:
        with open(self.index, "rb") as f:
            return f.read()

    def writeIndex(self, data: bytes) -> None:
        with self.rewriting(self.index) as f:
            f.write(data)

    def test_reused(self) -> None:
        """
        Sizes computed in one session are saved and used by the next, which reads no body and
        does not write the index again.
        """
        self.assertEqual(self.session(), [6, 5])
        self.assertTrue(os.path.exists(self.index))
        self.forbidMeasuring()
        self.patch(os, "replace", lambda *args: self.fail("the index was written again"))
        self.assertEqual(self.session(), [6, 5])

    def test_savedWhenSessionEnds(self) -> None:
        """
        Sizes computed at login are saved when the session ends, whether or not it committed,
        not while the client waits for its listing; another process then reads no body.
        """
        for end in ("close", "commit"):
            if os.path.exists(self.index):
                os.unlink(self.index)
            drop = openMaildir(self.path)
            self.assertEqual([info.size for info in self.listing(drop)], [6, 5])
            self.assertFalse(os.path.exists(self.index))
            if end == "commit":
                self.assertEqual(self.successResultOf(drop.commit([], [])), [])
            drop.close()
            self.assertTrue(os.path.exists(self.index), end)
        maildir._INDEX_DIGESTS.clear()
        maildir._LISTINGS.clear()
        self.forbidMeasuring()
        self.assertEqual(self.session(), [6, 5])

    def test_nothingSavedWhenAllRemoved(self) -> None:
        """
        A session that removes every message it listed saves none of their sizes: there is no
        index to write (nor to sync) at its commit.  One that keeps a message saves them.
        """
        drop = openMaildir(self.path)
        self.listing(drop)
        noWrites = self.patch(os, "replace", lambda *args: self.fail(f"{args[1]} was written"))
        self.assertEqual(self.successResultOf(drop.commit([0, 1], [])), [])
        drop.close()
        self.assertFalse(os.path.exists(self.index))
        self.assertEqual(os.listdir(os.path.join(self.path, "new")), [])
        noWrites.restore()
        self.deliver(self.path, "new", "3.c", b"c\n")
        self.deliver(self.path, "new", "4.d", b"dd\n")
        drop = openMaildir(self.path)
        self.listing(drop)
        self.assertEqual(self.successResultOf(drop.commit([0], [])), [])
        drop.close()
        self.assertIn(b"4.d", self.readIndex())

    def test_commitSavesRetrievals(self) -> None:
        """
        A commit that records retrievals saves the sizes with them, and the end of the session
        writes nothing older over them.
        """
        drop = openMaildir(self.path)
        self.listing(drop)
        self.assertEqual(self.successResultOf(drop.commit([], [0])), [])
        saved = self.readIndex()
        self.assertIn(b"1.a", saved)
        drop.close()
        self.assertEqual(self.readIndex(), saved)
        self.forbidMeasuring()
        drop = self.openDrop(self.path)
        listing = self.listing(drop)
        self.assertEqual([info.size for info in listing], [6, 5])
        self.assertIsNotNone(listing[0].retrievedAt)

    def test_handMadeIndex(self) -> None:
        """
        A valid index is trusted: its sizes are used, with or without retrieval times.
        """
        self.writeIndex(_signedIndex([b"99 1.a 1700000000", b"98 2.b"]))
        self.forbidMeasuring()
        self.assertEqual(self.session(), [99, 98])

    def test_version1(self) -> None:
        """
        An index of version 1, which only had sizes, is still read, and not rewritten by a
        session that computes nothing.
        """
        old = _signedIndex([b"99 1.a", b"98 2.b"], header=b"popd-index 1")
        self.writeIndex(old)
        self.forbidMeasuring()
        self.assertEqual(self.session(), [99, 98])
        self.assertEqual(self.readIndex(), old)

    def test_onlyNewMessagesRead(self) -> None:
        """
        Only messages delivered since the index was written are read, and the rewritten index
        has entries for exactly the messages that exist.
        """
        self.session()
        os.unlink(os.path.join(self.path, "new", "1.a"))
        self.deliver(self.path, "new", "3.c", b"d\n")
        calls = self.countMeasuring()
        self.assertEqual(self.session(), [5, 3])
        self.assertEqual(len(calls), 1)
        data = self.readIndex()
        self.assertEqual(data, _signedIndex([b"5 2.b", b"3 3.c"]))

    def test_atomicDurableWrite(self) -> None:
        """
        The index is written to a temporary file that is synced and renamed over the index,
        then the Maildir directory is synced; no temporary file remains.
        """
        synced: list[tuple[int, int]] = []
        realFsync = os.fsync

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            synced.append((info.st_dev, info.st_ino))
            realFsync(fd)

        replaced: list[tuple[str, str]] = []
        realReplace = os.replace

        def replace(source: str, destination: str) -> None:
            replaced.append((os.path.basename(source), os.path.basename(destination)))
            synced.append((-1, -1))
            realReplace(source, destination)

        self.patch(os, "fsync", fsync)
        self.patch(os, "replace", replace)
        self.session()
        directory = os.stat(self.path)
        self.assertEqual(replaced, [("popd-index.tmp", "popd-index")])
        index = os.stat(self.index)
        self.assertEqual(
            synced,
            [(index.st_dev, index.st_ino), (-1, -1), (directory.st_dev, directory.st_ino)],
        )
        self.assertEqual(
            sorted(os.listdir(self.path)), ["cur", "new", "popd-index", "popd.lock", "tmp"]
        )

    def test_namesRoundTrip(self) -> None:
        """
        Base names with spaces, percent signs, commas, newlines and octets that are not UTF-8
        are saved and found again.
        """
        names = [b"3.a b", b"4.100%", b"5.x,S=1", b"6.line\nbreak", b"7.\xff\xfe", b"8.\\057"]
        for name in names:
            self.deliver(self.path, "new", name, b"z\n")
        self.assertEqual(self.session(), [6, 5] + [3] * len(names))
        self.forbidMeasuring()
        self.assertEqual(self.session(), [6, 5] + [3] * len(names))

    def test_truncated(self) -> None:
        """
        An index cut at any length is ignored: sizes are computed again and the index is
        rewritten whole.
        """
        self.session()
        valid = self.readIndex()
        calls = self.countMeasuring()
        for length in range(len(valid)):
            self.writeIndex(valid[:length])
            del calls[:]
            self.assertEqual(self.session(), [6, 5])
            self.assertEqual(len(calls), 2, length)
            self.assertEqual(self.readIndex(), valid)

    def test_corrupt(self) -> None:
        """
        An index that fails its checksum, has another version, a wrong count, or any entry that
        is malformed (with a correct checksum) is ignored, never trusted in part.
        """
        self.session()
        valid = self.readIndex()
        corrupt = [
            b"\0" * 100,
            b"garbage\n",
            valid.replace(b"6 1.a", b"7 1.a"),
            valid.replace(b"end 2", b"end 3"),
            valid + b"\n",
            valid + valid,
            _signedIndex([b"99 1.a", b"98 2.b"], header=b"popd-index 4"),
            _signedIndex([b"99 1.a", b"98 2.b"], header=b"popd-index 0"),
            _signedIndex([b"99 1.a", b"98 2.b 17"], header=b"popd-index 1"),
            _signedIndex([b"99 1.a", b"- 2.b 17"], header=b"popd-index 1"),
            _signedIndex([b"99 1.a", b"- 2.b"]),
            _signedIndex([b"99 1.a", b"98 2.b -"]),
            _signedIndex([b"99 1.a", b"98 2.b x"]),
            _signedIndex([b"99 1.a", b"98 2.b -17"]),
            _signedIndex([b"99 1.a", b"98 2.b 1.5"]),
            _signedIndex([b"99 1.a", b"98 2.b 17 18"]),
            _signedIndex([b"99 1.a", b"98 2.b  17"]),
            _signedIndex([b"99 1.a", b"98 2.b " + b"1" * 21]),
            _signedIndex([b"99 1.a", b"-- 2.b 17"]),
            _signedIndex([b"99 1.a", b"98 2.b"], count=3),
            _signedIndex([b"99 1.a", b"98 2.b", b""]),
            _signedIndex([b"99 1.a", b"-98 2.b"]),
            _signedIndex([b"99 1.a", b"x 2.b"]),
            _signedIndex([b"99 1.a", b"98  2.b"]),
            _signedIndex([b"99 1.a", b"98 2.b "]),
            _signedIndex([b"99 1.a", b"98 2.b", b"97 2.b"]),
            _signedIndex([b"99 1.a", b"98 2.b", b"97 a%2Fb"]),
            _signedIndex([b"99 1.a", b"98 2.b", b"97 c%3A2,S"]),
            _signedIndex([b"99 1.a", b"98 2.b", b"97 %2Ehidden"]),
            _signedIndex([b"99 1.a", b"98 2.b", b"97 nul%00"]),
            _signedIndex([b"99 1.a", b"98 2.b", b"1" * 21 + b" c"]),
            _signedIndex([b"99 1.a", b"98 2.b\rx"]),
        ]
        calls = self.countMeasuring()
        for data in corrupt:
            self.writeIndex(data)
            del calls[:]
            self.assertEqual(self.session(), [6, 5], data)
            self.assertEqual(len(calls), 2, data)
            self.assertEqual(self.readIndex(), valid)

    def test_unreadable(self) -> None:
        """
        An index that cannot be read (here a directory) is ignored, and when it cannot be
        replaced either the session goes on with the computed sizes; both faults are logged.
        """
        os.mkdir(self.index)
        self.assertEqual(self.session(), [6, 5])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)

    def assertWriteFailureTolerated(self) -> None:
        """
        Assert that a session lists the computed sizes, that one error was logged and that
        neither an index nor a temporary file was left.
        """
        self.assertEqual(self.session(), [6, 5])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(sorted(os.listdir(self.path)), ["cur", "new", "popd.lock", "tmp"])

    def test_createFailure(self) -> None:
        """
        When the temporary index cannot be created (a full disk), the listing still succeeds
        with the computed sizes and the error is logged.
        """
        temporary = os.path.join(self.path, "popd-index.tmp")
        self.failOn("open", lambda path: path == temporary, errno.ENOSPC)
        self.assertWriteFailureTolerated()

    def test_replaceFailure(self) -> None:
        """
        When the temporary index cannot be renamed over the index, the listing still succeeds
        with the computed sizes, the error is logged and the temporary file removed.
        """
        self.failOn("replace", lambda path: True, errno.ENOSPC)
        self.assertWriteFailureTolerated()

    def test_syncFailure(self) -> None:
        """
        When the temporary index cannot be synced (an I/O error), the listing still succeeds
        with the computed sizes, the error is logged and the temporary file removed.
        """

        def fsync(fd: int) -> None:
            raise _oserror(errno.EIO)

        self.patch(os, "fsync", fsync)
        self.assertWriteFailureTolerated()

    def test_directorySyncFailure(self) -> None:
        """
        A failure to sync the Maildir directory after the rename is logged and the session
        goes on.
        """
        realOpen = os.open

        def faultyOpen(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & os.O_DIRECTORY:
                raise _oserror(errno.EIO)
            return realOpen(path, flags, *args, **kwargs)

        self.patch(os, "open", faultyOpen)
        self.assertEqual(self.session(), [6, 5])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


def _settledClock(fd: int | None = None) -> int:
    """
    A clock far ahead of every directory's times: every listing is reusable.
    """
    return time.time_ns() + 3600 * 10**9


def _settle(case: SynchronousTestCase) -> None:
    """
    Make the clocks of the host and of the file system far ahead of every directory's times
    for the rest of C{case}.
    """
    case.patch(maildir, "_fileSystemTime", _settledClock)
    case.patch(maildir, "_hostTime", _settledClock)


class ListingCacheTests(_MaildirTestCase):
    """
    Tests for the listing cache C{popd-listing}: a listing is reused as it is while the index,
    C{new/} and C{cur/} are unchanged, the messages of an unchanged directory while the other
    changed, and neither when they may not be right.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.makeMaildir()
        self.cache = os.path.join(self.path, "popd-listing")
        self.index = os.path.join(self.path, "popd-index")
        self.deliver(self.path, "new", "1700000001.a", b"a\n")
        self.deliver(self.path, "cur", "1700000002.b:2,S", b"bb\n")
        self.deliver(self.path, "cur", "1700000003.c,S=2,W=9:2,", b"c\n")
        self.expected = [
            MessageInfo(3, b"1700000001.a"),
            MessageInfo(4, b"1700000002.b"),
            MessageInfo(9, b"1700000003.c,S=2,W=9"),
        ]
        _settle(self)
        self.patch(maildir, "_CACHE_MINIMUM", 0)

    def session(self) -> list[MessageInfo]:
        """
        @return: the listing of a new session, which is then closed.
        """
        drop = openMaildir(self.path)
        try:
            return list(self.listing(drop))
        finally:
            drop.close()

    def scans(self) -> list[str]:
        """
        @return: a list that grows by the name of each directory read from now on.
        """
        scanned: list[str] = []
        real = os.scandir

        def scandir(path: str) -> Any:
            scanned.append(os.path.basename(path))
            return real(path)

        self.patch(os, "scandir", scandir)
        return scanned

    def readCache(self) -> bytes:
        with open(self.cache, "rb") as f:
            return f.read()

    def writeCache(self, data: bytes) -> None:
        with self.rewriting(self.cache) as f:
            f.write(data)

    def forbidWrites(self) -> None:
        """
        Make any replacement of the index or the cache fail the test.
        """
        self.patch(os, "replace", lambda *args: self.fail(f"{args[1]} was written"))

    def test_reused(self) -> None:
        """
        A session that finds the index, C{new/} and C{cur/} as the last listing left them
        reads neither directory nor any message, writes nothing, and lists the same; it opens
        the messages where the cache says they are.
        """
        self.assertEqual(self.session(), self.expected)
        self.assertTrue(os.path.exists(self.cache))
        scanned = self.scans()
        self.forbidMeasuring()
        self.forbidWrites()
        self.assertEqual(self.session(), self.expected)
        drop = self.openDrop(self.path)
        self.assertEqual(self.listing(drop), self.expected)
        self.assertEqual(self.readAll(self.successResultOf(drop.open(1))), b"bb\n")
        self.assertEqual(self.readAll(self.successResultOf(drop.open(0))), b"a\n")
        self.assertEqual(scanned, [])

    def test_remembered(self) -> None:
        """
        A process that listed a Maildir reads neither its index nor its cache again while
        they are unchanged: the listing it took or saved stands for them.
        """
        self.assertEqual(self.session(), self.expected)
        self.forbidMeasuring()
        self.forbidWrites()
        self.patch(maildir, "readListing", lambda *args: self.fail("the cache was read"))
        self.patch(maildir, "_readOpened", lambda *args: self.fail("the index was read"))
        self.assertEqual(self.session(), self.expected)
        self.assertEqual(self.session(), self.expected)

    def test_rememberedReadAfterReplaced(self) -> None:
        """
        A cache that another process renamed over the one this process remembers is read:
        what it lists is what the session lists.
        """
        self.session()
        cache = _index.parseListing(self.readCache())
        assert cache is not None
        rows = cache.rows
        other = replace(
            cache,
            rows=_index.Rows(
                rows.bases,
                rows.infos,
                rows.places,
                rows.delivered,
                [size + 100 for size in rows.sizes],
                rows.retrieved,
                rows.uidls,
                rows.flags,
            ),
        )
        temporary = self.cache + ".other"
        with open(temporary, "wb") as f:
            f.write(_index.formatListing(other))
        os.replace(temporary, self.cache)
        self.assertEqual(
            [info.size for info in self.session()], [info.size + 100 for info in self.expected]
        )

    def test_rememberedIndexReplaced(self) -> None:
        """
        An index that another process renamed over the one this process remembers is read,
        and the cache saved with the one before is not used.
        """
        self.session()
        temporary = self.index + ".other"
        with open(temporary, "wb") as f:
            f.write(_signedIndex([b"99 1700000001.a", b"98 1700000002.b"]))
        os.replace(temporary, self.index)
        scanned = self.scans()
        self.assertEqual([info.size for info in self.session()], [99, 98, 9])
        self.assertEqual(sorted(scanned), ["cur", "new"])

    def test_delivery(self) -> None:
        """
        Mail delivered into C{new/} is listed: only C{new/} is read, and only the new message
        is sized.  One delivered with an earlier time takes its place in the order.
        """
        self.session()
        self.deliver(self.path, "new", "1700000004.d", b"dddd\n")
        self.deliver(self.path, "new", "1700000000.e", b"\n")
        scanned = self.scans()
        calls = self.countMeasuring()
        self.assertEqual(
            self.session(),
            [MessageInfo(2, b"1700000000.e"), *self.expected, MessageInfo(6, b"1700000004.d")],
        )
        self.assertEqual((scanned, len(calls)), (["new"], 2))

    def test_flagsChanged(self) -> None:
        """
        A message another agent renamed in C{cur/} to change its flags is listed the same, and
        opened under its new name without looking for it: only C{cur/} is read.
        """
        self.session()
        os.rename(
            os.path.join(self.path, "cur", "1700000002.b:2,S"),
            os.path.join(self.path, "cur", "1700000002.b:2,RS"),
        )
        scanned = self.scans()
        self.forbidMeasuring()
        drop = self.openDrop(self.path)
        self.assertEqual(self.listing(drop), self.expected)
        self.assertEqual(self.readAll(self.successResultOf(drop.open(1))), b"bb\n")
        self.assertEqual(scanned, ["cur"])

    def test_movedToCur(self) -> None:
        """
        A message another agent moved from C{new/} to C{cur/} is listed the same, and opened
        where it is now: both directories are read.
        """
        self.session()
        os.rename(
            os.path.join(self.path, "new", "1700000001.a"),
            os.path.join(self.path, "cur", "1700000001.a:2,S"),
        )
        scanned = self.scans()
        drop = self.openDrop(self.path)
        self.assertEqual(self.listing(drop), self.expected)
        self.assertEqual(self.readAll(self.successResultOf(drop.open(0))), b"a\n")
        self.assertEqual(scanned, ["new", "cur"])

    def test_removed(self) -> None:
        """
        A message another agent removed is no longer listed.
        """
        self.session()
        os.unlink(os.path.join(self.path, "cur", "1700000002.b:2,S"))
        scanned = self.scans()
        self.assertEqual(self.session(), [self.expected[0], self.expected[2]])
        self.assertEqual(scanned, ["cur"])

    def test_directoryReplaced(self) -> None:
        """
        A directory put in the place of C{cur/} (another inode) is read, even with the same
        times.
        """
        self.session()
        real = maildir._directoryStamp

        def stamp(path: str) -> Any:
            found = real(path)
            if path.endswith("cur"):
                return found._replace(inode=found.inode + 1)
            return found

        self.patch(maildir, "_directoryStamp", stamp)
        scanned = self.scans()
        self.assertEqual(self.session(), self.expected)
        self.assertEqual(scanned, ["cur"])

    def frozenStamps(self) -> None:
        """
        Make the stamps of C{new/} and C{cur/} stay what they are now, as they would after a
        change within the same tick of a coarse clock.
        """
        real = maildir._directoryStamp
        stamps = {path: real(path) for path in (self.path + "/new", self.path + "/cur")}
        self.patch(maildir, "_directoryStamp", lambda path: stamps[path])

    def lastChange(self) -> int:
        """
        @return: the earlier of the times C{new/} and C{cur/} last changed: a file system's
            clock less than a second past it makes listings of either directory not reusable.
        """
        return min(max(maildir._directoryStamp(self.path + name)[1:]) for name in ("/new", "/cur"))

    def test_stampsTrusted(self) -> None:
        """
        Reusing a listing relies on the stamps: with a listing taken long enough after the
        directories last changed, a message whose delivery left the stamps as they were is not
        listed.  (The control for L{test_sameTick}.)
        """
        self.frozenStamps()
        self.session()
        self.deliver(self.path, "new", "1700000004.d", b"d\n")
        self.assertEqual(self.session(), self.expected)

    def test_sameTick(self) -> None:
        """
        A listing taken less than a second after the file system's clock said a directory
        last changed is never reused for it: a change within the same tick would leave its
        stamp as it was.  The next session reads it, whatever its stamp.
        """
        self.frozenStamps()
        changed = self.lastChange()
        self.patch(maildir, "_fileSystemTime", lambda fd: changed + 999_999_999)
        self.session()
        self.deliver(self.path, "new", "1700000004.d", b"d\n")
        self.patch(maildir, "_fileSystemTime", _settledClock)
        scanned = self.scans()
        self.assertEqual(self.session(), [*self.expected, MessageInfo(3, b"1700000004.d")])
        self.assertEqual(scanned, ["new", "cur"])
        del scanned[:]
        self.assertEqual(self.session(), [*self.expected, MessageInfo(3, b"1700000004.d")])
        self.assertEqual(scanned, [])

    def test_confirmed(self) -> None:
        """
        A directory that had changed too recently when the listing began, but not when it
        ended, is read once more: when that finds the same messages, the next session reuses
        the listing.
        """
        changed = self.lastChange()
        times = [changed + 999_999_999]
        self.patch(
            maildir, "_fileSystemTime", lambda fd: times.pop() if times else changed + 10**10
        )
        scanned = self.scans()
        self.assertEqual(self.session(), self.expected)
        self.assertEqual(scanned, ["new", "cur", "new", "cur"])
        del scanned[:]
        self.assertEqual(self.session(), self.expected)
        self.assertEqual(scanned, [])

    def test_notConfirmed(self) -> None:
        """
        When the second reading finds another message, the listing is not reused for that
        directory: the next session lists the message.
        """
        changed = self.lastChange()
        times = [changed + 999_999_999]
        self.patch(
            maildir, "_fileSystemTime", lambda fd: times.pop() if times else changed + 10**10
        )
        real = os.scandir
        scanned: list[str] = []

        def scandir(path: str) -> Any:
            scanned.append(os.path.basename(path))
            if len(scanned) == 3:
                self.deliver(self.path, "new", "1700000004.d", b"d\n")
            return real(path)

        self.patch(os, "scandir", scandir)
        self.assertEqual(self.session(), self.expected)
        self.assertEqual(self.session(), [*self.expected, MessageInfo(3, b"1700000004.d")])

    def test_duplicateNotReused(self) -> None:
        """
        When C{new/} and C{cur/} both have a file with one base name (listed once, from
        C{cur/}), C{new/} is read by every session: the file in C{new/} is listed once the
        one in C{cur/} is gone.
        """
        self.deliver(self.path, "new", "1700000002.b", b"bb\n")
        self.assertEqual(self.session(), self.expected)
        os.unlink(os.path.join(self.path, "cur", "1700000002.b:2,S"))
        scanned = self.scans()
        drop = self.openDrop(self.path)
        self.assertEqual(self.listing(drop), self.expected)
        self.assertEqual(self.readAll(self.successResultOf(drop.open(1))), b"bb\n")
        self.assertEqual(scanned, ["new", "cur"])

    def test_indexChanged(self) -> None:
        """
        A cache saved with another index is not used: the sizes are the index's.
        """
        self.session()
        with self.rewriting(self.index) as f:
            f.write(_signedIndex([b"99 1700000001.a", b"98 1700000002.b"]))
        self.forbidMeasuring()
        self.assertEqual([info.size for info in self.session()], [99, 98, 9])

    def test_indexParsedOnce(self) -> None:
        """
        The index is read by every session, but parsed only when the cache was saved with
        another one, or has not what a listing needs.
        """
        self.session()
        self.deliver(self.path, "new", "1700000004.d", b"d\n")
        self.patch(maildir, "parseIndex", lambda data: self.fail("the index was parsed"))
        self.assertEqual(len(self.session()), 4)

    def test_corrupt(self) -> None:
        """
        A cache that is truncated at any length, or has any octet changed, is ignored, with
        a warning: the directories are read and the cache written again as it was.
        """
        self.session()
        valid = self.readCache()
        damaged = [valid[:length] for length in range(len(valid))]
        damaged += [
            valid[:position] + bytes([valid[position] ^ 0x20]) + valid[position + 1 :]
            for position in range(0, len(valid), 7)
        ]
        for data in damaged:
            self.writeCache(data)
            with capturedLogs() as events:
                self.assertEqual(self.session(), self.expected)
            if data:
                self.assertEqual(
                    _warnings(events), [f"Ignoring the invalid listing cache {self.cache!r}"]
                )
            self.assertEqual(self.readCache(), valid)

    def test_notRegularFile(self) -> None:
        """
        A FIFO or a directory in place of the cache is not read (nor waited on), and cannot
        be replaced: the session goes on, with a warning.
        """
        for make in (os.mkfifo, os.mkdir):
            make(self.cache)
            with capturedLogs() as events:
                self.assertEqual(self.session(), self.expected)
            self.assertIn("Ignoring the unreadable listing cache", " ".join(_warnings(events)))
            if os.path.isdir(self.cache):
                os.rmdir(self.cache)
            else:
                os.unlink(self.cache)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_linksNotFollowed(self) -> None:
        """
        Symbolic links planted as the cache or its temporary file are neither read (the
        listing they point to is not served) nor written through.
        """
        self.session()
        outside = os.path.abspath(self.mktemp())
        other = os.path.join(outside, "Maildir")
        os.makedirs(other)
        with open(os.path.join(other, "listing"), "wb") as f:
            f.write(self.readCache())
        with open(os.path.join(other, "target"), "wb") as f:
            f.write(b"precious\n")
        os.unlink(self.cache)
        os.symlink(os.path.join(other, "listing"), self.cache)
        os.symlink(os.path.join(other, "target"), self.cache + ".tmp")
        self.deliver(self.path, "new", "1700000004.d", b"d\n")
        self.assertEqual(self.session(), [*self.expected, MessageInfo(3, b"1700000004.d")])
        with open(os.path.join(other, "target"), "rb") as f:
            self.assertEqual(f.read(), b"precious\n")

    def test_writeFailure(self) -> None:
        """
        A cache that cannot be written (a full disk) is only warned about: the session goes
        on, no temporary file is left, and the next session reads the directories.
        """
        temporary = self.cache + ".tmp"
        self.failOn("open", lambda path: path == temporary, errno.ENOSPC)
        with capturedLogs() as events:
            self.assertEqual(self.session(), self.expected)
        self.assertEqual(len(_warnings(events)), 1)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(
            sorted(os.listdir(self.path)), ["cur", "new", "popd-index", "popd.lock", "tmp"]
        )

    def test_notWrittenWithoutIndex(self) -> None:
        """
        When the index that the listing computed sizes for cannot be written, neither is the
        cache, which would say that sizes are saved.
        """
        self.failOn("replace", lambda path: path.endswith("popd-index.tmp"), errno.EIO)
        self.assertEqual(self.session(), self.expected)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertFalse(os.path.exists(self.cache))

    def test_hugeSize(self) -> None:
        """
        A listing with a size that does not fit in 64 bits (from a hand-made index) is served,
        and not cached.
        """
        with self.rewriting(self.index) as f:
            f.write(_signedIndex([b"99999999999999999999 1700000001.a", b"4 1700000002.b"]))
        self.assertEqual(self.session()[0].size, 99999999999999999999)
        self.assertFalse(os.path.exists(self.cache))

    def test_small(self) -> None:
        """
        Only a listing of L{maildir._CACHE_MINIMUM} messages or more is cached: reading the
        directories of a smaller Maildir costs less than writing the cache.  A cache left by a
        larger listing is removed by the first listing, or commit, that leaves fewer.
        """
        self.session()
        self.patch(maildir, "_CACHE_MINIMUM", 3)
        os.unlink(os.path.join(self.path, "cur", "1700000002.b:2,S"))
        self.assertEqual(self.session(), [self.expected[0], self.expected[2]])
        self.assertFalse(os.path.exists(self.cache))
        self.deliver(self.path, "new", "1700000004.d", b"d\n")
        self.assertEqual(len(self.session()), 3)
        self.assertTrue(os.path.exists(self.cache))
        drop = openMaildir(self.path, clock=lambda: 1700000100.0)
        self.listing(drop)
        self.successResultOf(drop.commit([0], [1]))
        drop.close()
        self.assertFalse(os.path.exists(self.cache))
        self.assertEqual(
            self.session(),
            [
                MessageInfo(9, b"1700000003.c,S=2,W=9", 1700000100.0),
                MessageInfo(3, b"1700000004.d"),
            ],
        )

    def test_commit(self) -> None:
        """
        A commit that records retrievals saves the listing with the index it wrote: the next
        session reads the directories its renames changed, but does not parse the index.
        """
        drop = openMaildir(self.path, clock=lambda: 1700000100.0)
        self.listing(drop)
        self.successResultOf(drop.commit([2], [0]))
        drop.close()
        self.patch(maildir, "parseIndex", lambda data: self.fail("the index was parsed"))
        self.forbidMeasuring()
        self.assertEqual(
            self.session(),
            [MessageInfo(3, b"1700000001.a", 1700000100.0), self.expected[1]],
        )

    def test_orphan(self) -> None:
        """
        A message that another agent moved away and back keeps what the index saved of it,
        although listings without it were saved in between.
        """
        drop = openMaildir(self.path, clock=lambda: 1700000100.0)
        self.listing(drop)
        self.successResultOf(drop.commit([], [1]))
        drop.close()
        away = os.path.abspath(self.mktemp())
        os.rename(os.path.join(self.path, "cur", "1700000002.b:2,S"), away)
        self.assertEqual(self.session(), [self.expected[0], self.expected[2]])
        self.assertEqual(len(self.session()), 2)
        os.rename(away, os.path.join(self.path, "cur", "1700000002.b:2,S"))
        self.assertEqual(self.session()[1], MessageInfo(4, b"1700000002.b", 1700000100.0))


def _rows(
    bases: list[str],
    infos: list[str] | None = None,
    places: bytes | None = None,
    sizes: list[int] | None = None,
    retrieved: list[int | None] | None = None,
    uidls: list[bytes] | None = None,
    flags: bytes | None = None,
    delivered: list[int] | None = None,
) -> _index.Rows:
    """
    @return: rows of messages with the base names C{bases}, and the rest as given or made up.
    """
    count = len(bases)
    return _index.Rows(
        bases,
        [""] * count if infos is None else infos,
        b"n" * count if places is None else places,
        list(range(count)) if delivered is None else delivered,
        [10] * count if sizes is None else sizes,
        [None] * count if retrieved is None else retrieved,
        [name.encode() for name in bases] if uidls is None else uidls,
        bytes(count) if flags is None else flags,
    )


def _listing(rows: _index.Rows, orphans: frozenset[str] = frozenset()) -> _index.ListingCache:
    return _index.ListingCache(
        sha256(b"index").digest(),
        _index.Stamp(12, 1700000000123456789, 1700000000987654321),
        True,
        _index.Stamp(2**63, -5, 0),
        False,
        rows,
        orphans,
    )


class ListingFormatTests(SynchronousTestCase):
    """
    Tests for the format of the listing cache: L{popd._index.formatListing} and
    L{popd._index.parseListing}.
    """

    def assertSame(self, parsed: _index.ListingCache | None, cache: _index.ListingCache) -> None:
        assert parsed is not None
        self.assertEqual(
            (parsed.index, parsed.new, parsed.newClean, parsed.cur, parsed.curClean),
            (cache.index, cache.new, cache.newClean, cache.cur, cache.curClean),
        )
        self.assertEqual(parsed.orphans, cache.orphans)
        for column in ("bases", "infos", "places", "delivered", "sizes", "retrieved", "uidls"):
            self.assertEqual(getattr(parsed.rows, column), getattr(cache.rows, column), column)
        self.assertEqual(parsed.rows.flags, cache.rows.flags)

    def sample(self) -> _index.ListingCache:
        bases = ["1700000000.a", "b c", "6.line\nbreak", "7.\udcff\udcfe", "", "x%41"]
        return _listing(
            _rows(
                bases,
                infos=[":2,S", "", ":2,RS", ":", ":1,x y", ""],
                places=b"ncccnn",
                sizes=[0, 1, 2**63 - 1, 5, 6, 7],
                retrieved=[None, 0, 1700000000, None, 99999999999999999999, None],
                uidls=[b"1700000000.a", b"u!~", b"d" * 70, b"7", b"e", b"x%41"],
                flags=bytes((0, 1, 2, 3, 0, 1)),
                delivered=[-5, 0, 1, 2**70, 3, 4],
            ),
            frozenset({"gone", "\udcff"}),
        )

    def test_roundTrip(self) -> None:
        """
        Every column, the stamps, cleanliness, orphans and the index digest are read as they
        were written, whatever octets the names have.
        """
        cache = self.sample()
        data = _index.formatListing(cache)
        self.assertSame(_index.parseListing(data), cache)
        empty = _listing(_rows([]))
        self.assertSame(_index.parseListing(_index.formatListing(empty)), empty)
        noIndex = replace(cache, index=b"")
        self.assertSame(_index.parseListing(_index.formatListing(noIndex)), noIndex)

    def test_damaged(self) -> None:
        """
        A cache truncated at any length, with any octet changed, or with anything after its
        end, is rejected.
        """
        data = _index.formatListing(self.sample())
        for length in range(len(data)):
            self.assertIsNone(_index.parseListing(data[:length]), length)
        for position in range(len(data)):
            for flip in (0x01, 0x80):
                changed = data[:position] + bytes([data[position] ^ flip]) + data[position + 1 :]
                self.assertIsNone(_index.parseListing(changed), (position, flip))
        self.assertIsNone(_index.parseListing(data + b"\n"))
        self.assertIsNone(_index.parseListing(data + data))

    def test_invalid(self) -> None:
        """
        A cache whose checksum is right but whose content is not what popd writes is rejected
        whole: above all a name with a C{/} (the cache names the files to open and remove),
        but also names no Maildir message has, UIDLs that POP3 does not allow or that two
        messages share, sizes below 0, and fields that are not numbers.
        """
        invalid = [
            _rows(["a/b"]),
            _rows(["a"], infos=[":2,/S"]),
            _rows(["a"], infos=["/x"]),
            _rows(["a"], infos=["x"]),
            _rows([".hidden"]),
            _rows(["a:2,S"]),
            _rows(["a", ".b"]),
            _rows(["a"], uidls=[b"a b"]),
            _rows(["a"], uidls=[b""]),
            _rows(["a"], uidls=[b"x" * 71]),
            _rows(["a"], uidls=[b"\xff"]),
            _rows(["a", "b"], uidls=[b"x", b"x"]),
            _rows(["a"], places=b"x"),
            _rows(["a"], places=b"nn"),
            _rows(["a"], flags=b"\x04"),
            _rows(["a"], sizes=[-1]),
            _rows(["a"], retrieved=[-1]),
        ]
        for rows in invalid:
            self.assertIsNone(_index.parseListing(_index.formatListing(_listing(rows))))
        self.assertIsNone(
            _index.parseListing(_index.formatListing(_listing(_rows(["a"]), frozenset({"a/b"}))))
        )
        valid = _index.formatListing(_listing(_rows(["a", "b"], retrieved=[5, None])))
        content = valid[: -len(b"end \n") - 64]
        for old, new in [
            (b"5 -", b"5 x"),
            (b"5 -", b"5--"),
            (b"5 -", b"+5 -"),
            (b"5 -", b"5  "),
            (b"0 1", b"0 x"),
            (b"0 1", b"-0 -"),
            (b"popd-listing 1", b"popd-listing 2"),
            (b"\n2 0 ", b"\n3 0 "),
        ]:
            self.assertIn(old, content)
            changed = content.replace(old, new, 1)
            resigned = changed + b"end %s\n" % (sha256(changed).hexdigest().encode(),)
            self.assertIsNone(_index.parseListing(resigned), new)

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.text(
                    st.characters(exclude_categories=["Cs"], exclude_characters="/\0:"),
                    max_size=20,
                ).filter(lambda name: not name.startswith(".")),
                st.sampled_from(["", ":", ":2,S", ":2,a b"]),
                st.sampled_from(b"nc"),
                st.integers(min_value=0, max_value=2**63 - 1),
                st.one_of(st.none(), st.integers(min_value=0, max_value=10**20 - 1)),
                st.integers(min_value=0, max_value=3),
            ),
            unique_by=lambda row: row[0],
            max_size=8,
        )
    )
    def test_roundTripProperty(
        self, rows: list[tuple[str, str, int, int, int | None, int]]
    ) -> None:
        """
        Whatever the names, sizes, times and flags, a cache reads back as it was written.
        """
        cache = _listing(
            _rows(
                [row[0] for row in rows],
                infos=[row[1] for row in rows],
                places=bytes(row[2] for row in rows),
                sizes=[row[3] for row in rows],
                retrieved=[row[4] for row in rows],
                uidls=[b"u%d" % (number,) for number in range(len(rows))],
                flags=bytes(row[5] for row in rows),
            )
        )
        self.assertSame(_index.parseListing(_index.formatListing(cache)), cache)


class OpenTests(_MaildirTestCase):
    """
    Tests for L{Maildir.open} and the messages it returns.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.makeMaildir()
        self.content = b"Subject: hi\n\nbody\n"
        self.deliver(self.path, "new", "1.a", self.content)
        self.deliver(self.path, "new", "2.b", b"other\n")
        self.drop = self.openDrop(self.path)
        self.listed = self.listing(self.drop)

    def test_read(self) -> None:
        """
        An opened message provides L{IMessage} and reads the stored octets in chunks of at most
        the size asked for, then C{b""}.
        """
        message = self.successResultOf(self.drop.open(0))
        self.assertTrue(verifyObject(IMessage, message))
        self.assertEqual(self.successResultOf(message.read(3)), b"Sub")
        self.assertEqual(self.readAll(message), self.content[3:])
        self.assertEqual(self.successResultOf(message.read(3)), b"")
        message.close()

    def test_close(self) -> None:
        """
        Closing a message is idempotent; reading it afterwards is an error.
        """
        message = self.successResultOf(self.drop.open(1))
        message.close()
        message.close()
        self.assertRaises(ValueError, message.read, 1)

    def test_renamedForFlags(self) -> None:
        """
        A message renamed by another agent to add the C{S} flag, and moved to C{cur/}, keeps its
        UIDL and can still be read (R22).
        """
        os.rename(os.path.join(self.path, "new", "1.a"), os.path.join(self.path, "cur", "1.a:2,S"))
        message = self.successResultOf(self.drop.open(0))
        self.addCleanup(message.close)
        self.assertEqual(self.readAll(message), self.content)
        self.drop.close()
        self.assertEqual(self.uidls(self.path), [info.uidl for info in self.listed])

    def test_renamedTwice(self) -> None:
        """
        A message renamed again after it was found again is still found.
        """
        cur = os.path.join(self.path, "cur")
        os.rename(os.path.join(self.path, "new", "1.a"), os.path.join(cur, "1.a:2,S"))
        self.successResultOf(self.drop.open(0)).close()
        os.rename(os.path.join(cur, "1.a:2,S"), os.path.join(cur, "1.a:2,RS"))
        message = self.successResultOf(self.drop.open(0))
        self.addCleanup(message.close)
        self.assertEqual(self.readAll(message), self.content)

    def test_gone(self) -> None:
        """
        A message removed by another agent after the listing fails with L{MessageGone}.
        """
        os.unlink(os.path.join(self.path, "new", "1.a"))
        self.failureResultOf(self.drop.open(0), MessageGone)

    def test_openFailure(self) -> None:
        """
        Any other error opening the message fails with L{TemporaryFailure}, whose text says
        nothing; the cause is logged.
        """
        self.failOn("open", lambda path: path.endswith("1.a"), errno.EIO)
        failure = self.failureResultOf(self.drop.open(0), TemporaryFailure)
        self.assertEqual(str(failure.value), "")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_readFailure(self) -> None:
        """
        An error reading the message fails the read with L{TemporaryFailure}; it is logged.
        """
        message = self.successResultOf(self.drop.open(0))
        self.addCleanup(message.close)

        def read(fd: int, size: int) -> bytes:
            raise _oserror(errno.EIO)

        self.patch(os, "read", read)
        self.failureResultOf(message.read(10), TemporaryFailure)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_badIndex(self) -> None:
        """
        An index outside the listing is an L{IndexError}.
        """
        for index in [-1, 2, 100]:
            self.assertRaises(IndexError, self.drop.open, index)


class CommitTests(_MaildirTestCase):
    """
    Tests for L{Maildir.commit} and L{Maildir.close} (R23, R24).
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.makeMaildir()
        self.names = ["1.a", "2.b", "3.c", "4.d"]
        for name in self.names:
            self.deliver(self.path, "new", name, b"a\n")
        self.drop = self.openDrop(self.path)
        self.listing(self.drop)

    def remaining(self) -> list[str]:
        return sorted(os.listdir(os.path.join(self.path, "new"))) + sorted(
            os.listdir(os.path.join(self.path, "cur"))
        )

    def test_removesExactly(self) -> None:
        """
        C{commit} removes exactly the messages at the given indices and reports none failed
        (R23).
        """
        self.assertEqual(list(self.successResultOf(self.drop.commit([1, 3], []))), [])
        self.assertEqual(self.remaining(), ["1.a", "3.c"])

    def test_renamed(self) -> None:
        """
        A message renamed or moved by another agent is found by base name and removed; a
        message with the same base name prefix is not.
        """
        os.rename(os.path.join(self.path, "new", "2.b"), os.path.join(self.path, "cur", "2.b:2,S"))
        self.deliver(self.path, "cur", "2.bb:2,", b"a\n")
        self.assertEqual(list(self.successResultOf(self.drop.commit([1], []))), [])
        self.assertEqual(self.remaining(), ["1.a", "3.c", "4.d", "2.bb:2,"])

    def test_alreadyGone(self) -> None:
        """
        A message that another agent already removed counts as removed.
        """
        os.unlink(os.path.join(self.path, "new", "1.a"))
        self.assertEqual(list(self.successResultOf(self.drop.commit([0, 1], []))), [])
        self.assertEqual(self.remaining(), ["3.c", "4.d"])

    def test_deliveredDuringSession(self) -> None:
        """
        Mail delivered during the session is never removed, even when every listed message is.
        """
        self.deliver(self.path, "new", "5.e", b"a\n")
        self.deliver(self.path, "cur", "0.z:2,", b"a\n")
        self.assertEqual(list(self.successResultOf(self.drop.commit(range(4), []))), [])
        self.assertEqual(self.remaining(), ["5.e", "0.z:2,"])

    def test_unlinkFailure(self) -> None:
        """
        A message that cannot be removed is reported by index, the others are still removed,
        and the cause is logged (R23).
        """
        self.failOn("unlink", lambda path: path.endswith("2.b"), errno.EIO)
        self.assertEqual(list(self.successResultOf(self.drop.commit([0, 1, 2], []))), [1])
        self.assertEqual(self.remaining(), ["2.b", "4.d"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_durable(self) -> None:
        """
        After removing, C{commit} syncs the C{cur/} and C{new/} directories (besides the
        index that saves the sizes its listing computed).
        """
        synced: list[tuple[int, int]] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            synced.append((info.st_dev, info.st_ino))
            real(fd)

        self.patch(os, "fsync", fsync)
        self.successResultOf(self.drop.commit([0], []))
        expected = set()
        for subdirectory in ("cur", "new"):
            info = os.stat(os.path.join(self.path, subdirectory))
            expected.add((info.st_dev, info.st_ino))
        self.assertEqual(expected - set(synced), set())

    def test_syncFailure(self) -> None:
        """
        When a directory cannot be synced, the messages removed from it are reported as not
        removed, since the removal may not survive a crash.
        """
        os.rename(os.path.join(self.path, "new", "2.b"), os.path.join(self.path, "cur", "2.b:2,S"))

        def fsync(fd: int) -> None:
            if os.path.samestat(os.fstat(fd), os.stat(os.path.join(self.path, "new"))):
                raise _oserror(errno.EIO)

        self.patch(os, "fsync", fsync)
        self.assertEqual(list(self.successResultOf(self.drop.commit([0, 1, 2], []))), [0, 2])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_badIndex(self) -> None:
        """
        An index outside the listing is an L{IndexError}, and nothing is removed.
        """
        self.assertRaises(IndexError, self.drop.commit, [0, 4], [])
        self.assertRaises(IndexError, self.drop.commit, [-1], [])
        self.assertEqual(self.remaining(), self.names)

    def test_closeRemovesNothing(self) -> None:
        """
        Closing without committing removes nothing (R24); closing is idempotent and leaves the
        lock file in place.
        """
        self.successResultOf(self.drop.close())
        self.successResultOf(self.drop.close())
        self.assertEqual(self.remaining(), self.names)
        self.assertTrue(os.path.exists(os.path.join(self.path, "popd.lock")))


class RetrievalTests(_MaildirTestCase):
    """
    Tests for the retrievals that L{Maildir.commit} records: the times kept in the index for
    the EXPIRE policy (RFC 2449 section 6.7), and the C{S} flag given as Dovecot does.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.makeMaildir()
        self.index = os.path.join(self.path, "popd-index")
        self.names = ["1.a", "2.b", "3.c", "4.d"]
        for name in self.names:
            self.deliver(self.path, "new", name, b"a\n")
        self.now = 1700000100.75

    def clock(self) -> float:
        return self.now

    def commitSession(
        self, deleted: Sequence[int], retrieved: Sequence[int]
    ) -> tuple[list[int], list[MessageInfo]]:
        """
        Run a session that lists the Maildir, commits and closes.

        @return: what C{commit} reported and what the session listed.
        """
        drop = openMaildir(self.path, clock=self.clock)
        try:
            listed = list(self.listing(drop))
            result = list(self.successResultOf(drop.commit(deleted, retrieved)))
        finally:
            drop.close()
        return result, listed

    def nextListing(self) -> list[MessageInfo]:
        """
        @return: the listing of a new session, which is then closed.
        """
        drop = openMaildir(self.path, clock=self.clock)
        try:
            return list(self.listing(drop))
        finally:
            drop.close()

    def retrievedAt(self) -> list[float | None]:
        return [info.retrievedAt for info in self.nextListing()]

    def files(self) -> dict[str, bytes]:
        """
        @return: the content of every message file, by C{<subdirectory>/<file name>}.
        """
        found = {}
        for subdirectory in ("new", "cur"):
            for name in os.listdir(os.path.join(self.path, subdirectory)):
                with open(os.path.join(self.path, subdirectory, name), "rb") as f:
                    found[f"{subdirectory}/{name}"] = f.read()
        return found

    def readIndex(self) -> bytes:
        with open(self.index, "rb") as f:
            return f.read()

    def test_recorded(self) -> None:
        """
        Messages retrieved in a session that commits get a retrieval time, in whole seconds,
        which the next session lists; the others have none (RFC 2449 section 6.7 (EXPIRE)).
        The index is written durably, as for sizes, and no temporary file is left.
        """
        result, listed = self.commitSession([], [0, 2])
        self.assertEqual(result, [])
        self.assertEqual(listed, [MessageInfo(3, name.encode()) for name in self.names])
        self.assertEqual(self.retrievedAt(), [1700000100.0, None, 1700000100.0, None])
        self.assertEqual(
            self.readIndex(),
            _signedIndex([b"3 1.a 1700000100", b"3 2.b", b"3 3.c 1700000100", b"3 4.d"]),
        )
        self.assertEqual(
            sorted(os.listdir(self.path)), ["cur", "new", "popd-index", "popd.lock", "tmp"]
        )

    def test_notOverwritten(self) -> None:
        """
        A retrieval time survives a restart, and a later retrieval does not replace it: the
        time is that of the first retrieval (RFC 2449 section 6.7 (EXPIRE)).  A session that
        records no new retrieval does not write the index.
        """
        self.now = 1000
        self.commitSession([], [1])
        self.now = 2000
        self.patch(os, "replace", lambda *args: self.fail("the index was written again"))
        self.commitSession([], [1])
        self.assertEqual(self.retrievedAt(), [None, 1000.0, None, None])

    def test_laterRetrievals(self) -> None:
        """
        Messages first retrieved in a later session get that session's time; earlier times
        are kept.
        """
        self.now = 1000
        self.commitSession([], [0])
        self.now = 2000
        self.commitSession([], [0, 3])
        self.assertEqual(self.retrievedAt(), [1000.0, None, None, 2000.0])

    def test_withoutCommit(self) -> None:
        """
        A session that reads messages but never commits records nothing and renames nothing
        (R24).
        """
        before = self.files()
        drop = self.openDrop(self.path)
        self.listing(drop)
        self.readAll(self.successResultOf(drop.open(0)))
        drop.close()
        self.assertEqual(self.files(), before)
        self.assertEqual(self.retrievedAt(), [None] * 4)

    def test_deletionWins(self) -> None:
        """
        A message both deleted and retrieved is removed, never renamed nor recorded; the
        others are (R23).
        """
        renamed: list[str] = []
        realRename = os.rename

        def rename(source: str, destination: str) -> None:
            renamed.append(os.path.basename(source))
            realRename(source, destination)

        self.patch(os, "rename", rename)
        self.assertEqual(self.commitSession([1], [1, 2])[0], [])
        self.assertEqual(renamed, ["3.c"])
        self.assertEqual(sorted(self.files()), ["cur/3.c:2,S", "new/1.a", "new/4.d"])
        self.assertEqual(self.retrievedAt(), [None, 1700000100.0, None])

    def test_pruned(self) -> None:
        """
        The index written at commit has no entry for the messages the session removed, and
        keeps those of the messages it could not remove (R23).
        """
        self.nextListing()
        self.failOn("unlink", lambda path: path.endswith("4.d"), errno.EIO)
        self.assertEqual(self.commitSession([0, 3], [1])[0], [3])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.readIndex(), _signedIndex([b"3 2.b 1700000100", b"3 3.c", b"3 4.d"]))

    def test_seenFlag(self) -> None:
        """
        A retrieved message is moved from C{new/} to C{cur/} with the C{S} flag added to the
        flags it already has, in sorted order, as Dovecot does; one in C{cur/} gets the flag
        if it lacks it.  Names whose information part is not C{2,} and letters are left alone.
        Base names, and so UIDLs, contents and the number of files never change (R22).
        """
        for name in ["1.a", "2.b", "3.c", "4.d"]:
            os.unlink(os.path.join(self.path, "new", name))
        layout = [
            ("new", "1.a"),
            ("new", "2.b:2,RF"),
            ("cur", "3.c:2,TRF"),
            ("cur", "4.d:2,S"),
            ("cur", "5.e"),
            ("cur", "6.f:2,"),
            ("cur", "7.g:2,Sab"),
            ("cur", "8.h:1,foo"),
            ("cur", "9.i:2,S,x"),
            ("new", "10.j,S=3,W=4:2,aR"),
        ]
        for index, (subdirectory, name) in enumerate(layout):
            self.deliver(self.path, subdirectory, name, b"m%d\n" % (index,))
        before = self.nextListing()
        contents = sorted(self.files().values())
        result, listed = self.commitSession([], range(len(layout)))
        self.assertEqual(result, [])
        self.assertEqual(
            sorted(self.files()),
            sorted(
                [
                    "cur/1.a:2,S",
                    "cur/2.b:2,FRS",
                    "cur/3.c:2,FRST",
                    "cur/4.d:2,S",
                    "cur/5.e:2,S",
                    "cur/6.f:2,S",
                    "cur/7.g:2,Sab",
                    "cur/8.h:1,foo",
                    "cur/9.i:2,S,x",
                    "cur/10.j,S=3,W=4:2,RSa",
                ]
            ),
        )
        self.assertEqual(sorted(self.files().values()), contents)
        after = self.nextListing()
        self.assertEqual(
            [(info.size, info.uidl) for info in after], [(info.size, info.uidl) for info in before]
        )
        self.assertEqual([info.retrievedAt for info in after], [1700000100.0] * len(layout))

    def test_dovecotNames(self) -> None:
        """
        The retrieval of a message whose name carries its size is recorded without a size:
        the index is written at commit although no size was computed, and the name stays the
        authority on the size (RFC 2449 section 6.7 (EXPIRE)).
        """
        for name in self.names:
            os.unlink(os.path.join(self.path, "new", name))
        self.deliver(self.path, "new", "1700000000.M1P2.host,S=3,W=99", b"a\n")
        self.forbidMeasuring()
        self.commitSession([], [0])
        self.assertFalse(os.path.exists(self.index + ".tmp"))
        self.assertEqual(
            self.readIndex(), _signedIndex([b"- 1700000000.M1P2.host,S=3,W=99 1700000100"])
        )
        self.assertEqual(
            self.nextListing(), [MessageInfo(99, b"1700000000.M1P2.host,S=3,W=99", 1700000100.0)]
        )

    def test_version1Index(self) -> None:
        """
        An index of version 1 is read: its sizes are used, and the commit that records a
        retrieval rewrites it in version 2 with those sizes.
        """
        with self.rewriting(self.index) as f:
            f.write(_signedIndex([b"9 1.a", b"8 2.b", b"7 3.c", b"6 4.d"], header=b"popd-index 1"))
        self.forbidMeasuring()
        self.commitSession([], [3])
        self.assertEqual(
            self.readIndex(), _signedIndex([b"9 1.a", b"8 2.b", b"7 3.c", b"6 4.d 1700000100"])
        )
        self.assertEqual(
            self.nextListing(),
            [
                MessageInfo(9, b"1.a"),
                MessageInfo(8, b"2.b"),
                MessageInfo(7, b"3.c"),
                MessageInfo(6, b"4.d", 1700000100.0),
            ],
        )

    def test_corruptNotTrusted(self) -> None:
        """
        An index that fails its checksum is not trusted for retrieval times either: the
        messages look never retrieved, and sizes are computed again.
        """
        self.commitSession([], [0, 1])
        valid = self.readIndex()
        with self.rewriting(self.index) as f:
            f.write(valid.replace(b"1.a 1700000100", b"1.a 1000000000"))
        calls = self.countMeasuring()
        self.assertEqual(self.retrievedAt(), [None] * 4)
        self.assertEqual(len(calls), 4)

    def test_renamedByOtherAgent(self) -> None:
        """
        A message that another agent moved or flagged after the listing is found by base name,
        gets the C{S} flag and keeps the other agent's flags; one another agent removed is
        simply skipped.  Nothing is logged.
        """
        drop = self.openDrop(self.path)
        self.listing(drop)
        os.rename(os.path.join(self.path, "new", "1.a"), os.path.join(self.path, "cur", "1.a:2,R"))
        os.unlink(os.path.join(self.path, "new", "2.b"))
        self.assertEqual(list(self.successResultOf(drop.commit([], [0, 1]))), [])
        self.assertEqual(sorted(self.files()), ["cur/1.a:2,RS", "new/3.c", "new/4.d"])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_destinationTaken(self) -> None:
        """
        When the name a retrieved message would be renamed to already exists (two files with
        one base name), neither file is replaced nor removed.
        """
        drop = self.openDrop(self.path)
        self.listing(drop)
        self.deliver(self.path, "cur", "1.a:2,S", b"other\n")
        self.assertEqual(list(self.successResultOf(drop.commit([], [0]))), [])
        files = self.files()
        self.assertEqual(files["new/1.a"], b"a\n")
        self.assertEqual(files["cur/1.a:2,S"], b"other\n")

    def test_renameFailure(self) -> None:
        """
        When a retrieved message cannot be renamed, it stays where it was, the error is logged,
        the retrieval is still recorded and the deletions still succeed (R23).
        """
        self.failOn("rename", lambda path: path.endswith("2.b"), errno.EIO)
        self.assertEqual(self.commitSession([0], [1, 2])[0], [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(sorted(self.files()), ["cur/3.c:2,S", "new/2.b", "new/4.d"])
        self.assertEqual(self.retrievedAt(), [1700000100.0, 1700000100.0, None])

    def test_rescanFailure(self) -> None:
        """
        When a retrieved message moved by another agent cannot be looked for again because the
        Maildir cannot be scanned, the commit still succeeds; the error is logged.
        """
        drop = self.openDrop(self.path)
        self.listing(drop)
        os.rename(os.path.join(self.path, "new", "1.a"), os.path.join(self.path, "cur", "1.a:2,"))
        self.failOn("scandir", lambda path: True, errno.EIO)
        self.assertEqual(list(self.successResultOf(drop.commit([1], [0]))), [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(sorted(self.files()), ["cur/1.a:2,", "new/3.c", "new/4.d"])

    def assertIndexFailureTolerated(self, name: str, code: int) -> None:
        """
        Make C{os.<name>} fail with C{code} for the index, and assert that a commit still
        removes and renames, reports nothing as not removed, logs one error and leaves no
        temporary file, and that the retrieval is simply not recorded (R23).
        """
        self.nextListing()
        failing = [True]
        self.failOn(name, lambda path: failing[0] and path == self.index + ".tmp", code)
        self.assertEqual(self.commitSession([0], [1])[0], [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        failing[0] = False
        self.assertEqual(sorted(self.files()), ["cur/2.b:2,S", "new/3.c", "new/4.d"])
        self.assertFalse(os.path.exists(self.index + ".tmp"))
        self.assertEqual(self.retrievedAt(), [None, None, None])

    def test_indexFull(self) -> None:
        """
        A full disk (C{ENOSPC} creating the temporary index) does not fail the commit.
        """
        self.assertIndexFailureTolerated("open", errno.ENOSPC)

    def test_indexReplaceFailure(self) -> None:
        """
        An I/O error (C{EIO}) replacing the index does not fail the commit.
        """
        self.assertIndexFailureTolerated("replace", errno.EIO)

    def test_badClock(self) -> None:
        """
        A clock that gives no usable time records nothing and is logged; the commit succeeds.
        """
        for bad in [float("nan"), float("inf"), -1.0, 1e21]:
            self.now = bad
            self.assertEqual(self.commitSession([], [0])[0], [])
        self.assertEqual(self.retrievedAt(), [None] * 4)

    def test_badIndex(self) -> None:
        """
        A retrieved index outside the listing is an L{IndexError}, and nothing is removed,
        renamed nor recorded.
        """
        drop = self.openDrop(self.path)
        self.listing(drop)

        def index() -> bytes | None:
            return self.readIndex() if os.path.exists(self.index) else None

        before = self.files(), index()
        self.assertRaises(IndexError, drop.commit, [0], [1, 4])
        self.assertRaises(IndexError, drop.commit, [], [-1])
        self.assertEqual((self.files(), index()), before)

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["new", "cur"]),
                st.sampled_from(["", ":2,", ":2,S", ":2,FR", ":2,a", ":1,x", ":2,S,x"]),
                st.booleans(),
                st.booleans(),
            ),
            max_size=8,
        )
    )
    def test_neverLosesProperty(self, layout: list[tuple[str, str, bool, bool]]) -> None:
        """
        Whatever the messages' places and flags and whichever are deleted and retrieved, a
        commit removes exactly the deleted ones and leaves every other one once, with its base
        name and content, and in C{cur/} with the C{S} flag when retrieved and its name allows
        (R22, R23).
        """
        self.path = self.makeMaildir()
        self.index = os.path.join(self.path, "popd-index")
        for number, (subdirectory, information, _, _) in enumerate(layout):
            self.deliver(self.path, subdirectory, f"{number}.m{information}", b"%d\n" % number)
        deleted = [n for n, (_, _, delete, _) in enumerate(layout) if delete]
        retrieved = [n for n, (_, _, _, retrieve) in enumerate(layout) if retrieve]
        self.assertEqual(self.commitSession(deleted, retrieved)[0], [])
        files = self.files()
        byBase = {name.split("/")[1].partition(":")[0]: name for name in files}
        self.assertEqual(len(byBase), len(files))
        self.assertEqual(
            sorted(byBase), sorted(f"{n}.m" for n in range(len(layout)) if n not in deleted)
        )
        for baseName, name in byBase.items():
            number = int(baseName.partition(".")[0])
            self.assertEqual(files[name], b"%d\n" % number)
            subdirectory, information, _, retrieve = layout[number]
            if retrieve and information in ("", ":2,", ":2,S", ":2,FR", ":2,a"):
                self.assertTrue(name.startswith("cur/"), name)
                self.assertIn("S", name.partition(":")[2])
            elif not retrieve:
                self.assertEqual(name, f"{subdirectory}/{baseName}{information}")


class LockTests(_MaildirTestCase):
    """
    Tests for the exclusive lock of a Maildir (R10).
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.makeMaildir()

    def spawnLocker(self, hold: bool) -> subprocess.Popen[str]:
        """
        Start a Python process that tries to lock the Maildir and prints C{locked} or
        C{in-use}; with C{hold}, it keeps the lock until its standard input closes.
        """
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [_PROJECT, *filter(None, [environment.get("PYTHONPATH")])]
        )
        process = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, self.path],
            stdin=subprocess.PIPE if hold else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=environment,
            text=True,
        )
        self.addCleanup(self.reap, process)
        return process

    def reap(self, process: subprocess.Popen[str]) -> None:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)

    def otherProcess(self) -> str:
        """
        @return: what another process reports when it tries to take the lock.
        """
        process = self.spawnLocker(hold=False)
        output, _ = process.communicate(timeout=30)
        return output.strip()

    def test_sameProcess(self) -> None:
        """
        A second session of the same process gets L{MaildropInUse} until the first closes.
        """
        drop = openMaildir(self.path)
        self.assertRaises(MaildropInUse, openMaildir, self.path)
        drop.close()
        self.openDrop(self.path)

    def test_realPath(self) -> None:
        """
        Locks are per Maildir, not per path: a symbolic link to a locked Maildir is in use.
        """
        link = os.path.abspath(self.mktemp())
        os.symlink(self.path, link)
        self.openDrop(self.path)
        self.assertRaises(MaildropInUse, openMaildir, link)

    def test_otherProcess(self) -> None:
        """
        Another process gets L{MaildropInUse} while this one holds the lock, and the lock once
        it is released.
        """
        drop = openMaildir(self.path)
        self.assertEqual(self.otherProcess(), "in-use")
        drop.close()
        self.assertEqual(self.otherProcess(), "locked")

    def test_refusalKeepsLock(self) -> None:
        """
        Refusing a second session of this process does not release the first one's lock, as
        closing a descriptor of the lock file would.
        """
        self.openDrop(self.path)
        self.assertRaises(MaildropInUse, openMaildir, self.path)
        self.assertEqual(self.otherProcess(), "in-use")

    def test_heldByOtherProcess(self) -> None:
        """
        While another process holds the lock, this one gets L{MaildropInUse}; once that process
        is killed with C{SIGKILL}, the lock is free at once.
        """
        process = self.spawnLocker(hold=True)
        assert process.stdout is not None
        self.assertEqual(process.stdout.readline().strip(), "locked")
        self.assertRaises(MaildropInUse, openMaildir, self.path)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        self.openDrop(self.path)

    def test_lockFileFailure(self) -> None:
        """
        A lock file that cannot be opened fails with L{TemporaryFailure}; the cause is logged.
        """
        failing = [True]
        self.failOn("open", lambda path: failing[0] and path.endswith("popd.lock"), errno.EIO)
        self.assertRaises(TemporaryFailure, openMaildir, self.path)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        failing[0] = False
        self.openDrop(self.path)


# UIDL migration fixtures (R22): Maildirs as Dovecot 2.3 and Courier 5 leave them, with the files
# in which they kept the POP3 UIDLs they gave out.  UIDVALIDITY 1597643564 is 0x5f3a1b2c.
_HOST = "mail.example.org"
_DOVECOT_FILES = [
    ("cur", f"1597643000.M1P100.{_HOST},S=2166,W=2217:2,S"),
    ("cur", f"1597643100.M2P100.{_HOST},S=500,W=510:2,RS"),
    ("new", f"1597643200.M3P100.{_HOST},S=40,W=42"),
    ("cur", f"1597643300.M4P100.{_HOST},S=40,W=42:2,"),
    # Delivered after the migration: not in the file.
    ("new", f"1597643500.M6P100.{_HOST},S=40,W=42"),
]
# Version 3, as Dovecot 2.3 writes it: extension fields, a record with the flags the file had
# when an older Dovecot wrote it, one with pop3_save_uidl's P (and POP3 order and GUID), one with
# an empty P (the base name), and UID 4 expunged.
_DOVECOT_V3 = (
    b"3 V1597643564 N7 G3085f01b7f11094c501100008c4a11c1\n"
    b"1 W2217 S2166 :1597643000.M1P100.mail.example.org,S=2166,W=2217:2,S\n"
    b"2 W510 S500 :1597643100.M2P100.mail.example.org,S=500,W=510\n"
    b"3 G8b5fb0e9c4a11c1501100008c4a11c1 O3 P1597643200.M3P100.legacy W42"
    b" :1597643200.M3P100.mail.example.org,S=40,W=42\n"
    b"5 P W42 :1597643300.M4P100.mail.example.org,S=40,W=42:2,\n"
)
_DOVECOT_V3_UIDLS = [
    b"000000015f3a1b2c",
    b"000000025f3a1b2c",
    b"1597643200.M3P100.legacy",
    b"1597643300.M4P100.mail.example.org,S=40,W=42",
    b"1597643500.M6P100.mail.example.org,S=40,W=42",
]
# Version 1, as Dovecot 1.0 wrote it.
_DOVECOT_V1 = (
    b"1 1597643564 4\n"
    b"1 1597643000.M1P100.mail.example.org,S=2166,W=2217:2,S\n"
    b"3 1597643100.M2P100.mail.example.org,S=500,W=510\n"
)
_COURIER_FILES = [
    ("cur", f"1597643000.M1P100V803I1A2B3C_0.{_HOST},S=2166:2,S"),
    ("cur", f"1597643100.M2P100V803I1A2B3D_0.{_HOST},S=500:2,"),
    ("cur", f"1597643200.M3P100V803I1A2B3E_0.{_HOST},S=40:2,RS"),
    ("new", f"1597643500.M6P100V803I1A2B3F_0.{_HOST},S=40"),
]
# Version 3, as Courier 5 writes it: flags in the names (old ones for the third), the UTF-8 flag,
# and a message with the UIDV 0.
_COURIER_V3 = (
    b"/3 4 1597643564\n"
    b"1597643000.M1P100V803I1A2B3C_0.mail.example.org,S=2166:2,S 2217 1:1597643564:0\n"
    b"1597643100.M2P100V803I1A2B3D_0.mail.example.org,S=500:2, 510 2:1597643564:1\n"
    b"1597643200.M3P100V803I1A2B3E_0.mail.example.org,S=40:2, 42 3:0:0\n"
)
# Version 2, as older Courier versions wrote it: no UTF-8 flag.
_COURIER_V2 = (
    b"/2 3 1597643564\n"
    b"1597643000.M1P100V803I1A2B3C_0.mail.example.org,S=2166:2,S 2217 1:1597643564\n"
    b"1597643100.M2P100V803I1A2B3D_0.mail.example.org,S=500:2, 510 2:1597643564\n"
)


def _warnings(events: Sequence[LogEvent]) -> list[str]:
    """
    @return: the text of the warnings among C{events}.
    """
    return [formatEvent(event) for event in events if event.get("log_level") == LogLevel.warn]


class UIDLMigrationTests(_MaildirTestCase):
    """
    Tests for keeping the UIDLs that Dovecot or Courier gave out on a migrated Maildir (R22).
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = self.makeMaildir()
        self.index = os.path.join(self.path, "popd-index")

    def deliverAll(self, files: Sequence[tuple[str, str]]) -> None:
        for subdirectory, name in files:
            self.deliver(self.path, subdirectory, name, b"a\n")

    def writeFile(self, name: str, data: bytes) -> str:
        """
        Write a file in the Maildir root.

        @return: its path.
        """
        path = os.path.join(self.path, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def readIndex(self) -> bytes:
        with open(self.index, "rb") as f:
            return f.read()

    def session(self, migration: str | None) -> list[bytes]:
        """
        @return: the UIDLs listed by a new session with the UIDL migration C{migration}, which
            is then closed.
        """
        drop = openMaildir(self.path, uidlMigration=migration)
        try:
            return [info.uidl for info in self.listing(drop)]
        finally:
            drop.close()

    def legacyOpens(self, name: str) -> list[str]:
        """
        @return: a list that grows by one item each time the file C{name} of the Maildir root
            is opened.
        """
        opened: list[str] = []
        realOpen = os.open
        target = os.path.join(self.path, name)

        def recordingOpen(path: Any, *args: Any, **kwargs: Any) -> Any:
            if path == target:
                opened.append(path)
            return realOpen(path, *args, **kwargs)

        self.patch(os, "open", recordingOpen)
        return opened

    def assertUniqueValid(self, uidls: Sequence[bytes]) -> None:
        self.assertEqual(len(set(uidls)), len(uidls), uidls)
        for uidl in uidls:
            self.assertTrue(1 <= len(uidl) <= 70, uidl)
            self.assertTrue(all(0x21 <= octet <= 0x7E for octet in uidl), uidl)

    def test_dovecot(self) -> None:
        """
        With the Dovecot migration, messages listed in a C{dovecot-uidlist} of version 3 keep
        the UIDL Dovecot gave: the C{P} extension when there is one (the base name when it is
        empty), else Dovecot's default C{%08Xu%08Xv}.  Records match by base name, whatever
        their flags.  A message not in the file gets popd's own UIDL.  Every choice is saved in
        the index, of version 3 (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.forbidMeasuring()
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        self.assertEqual(
            self.readIndex(),
            _signedIndex(
                [
                    b"- 1597643000.M1P100.mail.example.org,S=2166,W=2217 uidl=000000015f3a1b2c",
                    b"- 1597643100.M2P100.mail.example.org,S=500,W=510 uidl=000000025f3a1b2c",
                    b"- 1597643200.M3P100.mail.example.org,S=40,W=42 uidl=1597643200.M3P100.legacy",
                    b"- 1597643300.M4P100.mail.example.org,S=40,W=42 own",
                    b"- 1597643500.M6P100.mail.example.org,S=40,W=42 own",
                ],
                header=b"popd-index 3",
            ),
        )

    def test_dovecotVersion1(self) -> None:
        """
        A C{dovecot-uidlist} of version 1 gives the UIDLs of Dovecot's default format from its
        UIDs and the UIDVALIDITY of its header (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        self.writeFile("dovecot-uidlist", _DOVECOT_V1)
        self.assertEqual(
            self.session("dovecot"),
            [
                b"000000015f3a1b2c",
                b"000000035f3a1b2c",
                b"1597643200.M3P100.mail.example.org,S=40,W=42",
                b"1597643300.M4P100.mail.example.org,S=40,W=42",
                b"1597643500.M6P100.mail.example.org,S=40,W=42",
            ],
        )

    def test_courier(self) -> None:
        """
        With the Courier migration, messages listed in a C{courierpop3dsizelist} of version 3
        keep the UIDL Courier printed, C{UID<uid>-<uidv>} or C{UID<uid>} when the UIDV is 0,
        matched by base name whatever the flags; others get popd's own (R22).
        """
        self.deliverAll(_COURIER_FILES)
        self.writeFile("courierpop3dsizelist", _COURIER_V3)
        self.assertEqual(
            self.session("courier"),
            [
                b"UID1-1597643564",
                b"UID2-1597643564",
                b"UID3",
                b"1597643500.M6P100V803I1A2B3F_0.mail.example.org,S=40",
            ],
        )

    def test_courierVersion2(self) -> None:
        """
        A C{courierpop3dsizelist} of version 2, without the UTF-8 flag, gives the same UIDLs
        (R22).
        """
        self.deliverAll(_COURIER_FILES)
        self.writeFile("courierpop3dsizelist", _COURIER_V2)
        self.assertEqual(
            self.session("courier"),
            [
                b"UID1-1597643564",
                b"UID2-1597643564",
                b"1597643200.M3P100V803I1A2B3E_0.mail.example.org,S=40",
                b"1597643500.M6P100V803I1A2B3F_0.mail.example.org,S=40",
            ],
        )

    def test_withoutOption(self) -> None:
        """
        Without the option nothing changes: legacy files are not even opened, UIDLs are derived
        from base names, and the index written has no UIDL, in version 2 (R22).
        """
        self.deliverAll(_COURIER_FILES)
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.writeFile("courierpop3dsizelist", _COURIER_V3)
        opened = self.legacyOpens("dovecot-uidlist") + self.legacyOpens("courierpop3dsizelist")
        expected = [name.partition(":")[0].encode() for _, name in _COURIER_FILES]
        self.assertEqual(self.session(None), expected)
        self.assertEqual(self.uidls(self.path), expected)
        self.assertEqual(opened, [])
        self.assertTrue(self.readIndex().startswith(b"popd-index 2\n"))
        self.assertNotIn(b"uidl", self.readIndex())

    def test_keptWhenLegacyRemoved(self) -> None:
        """
        Once served, a legacy UIDL is kept when the legacy file is removed, and with or without
        the option: the index is the source of truth (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        legacy = self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        os.unlink(legacy)
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        self.assertEqual(self.session(None), _DOVECOT_V3_UIDLS)

    def test_keptWhenLegacyRewritten(self) -> None:
        """
        Once chosen, a UIDL is kept when the legacy file is rewritten, whether it then gives
        another UIDL (a new UIDVALIDITY) or lists a message that got popd's own (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        self.writeFile(
            "dovecot-uidlist",
            b"3 V1700000000 N3 G3085f01b7f11094c501100008c4a11c1\n"
            b"1 :1597643000.M1P100.mail.example.org,S=2166,W=2217\n"
            b"2 :1597643500.M6P100.mail.example.org,S=40,W=42\n",
        )
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)

    def test_missingLegacy(self) -> None:
        """
        Without a legacy file, the migration gives popd's own UIDLs and saves them, without a
        warning: a legacy file that appears later (Dovecot's LDA creates one) changes nothing
        (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        own = [name.partition(":")[0].encode() for _, name in _DOVECOT_FILES]
        with capturedLogs() as events:
            self.assertEqual(self.session("dovecot"), own)
        self.assertEqual(_warnings(events), [])
        self.assertTrue(self.readIndex().startswith(b"popd-index 3\n"))
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.assertEqual(self.session("dovecot"), own)

    def test_newMessages(self) -> None:
        """
        A message delivered after the migration gets popd's own UIDL, while the others keep
        theirs.  The legacy file is read only when the index has no UIDL for a listed message,
        and the index written only then (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        opened = self.legacyOpens("dovecot-uidlist")
        replaced: list[str] = []
        realReplace = os.replace

        def replace(source: str, destination: str) -> None:
            replaced.append(destination)
            realReplace(source, destination)

        self.patch(os, "replace", replace)
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        self.assertEqual((opened, replaced), ([], []))
        name = "1597643600.M7P100.mail.example.org,S=3,W=4"
        self.deliver(self.path, "new", name, b"a\n")
        self.assertEqual(self.session("dovecot"), [*_DOVECOT_V3_UIDLS, name.encode()])
        self.assertEqual((len(opened), replaced), (1, [self.index]))
        self.assertIn(name.encode() + b" own\n", self.readIndex())

    def test_legacyOnlyRead(self) -> None:
        """
        The legacy file is only read: sessions that list, retrieve and delete leave its content
        and modification time as they were (R22).
        """
        self.deliverAll(_COURIER_FILES)
        legacy = self.writeFile("courierpop3dsizelist", _COURIER_V3)
        os.utime(legacy, (1000000000, 1000000000))
        before = os.stat(legacy)
        drop = openMaildir(self.path, uidlMigration="courier")
        self.listing(drop)
        self.assertEqual(self.successResultOf(drop.commit([0], [1])), [])
        drop.close()
        self.assertEqual(self.session("courier")[:2], [b"UID2-1597643564", b"UID3"])
        with open(legacy, "rb") as f:
            self.assertEqual(f.read(), _COURIER_V3)
        after = os.stat(legacy)
        self.assertEqual((after.st_mtime_ns, after.st_ino), (before.st_mtime_ns, before.st_ino))

    def test_commitKeepsUidls(self) -> None:
        """
        Recording a retrieval keeps the saved UIDLs in the index (R22).
        """
        self.deliverAll(_COURIER_FILES)
        self.writeFile("courierpop3dsizelist", _COURIER_V3)
        drop = openMaildir(self.path, clock=lambda: 1700000100.5, uidlMigration="courier")
        self.listing(drop)
        self.successResultOf(drop.commit([], [0]))
        drop.close()
        self.assertIn(
            b"\n3 1597643000.M1P100V803I1A2B3C_0.mail.example.org,S=2166 1700000100"
            b" uidl=UID1-1597643564\n",
            self.readIndex(),
        )
        os.unlink(os.path.join(self.path, "courierpop3dsizelist"))
        self.assertEqual(self.session(None)[:3], [b"UID1-1597643564", b"UID2-1597643564", b"UID3"])

    def test_duplicateLegacyUidl(self) -> None:
        """
        When two messages have the same legacy UIDL, the first in listing order (delivery time,
        then base name) keeps it and the other gets popd's own, with a warning (R22).
        """
        self.deliverAll(_DOVECOT_FILES[:3])
        self.writeFile(
            "dovecot-uidlist",
            b"3 V1597643564 N4\n"
            b"1 Psame :1597643000.M1P100.mail.example.org,S=2166,W=2217\n"
            b"2 Psame :1597643100.M2P100.mail.example.org,S=500,W=510\n"
            b"3 Psame :1597643200.M3P100.mail.example.org,S=40,W=42\n",
        )
        with capturedLogs() as events:
            uidls = self.session("dovecot")
        self.assertEqual(
            uidls,
            [
                b"same",
                b"1597643100.M2P100.mail.example.org,S=500,W=510",
                b"1597643200.M3P100.mail.example.org,S=40,W=42",
            ],
        )
        self.assertEqual(len(_warnings(events)), 2)
        self.assertIn("another message has it", _warnings(events)[0])
        self.assertEqual(self.session(None), uidls)

    def test_legacyUidlIsAnothersOwn(self) -> None:
        """
        A legacy UIDL that is popd's own UIDL of another listed message is not used, whichever
        is listed first: both messages get popd's own (R22).
        """
        self.deliverAll(_DOVECOT_FILES[:3])
        first, second, third = [name.partition(":")[0].encode() for _, name in _DOVECOT_FILES[:3]]
        self.writeFile(
            "dovecot-uidlist",
            b"3 V1597643564 N4\n1 P%s :%s\n3 P%s :%s\n" % (third, first, first, third),
        )
        self.assertEqual(self.session("dovecot"), [first, second, third])

    def test_legacyUidlSavedForAnother(self) -> None:
        """
        A legacy UIDL that the index already saved for another message is not used (R22).
        """
        self.deliverAll(_DOVECOT_FILES[:1])
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.assertEqual(self.session("dovecot"), [b"000000015f3a1b2c"])
        self.deliverAll(_DOVECOT_FILES[1:2])
        self.writeFile(
            "dovecot-uidlist",
            b"3 V1597643564 N3\n"
            b"1 :1597643000.M1P100.mail.example.org,S=2166,W=2217\n"
            b"2 P000000015f3a1b2c :1597643100.M2P100.mail.example.org,S=500,W=510\n",
        )
        self.assertEqual(
            self.session("dovecot"),
            [b"000000015f3a1b2c", b"1597643100.M2P100.mail.example.org,S=500,W=510"],
        )

    def test_ownUidlTaken(self) -> None:
        """
        A message delivered later whose own UIDL (its base name) is a UIDL the index saved for
        another message gets a replacement, saved so that it stays the same with or without the
        option, and after the other message is gone (R22).
        """
        self.deliverAll(_COURIER_FILES[:1])
        self.writeFile("courierpop3dsizelist", _COURIER_V3)
        self.assertEqual(self.session("courier"), [b"UID1-1597643564"])
        self.deliver(self.path, "new", "UID1-1597643564", b"a\n")
        uidls = self.session("courier")
        self.assertEqual(uidls[0], b"UID1-1597643564")
        self.assertEqual(len(uidls[1]), 40)
        self.assertUniqueValid(uidls)
        self.assertIn(b" UID1-1597643564 uidl=" + uidls[1] + b"\n", self.readIndex())
        self.assertEqual(self.session(None), uidls)
        os.unlink(os.path.join(self.path, "cur", _COURIER_FILES[0][1]))
        self.assertEqual(self.session(None), uidls[1:])
        self.assertEqual(self.session("courier"), uidls[1:])

    def test_invalidLegacyUidl(self) -> None:
        """
        A legacy UIDL that POP3 does not allow (over 70 octets, or octets outside 0x21-0x7E) is
        not used: the message gets popd's own, and a warning counts them (R22).
        """
        self.deliverAll(_DOVECOT_FILES[:3])
        self.writeFile(
            "dovecot-uidlist",
            b"3 V1597643564 N4\n"
            b"1 P" + b"x" * 71 + b" :1597643000.M1P100.mail.example.org,S=2166,W=2217\n"
            b"2 Pcaf\xc3\xa9 :1597643100.M2P100.mail.example.org,S=500,W=510\n"
            b"3 P" + b"y" * 70 + b" :1597643200.M3P100.mail.example.org,S=40,W=42\n",
        )
        with capturedLogs() as events:
            uidls = self.session("dovecot")
        self.assertEqual(
            uidls,
            [
                b"1597643000.M1P100.mail.example.org,S=2166,W=2217",
                b"1597643100.M2P100.mail.example.org,S=500,W=510",
                b"y" * 70,
            ],
        )
        [warning] = _warnings(events)
        self.assertIn("Ignoring 2 records", warning)

    def assertIgnored(
        self, migration: str, legacy: str, data: bytes, files: Sequence[tuple[str, str]]
    ) -> None:
        """
        Assert that a session with the legacy file C{legacy} holding C{data} lists popd's own
        UIDLs of the messages C{files}, logs one warning that names the file, and saves no
        UIDL, so that a session after the file is repaired still uses it.
        """
        self.writeFile(legacy, data)
        with capturedLogs() as events:
            uidls = self.session(migration)
        self.assertEqual(uidls, [name.partition(":")[0].encode() for _, name in files], data)
        [warning] = _warnings(events)
        self.assertIn(legacy, warning)
        if os.path.exists(self.index):
            self.assertTrue(self.readIndex().startswith(b"popd-index 2\n"), data)

    def test_malformedDovecot(self) -> None:
        """
        A C{dovecot-uidlist} with any line that is not as Dovecot writes it is ignored as a
        whole, with one warning: logins go on with popd's own UIDLs, which are not saved (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        record = b"1 :1597643000.M1P100.mail.example.org,S=2166,W=2217\n"
        malformed = [
            b"",
            b"\n",
            b"garbage\n" + record,
            b"2 V1597643564 N7\n" + record,
            b"3\n" + record,
            b"3 N7\n" + record,
            b"3 V1597643564\n" + record,
            b"3 V0 N7\n" + record,
            b"3 Vx N7\n" + record,
            b"3 V4294967296 N7\n" + record,
            b"1 1597643564\n" + record,
            b"1 1597643564 7 x\n" + record,
            b"1 1597643564 1\n1 1597643000.M1P100.mail.example.org,S=2166,W=2217\n",
            b"3 V1597643564 N7\n0 :a\n",
            b"3 V1597643564 N7\n2 :a\n1 :b\n",
            b"3 V1597643564 N7\n2 :a\n2 :b\n",
            b"3 V1597643564 N7\n4294967295 :a\n",
            b"3 V1597643564 N7\nx :a\n",
            b"3 V1597643564 N7\n1:a\n",
            b"3 V1597643564 N7\n1 W2\n",
            b"3 V1597643564 N7\n1 :\n",
            b"3 V1597643564 N7\n1 ::2,S\n",
            b"3 V1597643564 N7\n1 :cur/a\n",
            b"3 V1597643564 N7\n1 w2 :a\n",
            b"3 V1597643564 N7\n1 2 :a\n",
            b"3 V1597643564 N7\n" + record + b"\n",
        ]
        for data in malformed:
            self.assertIgnored("dovecot", "dovecot-uidlist", data, _DOVECOT_FILES)
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)

    def test_malformedCourier(self) -> None:
        """
        A C{courierpop3dsizelist} whose header is not of version 2 or 3 (Courier's versions 0
        and 1 included) is ignored with one warning, and nothing is saved (R22).
        """
        self.deliverAll(_COURIER_FILES)
        record = b"1597643000.M1P100V803I1A2B3C_0.mail.example.org,S=2166:2,S 2217 1:1597643564:0\n"
        malformed = [
            b"",
            b"garbage\n",
            record,
            b"/1 4 1597643564\n" + record,
            b"/0 4 1597643564\n" + record,
            b"/4 4 1597643564\n" + record,
            b"/3\n" + record,
            b"/3 x 1597643564\n" + record,
            b"/3 4 1597643564 5\n" + record,
            b"/3  4 1597643564\n" + record,
            b"/3 4 1597643564",
        ]
        for data in malformed:
            self.assertIgnored("courier", "courierpop3dsizelist", data, _COURIER_FILES)
        self.writeFile("courierpop3dsizelist", b"/3 4\n" + record)
        self.assertEqual(self.session("courier")[0], b"UID1-1597643564")

    def test_courierSkippedRecords(self) -> None:
        """
        Records of a C{courierpop3dsizelist} that Courier would skip are skipped, as are both
        records of a base name listed twice; the others are used, and one warning counts those
        left out (R22).
        """
        self.deliverAll(_COURIER_FILES)
        own = [name.partition(":")[0].encode() for _, name in _COURIER_FILES]
        self.writeFile(
            "courierpop3dsizelist",
            b"/3 9 1597643564\n"
            b"\n"
            b"garbage\n"
            b"1597643000.M1P100V803I1A2B3C_0.mail.example.org,S=2166:2,S 2217 0:1597643564:0\n"
            b"1597643000.M1P100V803I1A2B3C_0.mail.example.org,S=2166:2,S 2217 x:1597643564:0\n"
            b"1597643100.M2P100V803I1A2B3D_0.mail.example.org,S=500:2, 510 2:1597643564:1\n"
            b"1597643200.M3P100V803I1A2B3E_0.mail.example.org,S=40:2, 42 3:1597643564:0\n"
            b"1597643200.M3P100V803I1A2B3E_0.mail.example.org,S=40:2,S 42 4:1597643564:0\n"
            b"cur/1597643500.M6P100V803I1A2B3F_0.mail.example.org,S=40 42 5:1597643564:0\n"
            b"1597643500.M6P100V803I1A2B3F_0.mail.example.org,S=40 42 6:1597643564:0:",
        )
        with capturedLogs() as events:
            uidls = self.session("courier")
        self.assertEqual(uidls, [own[0], b"UID2-1597643564", own[2], own[3]])
        [warning] = _warnings(events)
        self.assertIn("Ignoring 7 records", warning)

    def test_dovecotDuplicateRecord(self) -> None:
        """
        When two records of a C{dovecot-uidlist} name the same base name, the later one counts,
        as for Dovecot (R22).
        """
        self.deliverAll(_DOVECOT_FILES[:1])
        self.writeFile(
            "dovecot-uidlist",
            b"3 V1597643564 N3\n"
            b"1 :1597643000.M1P100.mail.example.org,S=2166,W=2217:2,\n"
            b"2 :1597643000.M1P100.mail.example.org,S=2166,W=2217:2,S\n",
        )
        self.assertEqual(self.session("dovecot"), [b"000000025f3a1b2c"])

    def test_unterminatedRecord(self) -> None:
        """
        A last line without a newline, which Dovecot may be appending, is not read, whether it
        looks complete or not; the lines before are used (R22).
        """
        self.deliverAll(_DOVECOT_FILES[:2])
        own = _DOVECOT_FILES[1][1].partition(":")[0].encode()
        header = b"3 V1597643564 N3\n1 :1597643000.M1P100.mail.example.org,S=2166,W=2217\n"
        for tail in [b"2 P1597", b"2 Pcut :" + own]:
            self.writeFile("dovecot-uidlist", header + tail)
            with capturedLogs() as events:
                self.assertEqual(self.session("dovecot"), [b"000000015f3a1b2c", own])
            self.assertEqual(_warnings(events), [])
            os.unlink(self.index)

    def test_unreadable(self) -> None:
        """
        A legacy file that cannot be opened or read is ignored with a warning; nothing is saved,
        so that the next session, once it can be read, still uses it (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        legacy = self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        failing = {"open": True, "read": False}
        realOpen, realRead = os.open, os.read
        legacyFDs: set[int] = set()

        def faultyOpen(path: Any, *args: Any, **kwargs: Any) -> Any:
            if path == legacy and failing["open"]:
                raise _oserror(errno.EACCES)
            fd = realOpen(path, *args, **kwargs)
            if path == legacy:
                legacyFDs.add(fd)
            return fd

        def faultyRead(fd: int, size: int) -> bytes:
            if fd in legacyFDs and failing["read"]:
                raise _oserror(errno.EIO)
            return realRead(fd, size)

        self.patch(os, "open", faultyOpen)
        self.patch(os, "read", faultyRead)
        own = [name.partition(":")[0].encode() for _, name in _DOVECOT_FILES]
        for fault in ["open", "read"]:
            failing.update({"open": False, "read": False, fault: True})
            with capturedLogs() as events:
                self.assertEqual(self.session("dovecot"), own)
            [warning] = _warnings(events)
            self.assertIn("unreadable", warning)
            self.assertFalse(os.path.exists(self.index))
        failing["read"] = False
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)

    def test_notRegularFile(self) -> None:
        """
        A legacy file that is a directory, a FIFO (opened without blocking) or a symbolic link
        (even to a valid file) is ignored with a warning (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        legacy = os.path.join(self.path, "dovecot-uidlist")
        target = os.path.abspath(self.mktemp())
        with open(target, "wb") as f:
            f.write(_DOVECOT_V3)
        own = [name.partition(":")[0].encode() for _, name in _DOVECOT_FILES]
        for make, remove in [
            (os.mkdir, os.rmdir),
            (os.mkfifo, os.unlink),
            (lambda path: os.symlink(target, path), os.unlink),
        ]:
            make(legacy)
            with capturedLogs() as events:
                self.assertEqual(self.session("dovecot"), own)
            self.assertEqual(len(_warnings(events)), 1)
            remove(legacy)

    def test_tooLarge(self) -> None:
        """
        A legacy file larger than the limit is ignored with a warning (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.patch(maildir, "_LEGACY_MAX_SIZE", len(_DOVECOT_V3) - 1)
        with capturedLogs() as events:
            self.assertEqual(
                self.session("dovecot"),
                [name.partition(":")[0].encode() for _, name in _DOVECOT_FILES],
            )
        [warning] = _warnings(events)
        self.assertIn("larger than", warning)
        self.patch(maildir, "_LEGACY_MAX_SIZE", len(_DOVECOT_V3))
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)

    def test_warnedOnceASession(self) -> None:
        """
        A malformed legacy file is read and warned about once a session, however many times
        the session lists, and again in the next session (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        opened = self.legacyOpens("dovecot-uidlist")
        self.writeFile("dovecot-uidlist", b"garbage\n")
        with capturedLogs() as events:
            drop = openMaildir(self.path, uidlMigration="dovecot")
            self.listing(drop)
            self.listing(drop)
            drop.close()
        self.assertEqual((len(_warnings(events)), len(opened)), (1, 1))
        with capturedLogs() as events:
            self.session("dovecot")
        self.assertEqual((len(_warnings(events)), len(opened)), (1, 2))

    def test_realm(self) -> None:
        """
        L{MaildirRealm} passes its C{uidlMigration} down to the Maildirs it opens (R22).
        """
        self.deliverAll(_COURIER_FILES)
        self.writeFile("courierpop3dsizelist", _COURIER_V3)
        root = os.path.dirname(self.path)
        realm = MaildirRealm(root + "/%u", uidlMigration="courier")
        _, drop, logout = self.successResultOf(
            realm.requestAvatar(os.path.basename(self.path).encode(), None, IMaildrop)
        )
        self.addCleanup(logout)
        self.assertEqual(self.listing(drop)[0].uidl, b"UID1-1597643564")

    def test_unknownMigration(self) -> None:
        """
        Any C{uidlMigration} but C{"dovecot"}, C{"courier"} and L{None} is a L{ValueError}
        from the realm's constructor and from L{openMaildir}, which then locks nothing (R22).
        """
        for bad in ["", "Dovecot", "COURIER", "maildir", "dovecot "]:
            self.assertRaises(ValueError, MaildirRealm, "/var/mail/%u", uidlMigration=bad)
            self.assertRaises(ValueError, openMaildir, self.path, uidlMigration=bad)
        self.assertEqual(self.session("courier"), [])
        MaildirRealm("/var/mail/%u", "dovecot")

    def test_version2Index(self) -> None:
        """
        An index of version 2 is read with its sizes and retrieval times, and the migration
        rewrites it in version 3 with them and the UIDLs (R22).
        """
        self.deliverAll(_COURIER_FILES)
        self.writeFile("courierpop3dsizelist", _COURIER_V3)
        names = [name.partition(":")[0].encode() for _, name in _COURIER_FILES]
        with self.rewriting(self.index) as f:
            f.write(
                _signedIndex(
                    [b"9 " + names[0] + b" 1700000000", b"8 " + names[1], b"7 " + names[2]]
                )
            )
        calls = self.countMeasuring()
        drop = self.openDrop(self.path)
        drop.close()
        drop = openMaildir(self.path, uidlMigration="courier")
        listed = list(self.listing(drop))
        drop.close()
        self.assertEqual(
            listed,
            [
                MessageInfo(9, b"UID1-1597643564", 1700000000.0),
                MessageInfo(8, b"UID2-1597643564"),
                MessageInfo(7, b"UID3"),
                MessageInfo(3, names[3]),
            ],
        )
        self.assertEqual(len(calls), 1)
        self.assertEqual(
            self.readIndex(),
            _signedIndex(
                [
                    b"9 " + names[0] + b" 1700000000 uidl=UID1-1597643564",
                    b"8 " + names[1] + b" uidl=UID2-1597643564",
                    b"7 " + names[2] + b" uidl=UID3",
                    b"3 " + names[3] + b" own",
                ],
                header=b"popd-index 3",
            ),
        )

    def test_version1Index(self) -> None:
        """
        An index of version 1 is read with its sizes, and the migration rewrites it in version 3
        with them and the UIDLs (R22).
        """
        self.deliverAll(_COURIER_FILES[:2])
        self.writeFile("courierpop3dsizelist", _COURIER_V2)
        names = [name.partition(":")[0].encode() for _, name in _COURIER_FILES[:2]]
        with self.rewriting(self.index) as f:
            f.write(_signedIndex([b"9 " + names[0], b"8 " + names[1]], header=b"popd-index 1"))
        self.forbidMeasuring()
        drop = openMaildir(self.path, uidlMigration="courier")
        listed = list(self.listing(drop))
        drop.close()
        self.assertEqual(
            listed, [MessageInfo(9, b"UID1-1597643564"), MessageInfo(8, b"UID2-1597643564")]
        )
        self.assertEqual(
            self.readIndex(),
            _signedIndex(
                [
                    b"9 " + names[0] + b" uidl=UID1-1597643564",
                    b"8 " + names[1] + b" uidl=UID2-1597643564",
                ],
                header=b"popd-index 3",
            ),
        )

    def test_version3Index(self) -> None:
        """
        An index of version 3 is trusted: its UIDLs, C{own} or given, with or without a size
        and a retrieval time, are served without reading the legacy file (R22).
        """
        self.deliverAll(_DOVECOT_FILES[:4])
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        names = [name.partition(":")[0].encode() for _, name in _DOVECOT_FILES[:4]]
        with self.rewriting(self.index) as f:
            f.write(
                _signedIndex(
                    [
                        b"- " + names[0] + b" uidl=a",
                        b"5 " + names[1] + b" 1700000000 uidl=%21%",
                        b"- " + names[2] + b" 1700000001 own",
                        b"6 " + names[3] + b" own",
                    ],
                    header=b"popd-index 3",
                )
            )
        opened = self.legacyOpens("dovecot-uidlist")
        self.patch(os, "replace", lambda *args: self.fail("the index was written again"))
        drop = openMaildir(self.path, uidlMigration="dovecot")
        listed = list(self.listing(drop))
        drop.close()
        self.assertEqual(
            listed,
            [
                MessageInfo(2217, b"a"),
                MessageInfo(510, b"%21%", 1700000000.0),
                MessageInfo(42, names[2], 1700000001.0),
                MessageInfo(42, names[3]),
            ],
        )
        self.assertEqual(opened, [])

    def test_version3IndexCorrupt(self) -> None:
        """
        An index of version 3 with any bad UIDL field, two messages with one UIDL, or UIDL fields
        in an older version is ignored whole: sizes are computed again, and the UIDLs found again
        in the legacy file (R22).
        """
        self.deliverAll(_COURIER_FILES[:2])
        self.writeFile("courierpop3dsizelist", _COURIER_V3)
        a, b = [name.partition(":")[0].encode() for _, name in _COURIER_FILES[:2]]
        corrupt = [
            _signedIndex([b"3 " + a + b" uidl=", b"3 " + b], header=b"popd-index 3"),
            _signedIndex([b"3 " + a + b" uidl=" + b"x" * 71, b"3 " + b], header=b"popd-index 3"),
            _signedIndex([b"3 " + a + b" uidl=x", b"3 " + b + b" uidl=x"], header=b"popd-index 3"),
            _signedIndex([b"3 " + a + b" own", b"3 " + b + b" uidl=" + a], header=b"popd-index 3"),
            _signedIndex([b"3 " + a + b" OWN", b"3 " + b], header=b"popd-index 3"),
            _signedIndex([b"3 " + a + b" own own", b"3 " + b], header=b"popd-index 3"),
            _signedIndex([b"3 " + a + b" own 17", b"3 " + b], header=b"popd-index 3"),
            _signedIndex([b"3 " + a + b" uidl=x y", b"3 " + b], header=b"popd-index 3"),
            _signedIndex([b"3 " + a + b"  own", b"3 " + b], header=b"popd-index 3"),
            _signedIndex([b"- " + a, b"3 " + b], header=b"popd-index 3"),
            _signedIndex([b"3 " + a + b" own", b"3 " + b]),
            _signedIndex([b"3 " + a + b" uidl=x", b"3 " + b]),
            _signedIndex([b"3 " + a + b" own", b"3 " + b], header=b"popd-index 1"),
        ]
        calls = self.countMeasuring()
        for data in corrupt:
            with self.rewriting(self.index) as f:
                f.write(data)
            del calls[:]
            self.assertEqual(self.session("courier"), [b"UID1-1597643564", b"UID2-1597643564"])
            self.assertEqual(len(calls), 2, data)

    def test_retriedWithReusedListing(self) -> None:
        """
        A legacy file that could not be used is read again by the next session even when it
        reuses the saved listing as it is: once repaired, its UIDLs are served and saved, and
        the session after reads neither it nor the directories (R22).
        """
        _settle(self)
        self.patch(maildir, "_CACHE_MINIMUM", 0)
        self.deliverAll(_DOVECOT_FILES)
        self.writeFile("dovecot-uidlist", b"garbage\n")
        own = [name.partition(":")[0].encode() for _, name in _DOVECOT_FILES]
        with capturedLogs():
            self.assertEqual(self.session("dovecot"), own)
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        opened = self.legacyOpens("dovecot-uidlist")
        self.patch(os, "scandir", lambda path: self.fail("a directory was read"))
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        self.assertEqual(opened, [])

    def test_indexWriteFailure(self) -> None:
        """
        When the index cannot be saved, the session still serves the legacy UIDLs (the error is
        logged), and the next session chooses them again (R22).
        """
        self.deliverAll(_DOVECOT_FILES)
        self.writeFile("dovecot-uidlist", _DOVECOT_V3)
        failing = [True]
        self.failOn("replace", lambda path: failing[0], errno.ENOSPC)
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertFalse(os.path.exists(self.index))
        failing[0] = False
        self.assertEqual(self.session("dovecot"), _DOVECOT_V3_UIDLS)
        self.assertTrue(self.readIndex().startswith(b"popd-index 3\n"))

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["1.a", "1.b", "2.a", "UID1", "x", "2.a:2,S"]),
                st.one_of(st.none(), st.sampled_from(["", "1.a", "1.b", "x", "UID1", "2.a"])),
            ),
            max_size=8,
        ),
        st.lists(st.sampled_from(["1.a", "1.b", "2.a", "UID1", "x", "3.n"]), max_size=3),
    )
    def test_uniqueStableProperty(
        self, records: list[tuple[str, str | None]], later: list[str]
    ) -> None:
        """
        Whatever the legacy UIDLs, including ones that repeat or equal other messages' base
        names, every listed UIDL is valid and unique, and each message keeps its UIDL in later
        sessions, when messages are delivered or removed and the legacy file changes (R22).
        """
        self.path = self.makeMaildir()
        self.index = os.path.join(self.path, "popd-index")
        delivered: dict[str, str] = {}
        for fileName, _ in records:
            baseName = fileName.partition(":")[0]
            if baseName not in delivered:
                delivered[baseName] = os.path.join("cur", fileName)
                self.deliver(self.path, "cur", fileName, b"a\n")

        def uidlist(header: bytes, pop3s: Sequence[str | None]) -> bytes:
            lines = [header]
            for uid, ((fileName, _), pop3) in enumerate(zip(records, pop3s, strict=True), 1):
                extension = b"" if pop3 is None else b"P" + pop3.encode() + b" "
                lines.append(b"%d %s:%s\n" % (uid, extension, fileName.encode()))
            return b"".join(lines)

        pop3s = [pop3 for _, pop3 in records]
        self.writeFile("dovecot-uidlist", uidlist(b"3 V1597643564 N100\n", pop3s))

        def session(migration: str | None) -> dict[str, bytes]:
            """
            @return: the UIDLs listed by a new session, by base name, after checking them.
            """
            drop = openMaildir(self.path, uidlMigration=migration)
            try:
                uidls = [info.uidl for info in self.listing(drop)]
                names = list(drop._rows.bases)
            finally:
                drop.close()
            self.assertUniqueValid(uidls)
            return dict(zip(names, uidls, strict=True))

        before = session("dovecot")
        self.assertEqual(sorted(before), sorted(delivered))
        self.writeFile("dovecot-uidlist", uidlist(b"3 V1 N100\n", pop3s[::-1]))
        for baseName in later:
            if baseName in delivered:
                os.unlink(os.path.join(self.path, delivered.pop(baseName)))
            else:
                self.deliver(self.path, "new", baseName, b"a\n")
                delivered[baseName] = os.path.join("new", baseName)
        for migration in ["dovecot", None]:
            after = session(migration)
            self.assertEqual(sorted(after), sorted(delivered))
            for baseName in set(before) & set(after):
                self.assertEqual(before[baseName], after[baseName])
