"""
Tests for L{popd.demo}: the files of the demo that C{twistd popd} runs without a store.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import json
import os
import shlex
import stat

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from popd import demo
from popd.cred import PasswdFileChecker
from popd.demo import DemoSetup, prepareDemo
from popd.maildir import expandTemplate


def _mode(path: FilePath[str]) -> int:
    """
    The permission bits of C{path}.
    """
    return stat.S_IMODE(os.stat(path.path).st_mode)


def _messages(setup: DemoSetup) -> list[FilePath[str]]:
    """
    The message files of the demo user's Maildir, C{new/} and C{cur/}.
    """
    return [
        child
        for subdirectory in ("new", "cur")
        for child in setup.maildir.child(subdirectory).children()
    ]


class PrepareDemoTests(SynchronousTestCase):
    """
    L{prepareDemo} creates the demo's files once and reuses them afterwards.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp()).child("popd-demo")

    def test_layout(self) -> None:
        """
        The demo directory holds a passwd-file, the plaintext password, a PEM file and a
        Maildir with C{new}, C{cur} and C{tmp} for user C{demo}, where the L{DemoSetup} says.
        """
        setup = prepareDemo(self.directory)
        self.assertEqual(setup.directory, self.directory)
        self.assertEqual(setup.user, "demo")
        self.assertEqual(setup.passwd, self.directory.child("passwd"))
        self.assertEqual(setup.tls, self.directory.child("tls.pem"))
        self.assertEqual(setup.maildir, self.directory.descendant(["mail", "demo", "Maildir"]))
        for subdirectory in ("new", "cur", "tmp"):
            self.assertTrue(setup.maildir.child(subdirectory).isdir())
        self.assertEqual(
            self.directory.child("demo-password").getContent(),
            f"{setup.password}\n".encode("ascii"),
        )
        self.assertEqual(expandTemplate(setup.maildirTemplate, "demo"), setup.maildir.path)

    def test_modes(self) -> None:
        """
        The secrets (password, passwd-file, private key) are readable by their owner only, and
        so is the demo directory.
        """
        setup = prepareDemo(self.directory)
        self.assertEqual(_mode(self.directory), 0o700)
        for secret in (self.directory.child("demo-password"), setup.passwd, setup.tls):
            self.assertEqual(_mode(secret), 0o600, secret.path)

    def test_randomPassword(self) -> None:
        """
        Each new demo gets its own password, long enough not to be guessed.
        """
        first = prepareDemo(self.directory).password
        second = prepareDemo(FilePath(self.mktemp())).password
        self.assertNotEqual(first, second)
        self.assertGreaterEqual(len(first), 20)

    def test_idempotent(self) -> None:
        """
        A second call reuses everything: the same password, passwd-file and certificate, and
        the Maildir still holds the one welcome message.
        """
        first = prepareDemo(self.directory)
        contents = {
            path: path.getContent()
            for path in (first.passwd, first.tls, self.directory.child("demo-password"))
        }
        second = prepareDemo(self.directory)
        self.assertEqual(second, first)
        for path, content in contents.items():
            self.assertEqual(path.getContent(), content, path.path)
        self.assertEqual(len(_messages(second)), 1)

    def test_noSecondWelcome(self) -> None:
        """
        Once the welcome message is gone (retrieved and deleted), a later start does not
        deliver it again.
        """
        setup = prepareDemo(self.directory)
        for message in _messages(setup):
            message.remove()
        prepareDemo(self.directory)
        self.assertEqual(_messages(setup), [])

    def test_passwdRestored(self) -> None:
        """
        A removed passwd-file is written again for the same password.
        """
        setup = prepareDemo(self.directory)
        setup.passwd.remove()
        again = prepareDemo(self.directory)
        self.assertEqual(again.password, setup.password)
        self.assertTrue(setup.passwd.exists())

    def test_newPasswordRewritesPasswd(self) -> None:
        """
        When the plaintext password is removed, a new one is made and the passwd-file is
        rewritten to match it.
        """
        setup = prepareDemo(self.directory)
        oldEntry = setup.passwd.getContent()
        self.directory.child("demo-password").remove()
        again = prepareDemo(self.directory)
        self.assertNotEqual(again.password, setup.password)
        self.assertNotEqual(again.passwd.getContent(), oldEntry)

    def test_passwdEntry(self) -> None:
        """
        The passwd-file has one line for user C{demo}, hashed with C{SHA512-CRYPT}.
        """
        setup = prepareDemo(self.directory)
        (line,) = setup.passwd.getContent().decode("ascii").splitlines()
        user, hashed = line.split(":", 1)
        self.assertEqual(user, "demo")
        self.assertTrue(hashed.startswith("{SHA512-CRYPT}$6$"), hashed)
        self.assertNotIn(setup.password, line)

    def test_percentInPath(self) -> None:
        """
        A C{%} in the demo directory's path is escaped in the Maildir template.
        """
        directory = FilePath(self.mktemp()).child("100%u")
        setup = prepareDemo(directory)
        self.assertEqual(expandTemplate(setup.maildirTemplate, "demo"), setup.maildir.path)


