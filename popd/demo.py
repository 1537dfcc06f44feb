"""
The demo that C{twistd popd} runs when it is given no store: one user, one welcome message, a
self-signed certificate, all in a directory of the current working directory.

It exists so that the first command a newcomer types shows a working server and the client
commands that reach it, and so that the end-to-end tests have a server to talk to.  Everything
it writes is kept and reused: a second start serves the same user with the same password and
certificate, and does not deliver the welcome message again.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shlex
import socket
import tempfile
import time
from dataclasses import dataclass
from email.utils import formatdate

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.python.filepath import FilePath

from popd.cred import hashPassword

#: The demo's only user.
DEMO_USER = "demo"

#: The address the demo listens on: loopback only, since its password is printed.
DEMO_HOST = "127.0.0.1"

#: How long a demo certificate is valid.
CERTIFICATE_LIFETIME = datetime.timedelta(days=3 * 365)

_WELCOME = """\
Date: {date}
From: popd <postmaster@localhost>
To: {user} <{user}@localhost>
Subject: Welcome to popd
Message-ID: <{messageID}@localhost>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello,

this message comes from popd, a POP3 server (RFC 1939) built on Twisted.
You are reading it from the demo that "twistd popd" starts when it is given
no mail store.  The demo keeps its files in
{directory}
and reuses them on every start; remove that directory to start afresh.

The next line starts with a dot.  On the wire popd sends it with a second dot
in front (byte-stuffing, RFC 1939 section 3) and your client removes it again:
.forward, .procmailrc and other dot files are safe in mail.

To serve real mailboxes, point popd at the Maildirs your MTA or Dovecot's LDA
delivers to and at a Dovecot-style passwd-file, and give it a certificate:

  twistd popd \\
      --listen tcp:110 \\
      --tls-listen tcp:995 \\
      --tls-cert /etc/popd/cert.pem --tls-key /etc/popd/key.pem \\
      --maildir /var/mail/%d/%n/Maildir \\
      --passwd /etc/popd/passwd

A passwd-file has one "user:{{SCHEME}}hash" line per user; make one with
  popd-passwd alice@example.org >> /etc/popd/passwd
(or "doveadm pw -s SHA512-CRYPT").

"twistd popd --help" lists every option, and README.rst has the manual.
"""


@dataclass(frozen=True)
class DemoSetup:
    """
    The demo's files, ready to serve.

    @ivar directory: the demo directory holding everything below.
    @ivar user: the user name to log in with.
    @ivar password: that user's password, in plaintext.
    @ivar passwd: the Dovecot-style passwd-file holding the user's password hash.
    @ivar maildirTemplate: the template for L{popd.maildir.MaildirRealm} that maps the user to
        L{maildir}.
    @ivar maildir: the user's Maildir.
    @ivar tls: a PEM file with the private key and the self-signed certificate for C{localhost}
        and C{127.0.0.1}.
    """

    directory: FilePath[str]
    user: str
    password: str
    passwd: FilePath[str]
    maildirTemplate: str
    maildir: FilePath[str]
    tls: FilePath[str]

    def fingerprint(self) -> str:
        """
        The SHA-256 fingerprint of the certificate, for comparing with what a client shows.

        @return: colon-separated upper-case hex pairs.
        """
        certificate = x509.load_pem_x509_certificate(self.tls.getContent())
        return certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    def instructions(self, plainPort: int, tlsPort: int) -> str:
        """
        Explain how to use the running demo: the credentials and client commands that can be
        pasted into a shell.

        @param plainPort: the port of the plain listener, which offers C{STLS}.
        @param tlsPort: the port of the implicit-TLS listener.
        @return: several lines of text, each ending with a newline.
        """
        credentials = f"{self.user}:{self.password}"
        poplibCode = (
            "import poplib, ssl; "
            "context = ssl.create_default_context(cafile={cafile}); "
            "client = poplib.POP3_SSL({host}, {port}, context=context); "
            "client.user({user}); client.pass_({password}); "
            'print(b"\\n".join(client.retr(1)[1]).decode()); client.quit()'
        ).format(
            cafile=json.dumps(self.tls.path),
            host=json.dumps("localhost"),
            port=tlsPort,
            user=json.dumps(self.user),
            password=json.dumps(self.password),
        )
        return (
            f"popd demo: a POP3 server on {DEMO_HOST} for one user with one welcome message.\n"
            "\n"
            f"  user:      {self.user}\n"
            f"  password:  {self.password}\n"
            f"  POP3:      {DEMO_HOST}:{plainPort} (STLS offered), "
            f"{DEMO_HOST}:{tlsPort} (implicit TLS)\n"
            f"  TLS:       self-signed for localhost and {DEMO_HOST}, "
            f"SHA-256 {self.fingerprint()}\n"
            f"  files:     {self.directory.path} (remove it to start afresh)\n"
            "\n"
            "Read the welcome message with any of:\n"
            "\n"
            f"  curl -k pop3s://{credentials}@{DEMO_HOST}:{tlsPort}/1\n"
            f"  curl -k --ssl-reqd pop3://{credentials}@{DEMO_HOST}:{plainPort}/1\n"
            f"  python3 -c {shlex.quote(poplibCode)}\n"
            "\n"
            "For real mailboxes, see: twistd popd --help\n"
        )


def prepareDemo(directory: FilePath[str]) -> DemoSetup:
    """
    Create the demo's files in C{directory}, or reuse those already there.

    Creates, each only when missing: the directory (mode 0700); the plaintext password in
    C{demo-password} and its hash in the passwd-file C{passwd} (both mode 0600); the user's
    Maildir C{mail/demo/Maildir} with the welcome message; and C{tls.pem} (mode 0600), a key
    and a self-signed certificate, replaced only once it is unreadable or about to expire.

    @param directory: the demo directory, created if needed.
    @return: what the demo serves.
    @raise OSError: when the files cannot be written.
    """
    os.makedirs(directory.path, mode=0o700, exist_ok=True)
    password = _preparePassword(directory)
    maildir = directory.descendant(["mail", DEMO_USER, "Maildir"])
    if not maildir.exists():
        _createMaildir(maildir, _welcomeMessage(directory))
    tls = directory.child("tls.pem")
    if not _certificateUsable(tls):
        _writeSecret(tls, selfSignedCertificate())
    return DemoSetup(
        directory=directory,
        user=DEMO_USER,
        password=password,
        passwd=directory.child("passwd"),
        maildirTemplate=directory.child("mail").path.replace("%", "%%") + "/%u/Maildir",
        maildir=maildir,
        tls=tls,
    )


def _preparePassword(directory: FilePath[str]) -> str:
    """
    Reuse the demo password, or make a new one; keep the passwd-file in step with it.

    @param directory: the demo directory.
    @return: the plaintext password.
    """
    plaintext = directory.child("demo-password")
    passwd = directory.child("passwd")
    password = plaintext.getContent().decode("ascii").strip() if plaintext.exists() else ""
    if not password:
        password = secrets.token_urlsafe(16)
        # Written first: should the passwd-file not follow, the next start completes it with
        # this same password.
        _writeSecret(plaintext, f"{password}\n".encode("ascii"))
    elif passwd.exists():
        return password
    entry = f"{DEMO_USER}:{hashPassword(password, 'SHA512-CRYPT')}\n"
    _writeSecret(passwd, entry.encode("ascii"))
    return password


def _writeSecret(path: FilePath[str], content: bytes) -> None:
    """
    Replace the file at C{path} atomically with one readable by its owner only.

    The content goes to a temporary file created with mode 0600 (so it is never readable by
    others, not even briefly), is flushed to disk and renamed over C{path}.

    @param path: the file to write.
    @param content: its new content.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.dirname(), prefix=f".{path.basename()}-")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path.path)
    except BaseException:
        os.unlink(temporary)
        raise


