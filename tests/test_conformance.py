"""
Tests for L{popd.conformance}: the suite run against popd (plain, STLS and implicit TLS), which
must pass it fully; against Dovecot, whose deviations are pinned down one by one; and against
C{twisted.mail.pop3}, whose known defects it must catch, since a suite that cannot fail proves
nothing.

Every server gets the same maildrops (see L{MAIN_MESSAGES}): content chosen so that the checks
of byte-stuffing, line ends, sizes and UTF-8 headers have something to judge.
"""

from __future__ import annotations

import grp
import os
import poplib
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.mail import pop3
from twisted.mail.maildir import StringListMailbox
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from popd import POP3ServerFactory
from popd.conformance import Config, Outcome, Report, Security, run
from popd.cred import PasswdFileChecker, hashPassword
from popd.demo import selfSignedCertificate
from popd.maildir import MaildirRealm, openMaildir
from popd.tls import ReloadableTLSContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
DOVECOT = "/usr/sbin/dovecot"

MAIN, MAIN_PASSWORD = "alice", "correct horse battery"
SCRATCH, SCRATCH_PASSWORD = "scratch", "scratch pass"


def _boundaryMessage() -> bytes:
    """
    A message stored with LF line ends, about 150 kB, with a lone C{.} line starting exactly
    at each power-of-two offset from 4 KiB to 128 KiB, where stores and servers cut their
    reads, each followed by a line starting with C{.}.
    """
    message = bytearray(b"Subject: dots at read boundaries\nFrom: bob@example.org\n\n")
    for boundary in (4096, 8192, 16384, 32768, 65536, 131072):
        while len(message) < boundary - 80:
            message += b"x" * 70 + b"\n"
        message += b"y" * (boundary - len(message) - 1) + b"\n"
        message += b".\n.dot at %d\n" % (boundary,)
    while len(message) < 150_000:
        message += b"z" * 70 + b"\n"
    return bytes(message)


#: What the main user's maildrop holds: what a maildrop for the suite should contain.
MAIN_MESSAGES = [
    # CRLF-stored, with a line starting with ".", a lone "." and a "..": R7, R19.
    (
        b"Subject: stored with CRLF\r\nFrom: bob@example.org\r\n\r\nhello\r\n.hidden\r\n"
        b".\r\n..two dots\r\nend\r\n"
    ),
    # LF-stored: the size must count CRLF (R19).
    b"Subject: stored with LF\nFrom: bob@example.org\n\nbody\n.dot\n.\nlast\n",
    # No final line end: the server adds one before the terminator (R7, R19).
    b"Subject: no final line end\r\n\r\nno final newline",
    _boundaryMessage(),
    # A UTF-8 header field: refused or downgraded outside UTF8 mode (R36).
    "Subject: caf\u00e9\r\nFrom: bob@example.org\r\n\r\nUTF-8 in the header\r\n".encode(),
    b"Subject: tiny\r\n\r\nx\r\n",
]

#: The scratch user's: each run removes one (R23), the other checks need one or two.
SCRATCH_MESSAGES = [b"Subject: scratch %d\r\n\r\nscratch message %d\r\n" % (i, i) for i in range(4)]


def deliver(maildir: FilePath[str], messages: Sequence[bytes]) -> None:
    """
    Deliver messages to a new Maildir, in order, named as an MTA names them.
    """
    for subdirectory in ("new", "cur", "tmp"):
        maildir.child(subdirectory).makedirs(ignoreExistingDirectory=True)
    for serial, message in enumerate(messages, 1):
        maildir.child("new").child(f"{1_700_000_000 + serial}.M{serial}P1.conformance").setContent(
            message
        )


def seed(root: FilePath[str]) -> None:
    """
    Make the main and scratch Maildirs under C{root}, at C{root/<user>/Maildir}.
    """
    deliver(root.descendant([MAIN, "Maildir"]), MAIN_MESSAGES)
    deliver(root.descendant([SCRATCH, "Maildir"]), SCRATCH_MESSAGES)