class WelcomeMessageTests(SynchronousTestCase):
    """
    The demo's Maildir holds one welcome message, a proper RFC 5322 message.
    """

    def setUp(self) -> None:
        self.setup = prepareDemo(FilePath(self.mktemp()))
        (self.path,) = _messages(self.setup)
        self.content = self.path.getContent()

    def test_delivered(self) -> None:
        """
        The message is in C{new/}, as an MTA leaves it, and C{tmp/} is empty.
        """
        self.assertEqual(self.path.parent().basename(), "new")
        self.assertEqual(self.setup.maildir.child("tmp").children(), [])

    def test_headers(self) -> None:
        """
        The message has the headers a mail client expects.
        """
        message = email.message_from_bytes(self.content, policy=email.policy.default)
        for header in ("Date", "From", "To", "Subject", "Message-ID"):
            self.assertIsNotNone(message[header], header)
        self.assertEqual(message["Subject"], "Welcome to popd")
        self.assertIn("demo@localhost", message["To"])
        self.assertEqual(message.defects, [])

    def test_dotLine(self) -> None:
        """
        One line starts with a dot, to show byte-stuffing.
        """
        lines = self.content.split(b"\n")
        self.assertTrue([line for line in lines if line.startswith(b".")])

    def test_lineEnds(self) -> None:
        """
        The message is stored with LF line ends, as MTAs store it, and the file name carries
        Dovecot's sizes: C{S=} as stored and C{W=} with CRLF line ends, as POP3 counts.
        """
        self.assertNotIn(b"\r", self.content)
        self.assertTrue(self.content.endswith(b"\n"))
        name = self.path.basename()
        crlfSize = len(self.content.replace(b"\n", b"\r\n"))
        self.assertTrue(name.endswith(f",S={len(self.content)},W={crlfSize}"), name)

    def test_explains(self) -> None:
        """
        The message tells how to configure popd for real.
        """
        for text in (b"--maildir", b"--passwd", b"--listen", b"--tls-cert", b"twistd popd --help"):
            self.assertIn(text, self.content)


