"""
What the servers serve: message templates, Maildirs, the passwd-file and the TLS certificate.

Messages are written once as templates and hard-linked into each server's copy of a Maildir:
every server gets identical files (and no server's deletions or renames reach another's copy),
and setting up 50,000 messages for three servers costs 150,000 C{link} calls, not 150,000 file
writes.  Messages are stored with LF line ends, as MTAs write Maildirs; every server converts
them to CRLF when sending.
"""

from __future__ import annotations

import datetime
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pop3load import Account, Batch

#: The password of every user.  Hashing it once and giving every user the same hash costs the
#: servers the same as distinct hashes would: each login verifies the hash in full.
PASSWORD = b"benchmark-password"

#: The schemes the benchmark can store passwords in, for both popd and Dovecot.
SCHEMES = ("SHA512-CRYPT", "PLAIN")

_WORDS = (
    "the quick brown fox jumps over lazy dog mail server message retrieve session maildrop "
    "listing octets benchmark twisted dovecot header body attachment invoice meeting report"
).split()


def messageText(size: int, seed: int, stuffedEvery: int = 0) -> bytes:
    """
    A plausible RFC 5322 message of about C{size} octets with LF line ends: a few header fields,
    then lines of words up to 76 characters.

    @param stuffedEvery: when not 0, every line with this period starts with C{.}, so that
        servers must byte-stuff it.
    """
    rng = random.Random(seed)
    header = (
        f"Return-Path: <sender{seed}@example.org>\n"
        f"From: Sender {seed} <sender{seed}@example.org>\n"
        "To: user@example.org\n"
        f"Subject: benchmark message {seed}\n"
        f"Message-ID: <{seed}.benchmark@example.org>\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
    ).encode("ascii")
    lines = [header]
    total = len(header)
    # Lines are built from a pool so that 50 MB does not take a random call per word.
    pool = [" ".join(rng.choice(_WORDS) for _ in range(11))[:76].encode("ascii") for _ in range(64)]
    number = 0
    while total < size:
        line = pool[number % len(pool)]
        if stuffedEvery and number % stuffedEvery == 0:
            line = b"." + line[1:]
        lines.append(line + b"\n")
        total += len(line) + 1
        number += 1
    return b"".join(lines)


def transmittedOctets(text: bytes) -> int:
    """
    The octets a POP3 server sends for a message with LF line ends: CRLF line ends, a dot added
    to each line that starts with one, a CRLF added after a last line that lacks one.
    """
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return sum(len(line) + 2 for line in lines) + sum(line.startswith(b".") for line in lines)


def writeTemplates(directory: str, texts: Sequence[bytes]) -> list[str]:
    """
    Write each text to its own file in C{directory}.

    @return: the paths, in the order of C{texts}.
    """
    os.makedirs(directory, exist_ok=True)
    paths = []
    for number, text in enumerate(texts):
        path = os.path.join(directory, f"{number:06d}")
        with open(path, "wb") as f:
            f.write(text)
        paths.append(path)
    return paths


def makeBatch(directory: str, count: int, size: int) -> Batch:
    """
    Write C{count} messages of about C{size} octets as templates in C{directory}.
    """
    texts = [messageText(size, seed) for seed in range(count)]
    return Batch(writeTemplates(directory, texts), [transmittedOctets(text) for text in texts])


def makeMaildir(path: str) -> None:
    """
    Create an empty Maildir (C{new}, C{cur}, C{tmp}).
    """
    for subdirectory in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(path, subdirectory), exist_ok=True)


def linkInto(maildir: str, templates: Sequence[str]) -> None:
    """
    Deliver templates into C{new/} of C{maildir} under fixed conventional names, in order: the
    same names in every server's copy, so that listings are comparable.

    The templates are read too, as a delivery leaves what it wrote in the page cache: a machine
    may have paged them out since they were written (such as this one, whose kernel pages out
    what was not used for 30 seconds), and the server measured next would read them from disk
    where the one before did not.
    """
    makeMaildir(maildir)
    for number, template in enumerate(templates):
        os.link(template, os.path.join(maildir, "new", f"1700000000.M{number}P1.bench"))
    for template in templates:
        with open(template, "rb") as f:
            while f.read(1 << 20):
                pass


def pageOut(paths: Sequence[str]) -> None:
    """
    Drop the files C{paths} from the page cache, so that the next reading of each one is from
    the disk, as after a restart: all of each file that is written back (see C{os.sync}).
    """
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Users:
    """
    Where each server's copy of the Maildirs is, and the users of the benchmark.

    @ivar mailRoot: the directory holding C{<user>/Maildir} for one server.
    """

    mailRoot: str

    def maildirTemplate(self) -> str:
        """
        The Maildir path template, with C{%u} for the user name.
        """
        return os.path.join(self.mailRoot, "%u", "Maildir")

    def account(self, user: str) -> Account:
        """
        The account of C{user} in this copy.
        """
        return Account(user.encode("ascii"), PASSWORD, os.path.join(self.mailRoot, user, "Maildir"))


def userNames(prefix: str, count: int) -> list[str]:
    """
    C{count} user names: C{prefix} and a number.
    """
    return [f"{prefix}{number:04d}" for number in range(count)]


def writePasswd(path: str, users: Sequence[str], scheme: str) -> None:
    """
    Write a Dovecot passwd-file, read alike by popd and Dovecot, with every user's password
    stored in C{scheme}.  Readable by all: Dovecot's auth process reads it as user C{dovecot}.
    """
    if scheme == "SHA512-CRYPT":
        from popd.cred import hashPassword

        stored = hashPassword(PASSWORD.decode("ascii"), scheme)
    else:
        stored = "{PLAIN}" + PASSWORD.decode("ascii")
    with open(path, "w", encoding="ascii") as f:
        f.writelines(f"{user}:{stored}\n" for user in users)
    os.chmod(path, 0o644)


def writeCertificate(certificatePath: str, keyPath: str) -> None:
    """
    Write a self-signed RSA-2048 certificate for C{localhost} and 127.0.0.1 and its key, in PEM,
    with C{cryptography} (installed with popd, through pyOpenSSL).  RSA-2048 is what most
    servers still present; both servers then pay the same RSA signature per handshake.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with open(certificatePath, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(keyPath, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