def _createMaildir(maildir: FilePath[str], message: bytes) -> None:
    """
    Create a Maildir holding one new message, atomically: it is assembled next to its final
    place and renamed there, so that an interrupted start never leaves a Maildir without the
    welcome message (a Maildir that exists is never filled again).

    @param maildir: where the Maildir goes; its parent is created if needed.
    @param message: the message, with LF line ends as an MTA stores it.
    """
    parent = maildir.parent()
    parent.makedirs(ignoreExistingDirectory=True)
    assembly = FilePath(tempfile.mkdtemp(dir=parent.path, prefix=f".{maildir.basename()}-"))
    for subdirectory in ("tmp", "new", "cur"):
        assembly.child(subdirectory).createDirectory()
    # The name follows the Maildir convention, plus Dovecot's S= (stored size) and W= (size
    # with CRLF line ends, as POP3 counts it).
    seconds, fraction = divmod(time.time(), 1)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    crlfSize = len(message) + message.count(b"\n")
    name = (
        f"{int(seconds)}.M{int(fraction * 1_000_000)}P{os.getpid()}.{host}"
        f",S={len(message)},W={crlfSize}"
    )
    delivering = assembly.child("tmp").child(name)
    with delivering.open("w") as stream:
        stream.write(message)
    delivering.moveTo(assembly.child("new").child(name))
    assembly.moveTo(maildir)


def _welcomeMessage(directory: FilePath[str]) -> bytes:
    """
    The welcome message: an RFC 5322 message that explains popd and its demo.

    @param directory: the demo directory, which the message names.
    @return: the message with LF line ends.
    """
    text = _WELCOME.format(
        date=formatdate(localtime=True),
        user=DEMO_USER,
        messageID=secrets.token_hex(16),
        directory=directory.path,
    )
    return text.encode("utf-8")


def _certificateUsable(path: FilePath[str]) -> bool:
    """
    Whether C{path} holds a private key and a certificate that is valid for another week.

    @param path: the demo's PEM file.
    @return: C{False} when the file is missing, unreadable or expiring.
    """
    try:
        content = path.getContent()
        serialization.load_pem_private_key(content, password=None)
        certificate = x509.load_pem_x509_certificate(content)
    except (OSError, ValueError, TypeError):
        return False
    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=7)
    return certificate.not_valid_after_utc > expiry


def selfSignedCertificate() -> bytes:
    """
    Make a P-256 key and a self-signed certificate for C{localhost} and C{127.0.0.1}, valid
    for L{CERTIFICATE_LIFETIME}.

    The certificate is an end-entity certificate for TLS servers, so that clients which trust
    it explicitly (C{curl --cacert}, C{ssl.create_default_context(cafile=...)}) also verify the
    host name.

    @return: the key (PKCS#8) followed by the certificate, both PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A day of slack for clocks that are behind.
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + CERTIFICATE_LIFETIME)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(DEMO_HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)