class CertificateTests(SynchronousTestCase):
    """
    The demo's PEM file holds a private key and a self-signed certificate for C{localhost} and
    C{127.0.0.1}.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        self.setup = prepareDemo(self.directory)
        content = self.setup.tls.getContent()
        self.certificate = x509.load_pem_x509_certificate(content)
        self.key = serialization.load_pem_private_key(content, password=None)

    def test_subjectAlternativeNames(self) -> None:
        """
        The certificate names C{localhost} and C{127.0.0.1}.
        """
        names = self.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress), [ipaddress.ip_address("127.0.0.1")]
        )

    def test_selfSigned(self) -> None:
        """
        The certificate is signed by its own key: the key in the same file.
        """
        self.assertEqual(self.certificate.issuer, self.certificate.subject)
        self.certificate.verify_directly_issued_by(self.certificate)
        der = serialization.Encoding.DER
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        self.assertEqual(
            self.key.public_key().public_bytes(der, spki),
            self.certificate.public_key().public_bytes(der, spki),
        )

    def test_validity(self) -> None:
        """
        The certificate is valid now and for at least two more years.
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(self.certificate.not_valid_before_utc, now)
        self.assertGreater(
            self.certificate.not_valid_after_utc, now + datetime.timedelta(days=2 * 365)
        )

    def test_serverCertificate(self) -> None:
        """
        The certificate is for TLS servers and is not a CA.
        """
        extensions = self.certificate.extensions
        self.assertFalse(extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertIn(
            x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
            list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value),
        )

    def test_expiringReplaced(self) -> None:
        """
        A certificate about to expire is replaced on the next start.
        """
        self.patch(demo, "CERTIFICATE_LIFETIME", datetime.timedelta(days=1))
        expiring = prepareDemo(FilePath(self.mktemp())).tls
        before = expiring.getContent()
        self.patch(demo, "CERTIFICATE_LIFETIME", datetime.timedelta(days=365))
        prepareDemo(expiring.parent())
        self.assertNotEqual(expiring.getContent(), before)

    def test_damagedReplaced(self) -> None:
        """
        A PEM file that holds no usable key and certificate is replaced.
        """
        self.setup.tls.setContent(b"-----BEGIN GARBAGE-----\n")
        prepareDemo(self.directory)
        x509.load_pem_x509_certificate(self.setup.tls.getContent())
        self.assertEqual(_mode(self.setup.tls), 0o600)

    def test_fingerprint(self) -> None:
        """
        L{DemoSetup.fingerprint} is the certificate's SHA-256 fingerprint, as C{openssl x509
        -fingerprint -sha256} shows it.
        """
        digest = self.certificate.fingerprint(hashes.SHA256())
        self.assertEqual(self.setup.fingerprint(), digest.hex(":").upper())


class PasswdCheckTests(TestCase):
    """
    The demo's passwd-file works with L{PasswdFileChecker}.
    """

    def test_passwordAccepted(self) -> Deferred[None]:
        """
        The demo password logs in as C{demo}.
        """
        setup = prepareDemo(FilePath(self.mktemp()))
        checker = PasswdFileChecker(setup.passwd.path)
        credentials = UsernamePassword(b"demo", setup.password.encode("ascii"))
        return checker.requestAvatarId(credentials).addCallback(self.assertEqual, b"demo")


class InstructionsTests(SynchronousTestCase):
    """
    L{DemoSetup.instructions} shows the credentials and client commands to paste.
    """

    def setUp(self) -> None:
        self.setup = prepareDemo(FilePath(self.mktemp()).child("a 'quoted' dir"))
        self.text = self.setup.instructions(2110, 2995)

    def test_credentials(self) -> None:
        """
        The user name, the password and the ports are shown.
        """
        self.assertIn("user:      demo\n", self.text)
        self.assertIn(f"password:  {self.setup.password}\n", self.text)
        self.assertIn("127.0.0.1:2110", self.text)
        self.assertIn("127.0.0.1:2995", self.text)

    def test_curl(self) -> None:
        """
        The curl commands use implicit TLS on one port and STLS on the other.
        """
        credentials = f"demo:{self.setup.password}"
        self.assertIn(f"  curl -k pop3s://{credentials}@127.0.0.1:2995/1\n", self.text)
        self.assertIn(f"  curl -k --ssl-reqd pop3://{credentials}@127.0.0.1:2110/1\n", self.text)

    def test_poplib(self) -> None:
        """
        The poplib one-liner is one shell word of valid Python that verifies the certificate
        with the demo's PEM file, whatever characters the path holds.
        """
        (line,) = [line for line in self.text.splitlines() if "python3 -c" in line]
        program, option, code = shlex.split(line)
        self.assertEqual((program, option), ("python3", "-c"))
        compile(code, "<poplib one-liner>", "exec")
        self.assertIn(f"cafile={json.dumps(self.setup.tls.path)}", code)
        self.assertIn(", 2995,", code)