def config(port: int, security: Security = Security.PLAIN) -> Config:
    """
    The run every server gets: both users, short timeouts, since all is on loopback.
    """
    return Config(
        HOST,
        port,
        MAIN,
        MAIN_PASSWORD,
        security=security,
        scratchUser=SCRATCH,
        scratchPassword=SCRATCH_PASSWORD,
        timeout=5,
        checkTimeout=30,
    )


def outcomes(report: Report, outcome: Outcome) -> set[str]:
    return {result.identifier for result in report.results if result.outcome is outcome}


def detail(report: Report, identifier: str) -> str:
    (result,) = [r for r in report.results if r.identifier == identifier]
    return result.detail


class _ServerMixin:
    """
    Serve a factory on loopback for one test and, at its end, wait for every connection of the
    suite to be closed on the server's side too, so that none outlives the test.
    """

    addCleanup: Callable[..., None]

    def listen(self, factory: Factory[Any]) -> int:
        tracker = WrappingFactory(factory)
        listen = reactor.listenTCP  # type: ignore[attr-defined]
        port: IListeningPort = listen(0, tracker, interface=HOST)
        self.addCleanup(self._stop, port, tracker)
        return port.getHost().port  # type: ignore[attr-defined, no-any-return]

    async def _stop(self, port: IListeningPort, tracker: WrappingFactory) -> None:
        await port.stopListening()
        giveUp = time.monotonic() + 5
        while tracker.protocols and time.monotonic() < giveUp:
            await deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
        for protocol in list(tracker.protocols):
            protocol.transport.abortConnection()  # type: ignore[union-attr]

    def runSuite(self, configuration: Config) -> Deferred[Report]:
        """
        Run the suite in a thread, so that the reactor keeps serving it.
        """
        return deferToThread(run, configuration)

    async def runCommand(self, port: int, *options: str) -> tuple[dict[str, str], str, int]:
        """
        Run C{python -m popd.conformance} against C{port} with both users, in a thread.

        @return: each check's id to its printed line, the last line, and the exit status.
        """
        argv = [
            sys.executable,
            "-m",
            "popd.conformance",
            "--host",
            HOST,
            "--port",
            str(port),
            "--user",
            MAIN,
            "--password",
            MAIN_PASSWORD,
            "--scratch-user",
            SCRATCH,
            "--scratch-password",
            SCRATCH_PASSWORD,
            "--timeout",
            "5",
            *options,
        ]
        result = await deferToThread(
            subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        lines = result.stdout.splitlines()
        self.assertTrue(lines, result.stderr)
        return {line.split()[1]: line for line in lines[:-1]}, lines[-1], result.returncode


class PopdTests(_ServerMixin, TestCase):
    """
    popd passes the suite fully, on Maildirs and a passwd-file, over plain TCP (with STLS
    offered), upgraded with STLS, and over implicit TLS.
    """

    #: Checks that cannot apply to popd's default configuration on loopback.
    SKIPPED: ClassVar[set[str]] = {
        "R8.idleTimeout",  # takes ten minutes
        "R28.loginDelay",  # not configured
        "R29.expireZero",  # EXPIRE NEVER by default
        "R30.systemCodes",  # needs a server failure
        "R34.cleartextRefused",  # loopback counts as secure
        "R37.popURL",  # concerns clients
        "R38.last",  # LAST off by default
    }

    def setUp(self) -> None:
        directory = FilePath(self.mktemp())
        mail = directory.child("mail")
        seed(mail)
        passwd = directory.child("passwd")
        # The main user in plaintext, so that APOP and CRAM-MD5 are offered; the scratch
        # user hashed.
        passwd.setContent(
            f"{MAIN}:{{PLAIN}}{MAIN_PASSWORD}\n"
            f"{SCRATCH}:{hashPassword(SCRATCH_PASSWORD, 'SHA512-CRYPT')}\n".encode()
        )
        pem = directory.child("tls.pem")
        pem.setContent(selfSignedCertificate())
        self.tls = ReloadableTLSContext(pem.path, pem.path)
        portal = Portal(MaildirRealm(mail.path + "/%u/Maildir"), [PasswdFileChecker(passwd)])
        self.factory = POP3ServerFactory(portal, tlsContextFactory=self.tls, authFailureDelay=0)

    async def test_plain(self) -> None:
        """
        Over plain TCP, where popd offers STLS, no check fails; the STLS checks run on plain
        connections.
        """
        report = await self.runSuite(config(self.listen(self.factory)))
        self.assertEqual(report.failures(), set(), "\n".join(report.lines()))
        self.assertEqual(
            outcomes(report, Outcome.SKIP), self.SKIPPED | {"R32.notOnTLS", "R35.implicitTLS"}
        )

    async def test_starttls(self) -> None:
        """
        With every connection upgraded by STLS, no check fails, and C{python -m
        popd.conformance --starttls} exits with status 0.
        """
        lines, summary, status = await self.runCommand(self.listen(self.factory), "--starttls")
        skipped = {check for check, line in lines.items() if line.startswith("SKIP  ")}
        self.assertEqual(skipped, self.SKIPPED | {"R35.implicitTLS"})
        self.assertEqual(
            summary,
            f"{len(lines) - len(skipped)} passed, 0 failed, {len(skipped)} skipped",
            "\n".join(lines.values()),
        )
        self.assertEqual(status, 0)

    async def test_implicitTLS(self) -> None:
        """
        Over implicit TLS, no check fails; STLS is neither offered nor accepted.
        """
        port = self.listen(TLSMemoryBIOFactory(self.tls, False, self.factory))
        report = await self.runSuite(config(port, Security.TLS))
        self.assertEqual(report.failures(), set(), "\n".join(report.lines()))
        plainOnly = {
            "R32.noArguments",
            "R32.afterHandshake",
            "R32.notInTransaction",
            "R33.noInjection",
            "R34.cleartextRefused",
        }
        self.assertEqual(outcomes(report, Outcome.SKIP), self.SKIPPED | plainOnly)


def _freePort() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class DovecotTests(TestCase):
    """
    Dovecot from Debian's C{dovecot-pop3d}, started on loopback with its defaults but for
    paths, users, ports and the mechanisms offered; its deviations are pinned down exactly, so
    that any change shows.
    """

    #: What Dovecot 2.3 fails, and why.
    DEVIATIONS: ClassVar[set[str]] = {
        # "-ERR Message number too large: <the argument>": arguments are echoed whole, so a
        # 600-octet argument makes a 633-octet line, beyond 512.
        "R3.firstLineLength",
        "R3.longArgumentNotEchoed",
        # NOOP, STAT and RSET ignore arguments: "NOOP x" -> +OK.
        "R5.extraArgument",
        # Numbers are parsed after skipping spaces: "LIST  1" -> +OK.
        "R5.doubleSpace",
        # pop3_lock_session defaults to no: two sessions can hold one maildrop.
        "R10.exclusiveLock",
        # A message without a final line end gets CRLF before the terminator, but its size
        # does not count those two octets.
        "R19.octetsReceived",
        # After login CAPA drops USER, SASL and STLS, which RFC 2449 section 5 requires in
        # both states.
        "R25.bothStates",
        # CAPA lists "CAPA", which is no registered capability.
        "R25.registeredTags",
        # "STLS x" starts TLS instead of refusing the argument.
        "R32.noArguments",
    }

    #: The pop3_uidl_format of Dovecot in a test, by test name, when not Dovecot's default.
    UIDL_FORMATS: ClassVar[dict[str, str]] = {
        "test_uidlMigrationFormat": "%v-%Ug.%04Xu-%3f%%",
    }

    def setUp(self) -> None:
        if not os.path.exists(DOVECOT):
            self.skipTest(f"{DOVECOT} is not installed (Debian package dovecot-pop3d)")
        # Not under the test's temporary directory: Dovecot's unprivileged processes cannot
        # enter it (mode 0700), and its sockets' paths must stay short (108 octets).
        runtime = tempfile.mkdtemp(prefix="popd-dovecot-")
        self.addCleanup(shutil.rmtree, runtime, ignore_errors=True)
        os.chmod(runtime, 0o755)
        self.directory = FilePath(runtime)
        self.port = _freePort()
        configuration = self.directory.child("dovecot.conf")
        configuration.setContent(self._configuration().encode())
        log = self.directory.child("dovecot.log")
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", configuration.path],
            stdin=subprocess.DEVNULL,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(self._stop)
        self._waitReady(log)

    def _configuration(self) -> str:
        """
        Write the maildrops and the passwd-file, and return the configuration.  As root, mail
        is served as the C{dovecot} user and logins run as C{dovenull}; otherwise everything
        runs as the current user, without chroots.
        """
        mail = self.directory.child("mail")
        seed(mail)
        if os.getuid() == 0:
            try:
                internal, login = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull")
            except KeyError:
                self.skipTest("the dovecot and dovenull users do not exist")
            owner = internal
            for path in [mail.path, *(p.path for p in mail.walk())]:
                os.chown(path, owner.pw_uid, owner.pw_gid)
            chroot = ""
        else:
            internal = login = owner = pwd.getpwuid(os.getuid())
            chroot = "  chroot =\n"
        uid, gid = owner.pw_uid, owner.pw_gid
        passwd = self.directory.child("passwd")
        passwd.setContent(
            "".join(
                f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{mail.child(user).path}::\n"
                for user, password in ((MAIN, MAIN_PASSWORD), (SCRATCH, SCRATCH_PASSWORD))
            ).encode()
        )
        passwd.chmod(0o644)
        pem = self.directory.child("tls.pem")
        pem.setContent(selfSignedCertificate())
        pem.chmod(0o644)
        return f"""\
base_dir = {self.directory.child("run").path}
state_dir = {self.directory.child("state").path}
log_path = {self.directory.child("dovecot.log").path}
listen = {HOST}
protocols = pop3
ssl = yes
ssl_cert = <{pem.path}
ssl_key = <{pem.path}
first_valid_uid = {uid}
first_valid_gid = {gid}
default_internal_user = {internal.pw_name}
default_internal_group = {grp.getgrgid(internal.pw_gid).gr_name}
default_login_user = {login.pw_name}
# Dovecot offers only PLAIN by default; these make the SASL and APOP checks run.
auth_mechanisms = plain login cram-md5 apop
# Failed logins are answered at once: the suite tries a few on purpose.
auth_failure_delay = 0
mail_location = maildir:{mail.path}/%u/Maildir
pop3_uidl_format = {self.UIDL_FORMATS.get(self._testMethodName, "%08Xu%08Xv")}
passdb {{
  driver = passwd-file
  args = {passwd.path}
}}
userdb {{
  driver = passwd-file
  args = {passwd.path}
}}
service pop3-login {{
{chroot}  inet_listener pop3 {{
    port = {self.port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
# No penalty that doubles the wait of every login from an address that failed one.
service anvil {{
{chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _waitReady(self, log: FilePath[str]) -> None:
        """
        Wait until Dovecot greets, or fail with its log.
        """
        giveUp = time.monotonic() + 15
        while time.monotonic() < giveUp:
            if self.process.poll() is not None:
                self.fail(
                    f"dovecot exited with {self.process.returncode}:\n"
                    + log.getContent().decode("utf-8", "replace")
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as probe:
                    if probe.recv(512).startswith(b"+OK"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.fail(
            "dovecot did not greet within 15 seconds:\n"
            + log.getContent().decode("utf-8", "replace")
        )

    def _stop(self) -> None:
        """
        Stop Dovecot's master, which stops its children.
        """
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    async def test_uidlMigration(self) -> None:
        """
        With C{uidlMigration="dovecot"}, popd gives each message of a Maildir that Dovecot
        served the UIDL that Dovecot gave it, read from the C{dovecot-uidlist} Dovecot wrote
        (R22): Dovecot's default format, in the hex digits Dovecot prints.
        """
        await self._checkMigration("dovecot")

    async def test_uidlMigrationFormat(self) -> None:
        """
        With C{uidlMigration="dovecot:FORMAT"}, the UIDLs are those of Dovecot configured with
        that C{pop3_uidl_format}: variables, modifiers, widths and literal text as Dovecot reads
        them (R22).
        """
        await self._checkMigration("dovecot:" + self.UIDL_FORMATS["test_uidlMigrationFormat"])

    async def _checkMigration(self, source: str) -> None:
        """
        Assert that popd, migrating from C{source}, lists the UIDLs Dovecot lists.
        """

        def dovecotUidls() -> list[bytes]:
            client = poplib.POP3(HOST, self.port, timeout=10)
            client.user(MAIN)
            client.pass_(MAIN_PASSWORD)
            uidls = [line.split()[1] for line in client.uidl()[1]]
            client.quit()
            return uidls

        theirs = await deferToThread(dovecotUidls)
        copy = FilePath(self.mktemp())
        shutil.copytree(self.directory.descendant(["mail", MAIN, "Maildir"]).path, copy.path)
        drop = openMaildir(copy.path, uidlMigration=source)
        try:
            ours = [info.uidl for info in self.successResultOf(drop.listing())]
        finally:
            drop.close()
        self.assertEqual(len(theirs), len(MAIN_MESSAGES))
        self.assertEqual(sorted(ours), sorted(theirs))

    async def test_dovecot(self) -> None:
        """
        Dovecot fails exactly L{DEVIATIONS}; everything else it offers passes.
        """
        report = await deferToThread(run, config(self.port))
        self.assertEqual(report.failures(), self.DEVIATIONS, "\n".join(report.lines()))
        self.assertIn("message 3: LIST 46, received 48", detail(report, "R19.octetsReceived"))
        self.assertEqual(
            detail(report, "R25.bothStates"), "announced before login only: SASL, STLS, USER"
        )


@implementer(IRealm)
class _StringListRealm:
    """
    Hands out Twisted's own in-memory mailbox, over messages shared by the sessions of a user,
    with deletion marks of the session's own.
    """

    def __init__(self, mailboxes: dict[bytes, list[bytes]]) -> None:
        self.mailboxes = mailboxes

    def requestAvatar(
        self, avatarId: bytes, mind: object, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        return pop3.IMailbox, StringListMailbox(self.mailboxes[avatarId]), lambda: None


class _TwistedPOP3Factory(ServerFactory):
    """
    The smallest factory of L{twisted.mail.pop3.POP3} servers: the protocol takes its portal
    from an attribute.
    """

    protocol = pop3.POP3

    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    def buildProtocol(self, address: Any) -> pop3.POP3:
        protocol = super().buildProtocol(address)
        protocol.portal = self.portal  # type: ignore[union-attr]
        return protocol  # type: ignore[return-value]


class TwistedMailTests(_ServerMixin, TestCase):
    """
    C{python -m popd.conformance} catches the known defects of L{twisted.mail.pop3} and exits
    with status 1.
    """

    #: What twisted.mail.pop3 fails, and why.
    DEFECTS: ClassVar[set[str]] = {
        # Unknown commands and bad numbers are echoed: "-ERR Invalid message-number: 999...".
        "R3.firstLineLength",
        "R3.longArgumentNotEchoed",
        # Extra, missing, non-numeric and double-spaced arguments raise TypeError or ValueError
        # inside the error handler, and the connection is dropped.
        "R5.extraArgument",
        "R5.missingArgument",
        "R5.nonNumeric",
        "R5.doubleSpace",
        # DELE takes int(n) - 1 unchecked: DELE 0, DELE -1 and DELE 4294967296 are +OK.
        "R5.zeroNumber",
        "R5.negativeNumber",
        "R5.overflowingNumber",
        # USER after login is +OK.
        "R6.authorizationAfterLogin",
        # LF becomes CRLF by replacement, so a CRLF-stored message is sent with CR CR LF.
        "R7.lineEnds",
        # Byte-stuffing is done per 16 KiB read: a "." line at a read boundary ends the
        # message early.
        "R7.loneDot",
        # No lock: two sessions share a maildrop.
        "R10.exclusiveLock",
        # Deleted messages stay in STAT and LIST with size 0; DELE of a message beyond the
        # last is +OK; QUIT blanks deleted messages instead of removing them.
        "R17.statAfterDele",
        "R18.deletedMessage",
        "R18.nonexistentMessage",
        "R23.quitRemovesMarked",
        # Sizes are stored octets, LF counted as one.
        "R19.octetsReceived",
        # "UIDL n" -> "+OK uid", without the number (twisted#9104).
        "R22.singleLine",
        # CAPA lists PIPELINE (misspelt), CELERITY, AUSPEX and POTENCE.
        "R25.registeredTags",
    }

    async def test_defects(self) -> None:
        """
        The suite fails exactly L{DEFECTS}, and C{python -m popd.conformance} exits with 1.
        """
        mailboxes = {
            MAIN.encode(): list(MAIN_MESSAGES),
            SCRATCH.encode(): list(SCRATCH_MESSAGES),
        }
        checker = InMemoryUsernamePasswordDatabaseDontUse(
            **{MAIN: MAIN_PASSWORD.encode(), SCRATCH: SCRATCH_PASSWORD.encode()}
        )
        port = self.listen(_TwistedPOP3Factory(Portal(_StringListRealm(mailboxes), [checker])))
        lines, summary, status = await self.runCommand(port)
        # twisted.mail.pop3 logs the exceptions it answers with, or drops connections on.
        self.flushLoggedErrors()
        failures = {check for check, line in lines.items() if line.startswith("FAIL  ")}
        self.assertEqual(failures, self.DEFECTS, "\n".join(lines.values()))
        self.assertEqual(status, 1)
        self.assertRegex(summary, rf"^\d+ passed, {len(self.DEFECTS)} failed, \d+ skipped$")
        self.assertIn("DELE 0 -> +OK", lines["R5.zeroNumber"])
        self.assertIn("the server closed the connection", lines["R5.extraArgument"])
        self.assertIn("message 2: LIST 64, received 71", lines["R19.octetsReceived"])
        self.assertIn("PIPELINE", lines["R25.registeredTags"])
        self.assertIn("LIST still lists message", lines["R18.deletedMessage"])


class _Mute(Protocol):
    """
    A server that accepts connections and never says a word.
    """


class HungServerTests(_ServerMixin, TestCase):
    """
    Every read has a timeout: a server that never answers fails the checks, quickly.
    """

    async def test_hung(self) -> None:
        """
        Against a server that accepts connections and sends nothing, every check fails with
        the timeout as the reason, in about the time of the timeouts.
        """
        port = self.listen(Factory.forProtocol(_Mute))
        configuration = replace(config(port), timeout=0.2, select=("R1", "R9", "R15", "R22"))
        started = time.monotonic()
        report = await self.runSuite(configuration)
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(outcomes(report, Outcome.PASS) | outcomes(report, Outcome.SKIP), set())
        for result in report.results:
            self.assertIn("no answer within 0.2 s", result.detail)
