"""
Tests for L{popd.cred}: the Dovecot passwd-file checker and the password hasher.

Known vectors come from outside popd: Dovecot's documentation and C{doveadm pw} output, Dovecot's
crypt(3) self-test samples (C{password-scheme-crypt.c}), the crypt_blowfish and Argon2 reference
test vectors, RFC 2195, RFC 7677's SCRAM example with keys computed by scramp, and digests
computed here with C{hashlib}.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Callable, Generator, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from passlib.hash import argon2, sha512_crypt
from scramp import ScramMechanism  # type: ignore[import-untyped]
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import (
    CramMD5Credentials,
    IUsernameHashedPassword,
    IUsernamePassword,
    UsernamePassword,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from popd import cred
from popd.cred import SCHEMES, PasswdFileChecker, PasswdFileError, hashPassword
from popd.credentials import APOPCredentials
from popd.sasl import IScramCredentials, IScramSecretSource, ScramCredentials, ScramSecrets

# Low costs keep the tests fast; the defaults are tested once, in HashPasswordTests.
CHEAP_ROUNDS = {
    "SHA256-CRYPT": 1000,
    "SHA512-CRYPT": 1000,
    "BLF-CRYPT": 4,
    "CRYPT": 4,
    "ARGON2": 1,
    "ARGON2I": 1,
    "ARGON2ID": 1,
}

# What a password may hold: any Unicode but NUL (which no login can present).
passwordCharacters = st.characters(codec="utf-8", exclude_characters="\0")

# A password with spaces and non-ASCII UTF-8, as RFC 1939 section 7 (R12) lets PASS carry.
PASSWORD = "correct horse bätterý 電池"


def cheapHash(password: str, scheme: str) -> str:
    """
    L{hashPassword} at the lowest cost the scheme allows; Argon2 also with little memory.
    """
    if scheme.startswith("ARGON2"):
        kind = "I" if scheme == "ARGON2I" else "ID"
        settings = {"type": kind, "memory_cost": 8, "rounds": 1, "parallelism": 1}
        return "{%s}%s" % (scheme, argon2.using(**settings).hash(password))
    return hashPassword(password, scheme, rounds=CHEAP_ROUNDS.get(scheme))


def writePasswd(testCase: SynchronousTestCase, *lines: str | bytes) -> str:
    """
    Write a passwd-file, one line each, into a new temporary path.
    """
    path: str = testCase.mktemp()
    with open(path, "wb") as f:
        for line in lines:
            f.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
    return path


def rewrite(path: str, *lines: str) -> None:
    """
    Replace a passwd-file's contents and move its mtime clearly forward, as an admin's edit.
    """
    status = os.stat(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 2_000_000_000))


def login(checker: PasswdFileChecker, username: str, password: str | bytes) -> Deferred[Any]:
    if isinstance(password, str):
        password = password.encode("utf-8")
    return checker.requestAvatarId(UsernamePassword(username.encode("utf-8"), password))


def warningTexts(events: Sequence[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]


class _OpenSSLMD5:
    """
    OpenSSL's MD5 functions, to finish an HMAC from the MD5 states Dovecot's CRAM-MD5 stores.
    """

    def __init__(self) -> None:
        import _hashlib

        self.library = ctypes.CDLL(_hashlib.__file__)

    def finish(self, state: bytes, data: bytes) -> bytes:
        """
        MD5 of (one 64-octet block that led to C{state}) + C{data}.
        """
        context = cred._MD5Context()
        self.library.MD5_Init(ctypes.byref(context))
        context.A, context.B, context.C, context.D = struct.unpack("<4I", state)
        context.Nl, context.Nh = 512, 0
        self.library.MD5_Update(ctypes.byref(context), data, ctypes.c_size_t(len(data)))
        digest = ctypes.create_string_buffer(16)
        self.library.MD5_Final(digest, ctypes.byref(context))
        return digest.raw

    def hmacFromContexts(self, contexts: bytes, message: bytes) -> bytes:
        outer, inner = contexts[:16], contexts[16:]
        return self.finish(outer, self.finish(inner, message))


class HashPasswordTests(SynchronousTestCase):
    """
    L{hashPassword} writes what C{doveadm pw} writes.
    """

    def test_schemes(self) -> None:
        """
        L{SCHEMES} names every scheme Dovecot's passwd-files commonly hold.
        """
        self.assertTrue(
            {
                "PLAIN",
                "CLEARTEXT",
                "PLAIN-MD5",
                "LDAP-MD5",
                "MD5",
                "SHA",
                "SHA256",
                "SHA512",
                "SSHA",
                "SSHA256",
                "SSHA512",
                "CRYPT",
                "MD5-CRYPT",
                "SHA256-CRYPT",
                "SHA512-CRYPT",
                "BLF-CRYPT",
                "ARGON2I",
                "ARGON2ID",
                "CRAM-MD5",
                "SCRAM-SHA-1",
                "SCRAM-SHA-256",
            }.issubset(SCHEMES)
        )

    def test_prefix(self) -> None:
        """
        The result is a complete password field: C{{SCHEME}value}, the name upper-cased.
        """
        for scheme in SCHEMES:
            self.assertTrue(cheapHash("x", scheme).startswith("{%s}" % (scheme,)), scheme)
        self.assertTrue(hashPassword("x", "ssha512").startswith("{SSHA512}"))

    def test_defaultIsSHA512Crypt(self) -> None:
        """
        By default: SHA512-CRYPT at glibc's default 5000 rounds (so without C{rounds=}) and a
        16-character salt, as C{doveadm pw -s SHA512-CRYPT}.
        """
        hashed = hashPassword(PASSWORD)
        self.assertRegex(hashed, r"^\{SHA512-CRYPT\}\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}$")
        self.assertTrue(sha512_crypt.verify(PASSWORD, hashed.split("}", 1)[1]))

    def test_cryptDefaults(self) -> None:
        """
        The crypt(3) schemes use Dovecot's formats and default costs: C{CRYPT} and C{BLF-CRYPT}
        write C{$2y$05$}.
        """
        self.assertRegex(hashPassword("x", "SHA256-CRYPT"), r"^\{SHA256-CRYPT\}\$5\$[^$]{16}\$")
        self.assertRegex(hashPassword("x", "MD5-CRYPT"), r"^\{MD5-CRYPT\}\$1\$[^$]{8}\$")
        self.assertRegex(hashPassword("x", "MD5"), r"^\{MD5\}\$1\$[^$]{8}\$")
        self.assertRegex(hashPassword("x", "BLF-CRYPT"), r"^\{BLF-CRYPT\}\$2y\$05\$.{53}$")
        self.assertRegex(hashPassword("x", "CRYPT"), r"^\{CRYPT\}\$2y\$05\$.{53}$")
        self.assertRegex(hashPassword("x", "DES-CRYPT"), r"^\{DES-CRYPT\}[./0-9A-Za-z]{13}$")

    def test_argon2Defaults(self) -> None:
        """
        The Argon2 schemes write libsodium's string format, with one lane.
        """
        self.assertRegex(
            hashPassword("x", "ARGON2ID"), r"^\{ARGON2ID\}\$argon2id\$v=19\$m=65536,t=3,p=1\$"
        )
        self.assertRegex(
            hashPassword("x", "ARGON2I"), r"^\{ARGON2I\}\$argon2i\$v=19\$m=32768,t=4,p=1\$"
        )

    def test_digestFormats(self) -> None:
        """
        Digests are base64 (hex for C{PLAIN-MD5} and C{CRAM-MD5}); salted digests put the salt
        after the digest of password + salt.
        """
        password = PASSWORD.encode("utf-8")
        self.assertEqual(
            hashPassword(PASSWORD, "PLAIN-MD5"), "{PLAIN-MD5}" + hashlib.md5(password).hexdigest()
        )
        self.assertEqual(
            hashPassword(PASSWORD, "SHA256"),
            "{SHA256}" + base64.b64encode(hashlib.sha256(password).digest()).decode(),
        )
        raw = base64.b64decode(hashPassword(PASSWORD, "SSHA512")[len("{SSHA512}") :])
        self.assertGreater(len(raw), 64)
        self.assertEqual(raw[:64], hashlib.sha512(password + raw[64:]).digest())
        self.assertRegex(hashPassword(PASSWORD, "CRAM-MD5"), r"^\{CRAM-MD5\}[0-9a-f]{64}$")

    def test_rounds(self) -> None:
        """
        C{rounds} sets the cost as C{doveadm pw -r} does.
        """
        self.assertIn("$6$rounds=1000$", hashPassword("x", "SHA512-CRYPT", rounds=1000))
        self.assertIn("$5$rounds=6000$", hashPassword("x", "SHA256-CRYPT", rounds=6000))
        self.assertIn("$2y$04$", hashPassword("x", "BLF-CRYPT", rounds=4))
        self.assertIn(",t=1,", hashPassword("x", "ARGON2I", rounds=1))

    def test_badRounds(self) -> None:
        """
        A cost out of the scheme's range, or for a scheme without one, is a L{ValueError}.
        """
        self.assertRaises(ValueError, hashPassword, "x", "SHA512-CRYPT", rounds=999)
        self.assertRaises(ValueError, hashPassword, "x", "BLF-CRYPT", rounds=3)
        self.assertRaises(ValueError, hashPassword, "x", "BLF-CRYPT", rounds=32)
        self.assertRaises(ValueError, hashPassword, "x", "SSHA512", rounds=5)
        self.assertRaises(ValueError, hashPassword, "x", "PLAIN", rounds=5)

    def test_unknownScheme(self) -> None:
        """
        An unknown scheme or encoding suffix is a L{ValueError}.
        """
        self.assertRaises(ValueError, hashPassword, "x", "ROT13")
        self.assertRaises(ValueError, hashPassword, "x", "SSHA.rot13")
        self.assertRaises(ValueError, hashPassword, "x", "")

    def test_encodingSuffix(self) -> None:
        """
        C{.b64} and C{.hex} encode the stored value, which lets C{PLAIN} hold a colon.
        """
        self.assertEqual(hashPassword("a:b", "PLAIN.b64"), "{PLAIN.B64}YTpi")
        self.assertEqual(hashPassword("ab", "plain.hex"), "{PLAIN.HEX}6162")
        self.assertRaises(ValueError, hashPassword, "a:b", "PLAIN")
        self.assertRaises(ValueError, hashPassword, "a\nb", "CLEARTEXT")

    def test_nul(self) -> None:
        """
        A password with a NUL, which no login could present, is a L{ValueError}.
        """
        for scheme in ("SHA512-CRYPT", "PLAIN.b64", "CRAM-MD5"):
            self.assertRaises(ValueError, hashPassword, "a\0b", scheme)


class CramMD5Tests(SynchronousTestCase):
    """
    The C{CRAM-MD5} scheme stores the MD5 states that finish into HMAC-MD5.
    """

    def setUp(self) -> None:
        self.md5 = _OpenSSLMD5()

    def test_doveadmVector(self) -> None:
        """
        C{doveadm pw -s CRAM-MD5} for the password C{password}.
        """
        self.assertEqual(
            hashPassword("password", "CRAM-MD5"),
            "{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740",
        )

    def test_rfc2195(self) -> None:
        """
        The stored states finish into the HMAC of RFC 2195's example exchange.
        """
        contexts = bytes.fromhex(hashPassword("tanstaaftanstaaf", "CRAM-MD5")[10:])
        challenge = b"<1896.697170952@postoffice.reston.mci.net>"
        self.assertEqual(
            self.md5.hmacFromContexts(contexts, challenge).hex(),
            "b913a602c7eda7a495b4e6e7334d3890",
        )

    @given(st.text(passwordCharacters, max_size=100), st.binary(max_size=200))
    @settings(max_examples=200, deadline=None)
    def test_matchesHMAC(self, password: str, challenge: bytes) -> None:
        """
        For any password, keys longer than a block included, the stored states finish into
        C{hmac.new(password, challenge, "md5")}.
        """
        contexts = bytes.fromhex(hashPassword(password, "CRAM-MD5")[10:])
        self.assertEqual(
            self.md5.hmacFromContexts(contexts, challenge),
            hmac.new(password.encode("utf-8"), challenge, "md5").digest(),
        )


class KnownVectorTests(TestCase):
    """
    L{PasswdFileChecker} accepts hashes made by other implementations, and refuses wrong
    passwords against them.
    """

    @defer.inlineCallbacks
    def assertVector(
        self, stored: str, password: str | bytes, defaultScheme: str = "CRYPT"
    ) -> Generator[Deferred[Any], Any, None]:
        checker = PasswdFileChecker(writePasswd(self, "alice:" + stored), defaultScheme)
        avatarId = yield login(checker, "alice", password)
        self.assertEqual(avatarId, b"alice")
        # Prefixed, since DES crypt reads only 8 characters.
        wrong = b"x" + (password.encode("utf-8") if isinstance(password, str) else password)
        yield self.assertFailure(login(checker, "alice", wrong), UnauthorizedLogin)

    def test_plain(self) -> Deferred[None]:
        return self.assertVector("{PLAIN}" + PASSWORD, PASSWORD)

    def test_plainBase64(self) -> Deferred[None]:
        """
        Dovecot's documentation: C{{PLAIN.b64}} can hold a colon.  (Its example encodes a
        final newline too.)
        """
        return self.assertVector("{PLAIN.b64}e1x9OiEiCg==", '{\\}:!"\n')

    def test_plainMD5(self) -> Deferred[None]:
        """
        C{doveadm pw -s PLAIN-MD5} for C{password}.
        """
        return self.assertVector("{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99", "password")

    def test_ldapMD5(self) -> Deferred[None]:
        digest = base64.b64encode(hashlib.md5(PASSWORD.encode()).digest()).decode()
        return self.assertVector("{LDAP-MD5}" + digest, PASSWORD)

    def test_md5CryptAlias(self) -> Deferred[None]:
        """
        C{doveadm pw -s MD5} for C{password}: an MD5-CRYPT string.
        """
        return self.assertVector("{MD5}$1$8ade6fc1$0MJXOZOOpbQovXtQEyrUP1", "password")

    def test_md5DigestAlias(self) -> Deferred[None]:
        """
        Dovecot's C{MD5} scheme also takes a PLAIN-MD5 digest.
        """
        return self.assertVector("{MD5}5f4dcc3b5aa765d61d8327deb882cf99", "password")

    def test_sha(self) -> Deferred[None]:
        """
        The well-known LDAP C{{SHA}} of C{password}.
        """
        return self.assertVector("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "password")

    def test_shaHex(self) -> Deferred[None]:
        """
        A digest of twice the raw length in characters is hex, as Dovecot guesses.
        """
        return self.assertVector("{SHA1}5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", "password")

    def test_sha256(self) -> Deferred[None]:
        digest = base64.b64encode(hashlib.sha256(PASSWORD.encode()).digest()).decode()
        return self.assertVector("{SHA256}" + digest, PASSWORD)

    def test_sha512(self) -> Deferred[None]:
        digest = base64.b64encode(hashlib.sha512(PASSWORD.encode()).digest()).decode()
        return self.assertVector("{sha512}" + digest, PASSWORD)

    def test_ssha(self) -> Deferred[None]:
        """
        Dovecot's documentation: C{{SSHA.b64}} of C{pass}.
        """
        return self.assertVector("{SSHA.b64}986H5cS9JcDYQeJd6wKaITMho4M9CrXM", "pass")

    def test_sshaHex(self) -> Deferred[None]:
        """
        Dovecot's documentation: the same, C{.HEX}-encoded.
        """
        return self.assertVector(
            "{SSHA.HEX}3f5ca6203f8cdaa44d9160575c1ee1d77abcf59ca5f852d1", "pass"
        )

    def test_ssha256(self) -> Deferred[None]:
        """
        Dovecot's documentation: C{{SSHA256}} of C{pass}.
        """
        return self.assertVector(
            "{SSHA256}SoR/78T5q0UPFng8UCXWQxOUKhzrJZlwfNtllAupAeUT+kQv", "pass"
        )

    def test_ssha512(self) -> Deferred[None]:
        salt = b"\x01\x02\x03\x04"
        raw = hashlib.sha512(PASSWORD.encode() + salt).digest() + salt
        return self.assertVector("{SSHA512}" + base64.b64encode(raw).decode(), PASSWORD)

    def test_smd5(self) -> Deferred[None]:
        salt = b"salt"
        raw = hashlib.md5(PASSWORD.encode() + salt).digest() + salt
        return self.assertVector("{SMD5}" + base64.b64encode(raw).decode(), PASSWORD)

    def test_desCrypt(self) -> Deferred[None]:
        """
        Dovecot's documentation: traditional DES crypt of C{pass}.
        """
        return self.assertVector("{CRYPT}vpvKh.SaNbR6s", "pass")

    def test_defaultCrypt(self) -> Deferred[None]:
        """
        Without a prefix, the default scheme C{CRYPT} applies.
        """
        return self.assertVector("vpvKh.SaNbR6s", "pass")

    def test_dovecotCryptSamples(self) -> Deferred[Any]:
        """
        The samples Dovecot checks crypt(3) against before it registers each crypt scheme.
        """
        samples = [
            "{CRYPT}JBOZ0DgmtucwE",
            "{BLF-CRYPT}$2a$04$0123456789abcdefABCDE.N.drYX5yIAL1LkTaaZotW3yI0hQhZru",
            "{SHA256-CRYPT}$5$rounds=1000$0123456789abcdef$"
            "K/DksR0DT01hGc8g/kt9McEgrbFMKi9qrb1jehe7hn4",
            "{SHA512-CRYPT}$6$rounds=1000$0123456789abcdef$"
            "ZIAd5WqfyLkpvsVCVUU1GrvqaZTqvhJoouxdSqJO71l9Ld3tVrfOatEjarhghvEYADkq//"
            "LpDnTeO90tcbtHR1",
        ]
        return defer.gatherResults([self.assertVector(s, "08/15!test~4711") for s in samples])

    def test_blfCrypt2y(self) -> Deferred[None]:
        """
        A C{$2y$} vector from crypt_blowfish's tests (Dovecot's bcrypt), password not UTF-8.
        """
        return self.assertVector(
            "{BLF-CRYPT}$2y$05$/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e",
            b"\xff\xff\xa3",
        )

    def test_md5Crypt(self) -> Deferred[None]:
        return self.assertVector("{MD5-CRYPT}$1$8ade6fc1$0MJXOZOOpbQovXtQEyrUP1", "password")

    def test_unprefixedMD5Crypt(self) -> Deferred[None]:
        """
        As in Dovecot, an unprefixed C{$1$} string is MD5-CRYPT whatever the default scheme.
        """
        return self.assertVector("$1$8ade6fc1$0MJXOZOOpbQovXtQEyrUP1", "password", "PLAIN")

    def test_argon2id(self) -> Deferred[None]:
        """
        The Argon2 reference implementation's argon2id test vector.
        """
        return self.assertVector(
            "{ARGON2ID}$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$"
            "CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "password",
        )

    def test_argon2i(self) -> Deferred[None]:
        """
        The Argon2 reference implementation's argon2i test vector.
        """
        return self.assertVector(
            "{ARGON2I}$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$"
            "wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA",
            "password",
        )

    def test_cramMD5(self) -> Deferred[None]:
        """
        C{doveadm pw -s CRAM-MD5} for C{password}; C{HMAC-MD5} is its alias.
        """
        contexts = "9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740"
        return defer.gatherResults(
            [
                self.assertVector("{CRAM-MD5}" + contexts, "password"),
                self.assertVector("{HMAC-MD5}" + contexts, "password"),
            ]
        ).addCallback(lambda _: None)


class RoundTripTests(TestCase):
    """
    Whatever L{hashPassword} writes, L{PasswdFileChecker} accepts, for every scheme.
    """

    @defer.inlineCallbacks
    def test_everyScheme(self) -> Generator[Deferred[Any], Any, None]:
        """
        A user per scheme, each with a password holding spaces and non-ASCII UTF-8: the right
        password logs in, a wrong one and an empty one do not.
        """
        schemes = sorted(SCHEMES)
        lines = [
            f"user{i}:{hashPassword(PASSWORD, scheme, rounds=CHEAP_ROUNDS.get(scheme))}"
            for i, scheme in enumerate(schemes)
        ]
        checker = PasswdFileChecker(writePasswd(self, *lines))
        for i, scheme in enumerate(schemes):
            user = f"user{i}"
            self.assertEqual((yield login(checker, user, PASSWORD)), user.encode(), scheme)
            for wrong in ("x" + PASSWORD, PASSWORD.upper(), ""):
                yield self.assertFailure(login(checker, user, wrong), UnauthorizedLogin)

    def test_cheapSchemesAnyPassword(self) -> None:
        """
        Any password hashed by the inline (cheap) schemes verifies, and only it.
        """

        @given(st.text(passwordCharacters, max_size=80))
        @settings(max_examples=50, deadline=None)
        def check(password: str) -> None:
            schemes = ["PLAIN.b64", "PLAIN-MD5", "SHA512", "SSHA256", "SMD5", "CRAM-MD5"]
            lines = [f"u{i}:{hashPassword(password, s)}" for i, s in enumerate(schemes)]
            checker = PasswdFileChecker(writePasswd(self, *lines))
            for i in range(len(schemes)):
                self.assertEqual(
                    self.successResultOf(login(checker, f"u{i}", password)), f"u{i}".encode()
                )
                self.failureResultOf(login(checker, f"u{i}", password + "\0"), UnauthorizedLogin)

        check()

    @defer.inlineCallbacks
    def test_bcryptLongPassword(self) -> Generator[Deferred[Any], Any, None]:
        """
        bcrypt reads 72 octets of password, as Dovecot's crypt_blowfish does: longer passwords
        are accepted, not an error.
        """
        password = "p" * 100
        checker = PasswdFileChecker(writePasswd(self, "u:" + cheapHash(password, "BLF-CRYPT")))
        self.assertEqual((yield login(checker, "u", password)), b"u")
        self.assertEqual((yield login(checker, "u", "p" * 72 + "different")), b"u")

    @defer.inlineCallbacks
    def test_passwordsCryptCannotTake(self) -> Generator[Deferred[Any], Any, None]:
        """
        A password with a NUL, or one that is not UTF-8, is refused, not an error; so is a
        NUL that HMAC's key padding would ignore.
        """
        schemes = ["SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID", "SSHA512", "CRAM-MD5", "SCRAM-SHA-1"]
        lines = [f"u{i}:{cheapHash('pw', s)}" for i, s in enumerate(schemes)]
        checker = PasswdFileChecker(writePasswd(self, *lines))
        for i in range(len(lines)):
            for password in (b"pw\0", b"\0pw", b"\xff\xfe", b"pw" + b"\0" * 62):
                yield self.assertFailure(login(checker, f"u{i}", password), UnauthorizedLogin)


class PasswdFileCheckerTests(TestCase):
    """
    L{PasswdFileChecker} as a C{twisted.cred} checker.
    """

    def test_interface(self) -> None:
        checker = PasswdFileChecker(writePasswd(self, "u:" + cheapHash("pw", "SHA512-CRYPT")))
        self.assertTrue(verifyObject(ICredentialsChecker, checker))

    def test_filePath(self) -> None:
        """
        The path may be a L{FilePath}.
        """
        path = writePasswd(self, "u:{PLAIN}pw")
        checker = PasswdFileChecker(FilePath(path))
        self.assertEqual(self.successResultOf(login(checker, "u", "pw")), b"u")

    def test_missingFile(self) -> None:
        """
        A missing file is a L{PasswdFileError} that names it.
        """
        path = self.mktemp()
        error = self.assertRaises(PasswdFileError, PasswdFileChecker, path)
        self.assertIn(path, str(error))
        self.assertIn("No such file", str(error))

    def test_directory(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        self.assertRaises(PasswdFileError, PasswdFileChecker, path)

    def test_unknownDefaultScheme(self) -> None:
        path = writePasswd(self, "u:{PLAIN}pw")
        self.assertRaises(ValueError, PasswdFileChecker, path, "ROT13")

    def test_defaultScheme(self) -> None:
        """
        Passwords without a prefix are in the default scheme, given case-insensitively.
        """
        checker = PasswdFileChecker(writePasswd(self, "u:secret word"), "plain")
        self.assertEqual(self.successResultOf(login(checker, "u", "secret word")), b"u")

    def test_extraFields(self) -> None:
        """
        The userdb fields after the password are allowed and ignored; so are CRLF line ends.
        """
        path = writePasswd(
            self,
            "u:{PLAIN}pw:1000:1000:U Ser:/home/u::userdb_mail=maildir:~/Maildir",
            b"v:{PLAIN}pw2\r",
        )
        checker = PasswdFileChecker(path)
        self.assertEqual(self.successResultOf(login(checker, "u", "pw")), b"u")
        self.assertEqual(self.successResultOf(login(checker, "v", "pw2")), b"v")

    def test_utf8UserName(self) -> None:
        """
        User names are matched as the UTF-8 octets of the file's names, exactly.
        """
        checker = PasswdFileChecker(writePasswd(self, "jürgen:{PLAIN}pw"))
        self.assertEqual(self.successResultOf(login(checker, "jürgen", "pw")), "jürgen".encode())
        self.failureResultOf(login(checker, "JÜRGEN", "pw"), UnauthorizedLogin)
        self.failureResultOf(
            checker.requestAvatarId(UsernamePassword("jürgen".encode("latin-1"), b"pw")),
            UnauthorizedLogin,
        )

    @defer.inlineCallbacks
    def test_unknownUserLikeWrongPassword(self) -> Generator[Deferred[Any], Any, None]:
        """
        An unknown user and a wrong password fail with the same exception and message.
        """
        checker = PasswdFileChecker(writePasswd(self, "u:" + cheapHash("pw", "BLF-CRYPT")))
        wrong = yield self.assertFailure(login(checker, "u", "nope"), UnauthorizedLogin)
        unknown = yield self.assertFailure(login(checker, "nobody", "pw"), UnauthorizedLogin)
        self.assertIs(type(wrong), type(unknown))
        self.assertEqual(wrong.args, unknown.args)

    @defer.inlineCallbacks
    def test_unknownUserVerifiesToo(self) -> Generator[Deferred[Any], Any, None]:
        """
        An unknown user's password is verified in a worker thread like a real user's, against
        a dummy of the file's most common kind of hash.
        """
        calls: list[Callable[[], bool]] = []

        def recordingDeferToThread(f: Callable[[], bool]) -> Deferred[bool]:
            calls.append(f)
            return defer.maybeDeferred(f)

        self.patch(cred, "deferToThread", recordingDeferToThread)
        self.patch(cred, "_dummyEntries", {})
        path = writePasswd(
            self,
            "a:" + cheapHash("pw", "BLF-CRYPT"),
            "b:" + cheapHash("pw", "BLF-CRYPT"),
            "c:" + cheapHash("pw", "SSHA512"),
        )
        checker = PasswdFileChecker(path)
        yield self.assertFailure(login(checker, "a", "nope"), UnauthorizedLogin)
        yield self.assertFailure(login(checker, "nobody", "pw"), UnauthorizedLogin)
        self.assertEqual(len(calls), 2)
        self.assertIn("BLF-CRYPT", cred._dummyEntries)

    def test_cheapSchemesInline(self) -> None:
        """
        Cheap schemes are verified at once, on the reactor thread, also for unknown users.
        """
        self.patch(cred, "deferToThread", lambda f: self.fail("deferToThread called"))
        checker = PasswdFileChecker(writePasswd(self, "u:" + hashPassword("pw", "SSHA512")))
        self.assertEqual(self.successResultOf(login(checker, "u", "pw")), b"u")
        self.failureResultOf(login(checker, "nobody", "pw"), UnauthorizedLogin)

    def test_unexpectedErrorRefuses(self) -> None:
        """
        An error while checking is logged and answered like a refusal.
        """

        class BrokenCredentials:
            username = b"u"

            def checkPassword(self, password: bytes) -> bool:
                raise ZeroDivisionError()

        checker = PasswdFileChecker(writePasswd(self, "u:{PLAIN}pw"))
        failure = self.failureResultOf(checker.requestAvatarId(BrokenCredentials()))
        self.assertEqual(failure.type, UnauthorizedLogin)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class HashedCredentialsTests(SynchronousTestCase):
    """
    APOP and CRAM-MD5 credentials (L{IUsernameHashedPassword}) need a plaintext-equivalent
    password.
    """

    def setUp(self) -> None:
        self.checker = PasswdFileChecker(
            writePasswd(
                self,
                "plain:{PLAIN}" + PASSWORD,
                "mrose:{CLEARTEXT}tanstaaf",
                "tim:{CLEAR}tanstaaftanstaaf",
                "encoded:{PLAIN.b64}" + base64.b64encode(b"a:b").decode(),
                "hashed:" + cheapHash(PASSWORD, "SHA512-CRYPT"),
                "cram:" + hashPassword(PASSWORD, "CRAM-MD5"),
            )
        )

    def apop(self, username: str, secret: str) -> Deferred[Any]:
        timestamp = b"<1896.697170952@dbc.mtview.ca.us>"
        digest = hashlib.md5(timestamp + secret.encode("utf-8")).hexdigest().encode()
        credentials = APOPCredentials(timestamp, username.encode("utf-8"), digest)
        return self.checker.requestAvatarId(credentials)

    def test_credentialInterfaces(self) -> None:
        """
        L{IUsernameHashedPassword} is listed only when some user has a plaintext password.
        """
        self.assertEqual(
            set(self.checker.credentialInterfaces),
            {IUsernamePassword, IUsernameHashedPassword, IScramCredentials},
        )
        path = writePasswd(
            self, "a:" + hashPassword("x", "SSHA512"), "b:" + hashPassword("x", "CRAM-MD5")
        )
        hashedOnly = PasswdFileChecker(path)
        self.assertEqual(tuple(hashedOnly.credentialInterfaces), (IUsernamePassword,))

    def test_apop(self) -> None:
        """
        APOP works for plaintext users: the digest of the timestamp and the password.
        """
        self.assertEqual(self.successResultOf(self.apop("plain", PASSWORD)), b"plain")
        self.assertEqual(self.successResultOf(self.apop("encoded", "a:b")), b"encoded")
        self.failureResultOf(self.apop("plain", PASSWORD + "x"), UnauthorizedLogin)

    def test_rfc1939Example(self) -> None:
        """
        The APOP example of RFC 1939 section 7.
        """
        credentials = APOPCredentials(
            b"<1896.697170952@dbc.mtview.ca.us>", b"mrose", b"c4c9334bac560ecc979e58001b3e22fb"
        )
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(credentials)), b"mrose")

    def test_apopHashedUser(self) -> None:
        """
        APOP is refused for a hashed user even with the right digest, just as for an unknown
        user.
        """
        hashed = self.failureResultOf(self.apop("hashed", PASSWORD), UnauthorizedLogin)
        cram = self.failureResultOf(self.apop("cram", PASSWORD), UnauthorizedLogin)
        unknown = self.failureResultOf(self.apop("nobody", PASSWORD), UnauthorizedLogin)
        self.assertEqual(hashed.value.args, unknown.value.args)
        self.assertEqual(cram.value.args, unknown.value.args)

    def test_cramMD5Credentials(self) -> None:
        """
        Twisted's L{CramMD5Credentials} check against plaintext users (RFC 2195's example).
        """
        credentials = CramMD5Credentials()
        credentials.challenge = b"<1896.697170952@postoffice.reston.mci.net>"
        credentials.setResponse(b"tim b913a602c7eda7a495b4e6e7334d3890")
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(credentials)), b"tim")

    def test_plaintextSecret(self) -> None:
        """
        L{PasswdFileChecker.plaintextSecret} gives plaintext users' passwords, decoded, and
        L{None} for everybody else.
        """
        self.assertEqual(self.checker.plaintextSecret(b"plain"), PASSWORD.encode("utf-8"))
        self.assertEqual(self.checker.plaintextSecret(b"encoded"), b"a:b")
        self.assertIsNone(self.checker.plaintextSecret(b"hashed"))
        self.assertIsNone(self.checker.plaintextSecret(b"cram"))
        self.assertIsNone(self.checker.plaintextSecret(b"nobody"))


class FileContentsTests(SynchronousTestCase):
    """
    How L{PasswdFileChecker} reads the file: what it skips, logs and reloads.
    """

    SECRET = "s3cr3t-value"

    def test_skippedLines(self) -> None:
        """
        Lines that cannot be used are skipped with a warning naming their line number; the
        good lines around them work; nothing logged shows a password or hash.
        """
        secret = self.SECRET
        lines: list[str | bytes] = [
            "# comment " + secret,
            "",
            "   ",
            secret,
            ":" + secret,
            "nopassword:",
            "unknown:{ROT13}" + secret,
            "badprefix:{" + secret + "}" + secret,
            "badencoding:{PLAIN.rot13}" + secret,
            "badbase64:{SHA}" + secret + "!",
            "badlength:{SHA256}" + base64.b64encode(secret.encode()).decode(),
            "shortsalt:{SSHA}" + base64.b64encode(b"x" * 20).decode(),
            "yescrypt:$y$j9T$" + secret + "$" + secret,
            "badcrypt:{SHA512-CRYPT}$6$" + secret,
            b"latin1:{PLAIN}s\xe9cret",
            "good:{PLAIN}pw",
        ]
        with capturedLogs() as events:
            checker = PasswdFileChecker(writePasswd(self, *lines))
        self.assertEqual(self.successResultOf(login(checker, "good", "pw")), b"good")
        for user in ("unknown", "badprefix", "badbase64", "yescrypt", "badcrypt", "latin1"):
            self.failureResultOf(login(checker, user, secret), UnauthorizedLogin)
        lineNumbers = [re.search(r" line (\d+): ", text) for text in warningTexts(events)]
        self.assertEqual([int(m.group(1)) for m in lineNumbers if m], list(range(4, 16)))
        for event in events:
            self.assertNotIn(secret, formatEvent(event))
            self.assertNotIn(secret, repr(event))
            self.assertNotIn("s\\xe9cret", repr(event))

    def test_duplicateUser(self) -> None:
        """
        A user defined twice keeps the first definition, with a warning.
        """
        with capturedLogs() as events:
            checker = PasswdFileChecker(writePasswd(self, "u:{PLAIN}first", "u:{PLAIN}second"))
        self.assertEqual(self.successResultOf(login(checker, "u", "first")), b"u")
        self.failureResultOf(login(checker, "u", "second"), UnauthorizedLogin)
        [warning] = warningTexts(events)
        self.assertIn("line 2", warning)
        self.assertNotIn("second", warning)

    def test_reload(self) -> None:
        """
        An edit applies at the next check, and so does what it adds to the credential
        interfaces.
        """
        path = writePasswd(self, "u:" + hashPassword("old", "SSHA512"))
        checker = PasswdFileChecker(path)
        self.assertEqual(self.successResultOf(login(checker, "u", "old")), b"u")
        self.assertNotIn(IUsernameHashedPassword, checker.credentialInterfaces)
        rewrite(path, "u:" + hashPassword("new", "SSHA512"), "v:{PLAIN}pw")
        self.failureResultOf(login(checker, "u", "old"), UnauthorizedLogin)
        self.assertEqual(self.successResultOf(login(checker, "u", "new")), b"u")
        self.assertEqual(self.successResultOf(login(checker, "v", "pw")), b"v")
        self.assertIn(IUsernameHashedPassword, checker.credentialInterfaces)

    def test_reloadOnInodeChange(self) -> None:
        """
        A file replaced by rename, as editors and tools do, is read again even when its size
        and mtime happen to match.
        """
        path = writePasswd(self, "u:{PLAIN}aaa")
        checker = PasswdFileChecker(path)
        replacement = path + ".new"
        with open(replacement, "w") as f:
            f.write("u:{PLAIN}bbb\n")
        status = os.stat(path)
        os.utime(replacement, ns=(status.st_atime_ns, status.st_mtime_ns))
        os.rename(replacement, path)
        self.assertEqual(self.successResultOf(login(checker, "u", "bbb")), b"u")

    def test_noReloadWhenUnchanged(self) -> None:
        """
        An unchanged file is not read again.
        """
        path = writePasswd(self, "u:{PLAIN}pw")
        checker = PasswdFileChecker(path)
        self.patch(checker, "_read", lambda: self.fail("read again"))
        self.successResultOf(login(checker, "u", "pw"))
        checker.plaintextSecret(b"u")

    def test_unreadableKeepsLastContents(self) -> None:
        """
        A file that becomes unreadable leaves the last contents in use, with one error logged;
        once back it is read again.
        """
        path = writePasswd(self, "u:{PLAIN}pw")
        checker = PasswdFileChecker(path)
        os.remove(path)
        with capturedLogs() as events:
            self.assertEqual(self.successResultOf(login(checker, "u", "pw")), b"u")
            self.assertEqual(self.successResultOf(login(checker, "u", "pw")), b"u")
        errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn(path, errors[0])
        with open(path, "w") as f:
            f.write("u:{PLAIN}new\n")
        self.assertEqual(self.successResultOf(login(checker, "u", "new")), b"u")
        self.failureResultOf(login(checker, "u", "pw"), UnauthorizedLogin)


# RFC 7677 section 3: user "user", password "pencil"; the keys computed by scramp, not by popd.
RFC7677_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
_rfc7677Keys = ScramMechanism("SCRAM-SHA-256").make_auth_info("pencil", 4096, RFC7677_SALT)
RFC7677_SECRETS = ScramSecrets(RFC7677_SALT, 4096, _rfc7677Keys[1], _rfc7677Keys[2])
RFC7677_LINE = "user:{SCRAM-SHA-256}4096,%s,%s,%s" % tuple(
    base64.b64encode(value).decode() for value in (RFC7677_SALT, *_rfc7677Keys[1:3])
)
# RFC 7677's AuthMessage and ClientProof for those keys.
RFC7677_AUTH_MESSAGE = (
    b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
)
RFC7677_PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")


def scramProof(
    username: bytes, password: bytes, scram: ScramSecrets, hashName: str
) -> ScramCredentials:
    """
    Credentials carrying the proof a client makes from C{password} and the server's salt and
    iteration count (RFC 5802 section 3), for a made-up AuthMessage: the checker only checks
    the proof against it.
    """
    authMessage = b"n=x,r=abc,r=abcdef,s=c2FsdA==,i=4096,c=biws,r=abcdef"
    salted = hashlib.pbkdf2_hmac(hashName, password, scram.salt, scram.iterations)
    clientKey = hmac.digest(salted, b"Client Key", hashName)
    storedKey = hashlib.new(hashName, clientKey).digest()
    signature = hmac.digest(storedKey, authMessage, hashName)
    proof = bytes(a ^ b for a, b in zip(clientKey, signature, strict=True))
    return ScramCredentials(username, hashName, authMessage, proof)


class ScramSchemeTests(SynchronousTestCase):
    """
    The C{SCRAM-SHA-1} and C{SCRAM-SHA-256} schemes, in Dovecot's format.
    """

    def test_format(self) -> None:
        """
        C{iterations,salt,StoredKey,ServerKey}, base64, with a 16-octet salt and 4096
        iterations by default, as C{doveadm pw -s SCRAM-SHA-256}; the keys are those of
        RFC 5802 for that salt, as scramp computes them.
        """
        for scheme, size in [("SCRAM-SHA-256", 32), ("SCRAM-SHA-1", 20)]:
            hashed = hashPassword(PASSWORD, scheme)
            prefix, value = hashed.split("}", 1)
            self.assertEqual(prefix, "{" + scheme)
            iterations, salt, storedKey, serverKey = value.split(",")
            self.assertEqual(iterations, "4096")
            self.assertEqual(len(base64.b64decode(salt)), 16)
            self.assertEqual(len(base64.b64decode(storedKey)), size)
            expected = ScramMechanism(scheme).make_auth_info(PASSWORD, 4096, base64.b64decode(salt))
            self.assertEqual(base64.b64decode(storedKey), expected[1])
            self.assertEqual(base64.b64decode(serverKey), expected[2])
        self.assertIn("}5000,", hashPassword("x", "SCRAM-SHA-1", rounds=5000))

    def test_badRounds(self) -> None:
        """
        Fewer than 4096 iterations (RFC 7677's minimum), or more than scramp accepts, are
        refused rather than clamped as Dovecot does.
        """
        self.assertRaises(ValueError, hashPassword, "x", "SCRAM-SHA-256", rounds=4095)
        self.assertRaises(ValueError, hashPassword, "x", "SCRAM-SHA-256", rounds=10_000_001)

    def test_passAgainstScramEntry(self) -> None:
        """
        A plaintext login (PASS, AUTH PLAIN) is checked against a SCRAM entry by deriving the
        StoredKey with the stored salt: RFC 7677's user logs in with "pencil" only.
        """
        self.patch(cred, "deferToThread", defer.maybeDeferred)
        checker = PasswdFileChecker(writePasswd(self, RFC7677_LINE))
        self.assertEqual(self.successResultOf(login(checker, "user", "pencil")), b"user")
        self.failureResultOf(login(checker, "user", "pencil "), UnauthorizedLogin)

    def test_badLines(self) -> None:
        """
        SCRAM entries that are malformed or unusable by SCRAM clients are skipped with a
        warning.
        """

        def b64(length: int) -> str:
            return base64.b64encode(b"k" * length).decode()

        lines = [
            f"fields:{{SCRAM-SHA-256}}4096,{b64(16)},{b64(32)}",
            f"iterations:{{SCRAM-SHA-256}}x096,{b64(16)},{b64(32)},{b64(32)}",
            f"few:{{SCRAM-SHA-256}}4095,{b64(16)},{b64(32)},{b64(32)}",
            f"salt:{{SCRAM-SHA-256}}4096,{b64(11)},{b64(32)},{b64(32)}",
            f"key:{{SCRAM-SHA-256}}4096,{b64(16)},{b64(20)},{b64(32)}",
            f"base64:{{SCRAM-SHA-1}}4096,{b64(16)},{b64(20)},!{b64(20)}",
            f"good:{{SCRAM-SHA-1}}4096,{b64(16)},{b64(20)},{b64(20)}",
        ]
        with capturedLogs() as events:
            checker = PasswdFileChecker(writePasswd(self, *lines))
        self.assertEqual(len(warningTexts(events)), 6)
        good = self.successResultOf(checker.scramSecrets(b"good", "sha1"))
        self.assertEqual(good, ScramSecrets(b"k" * 16, 4096, b"k" * 20, b"k" * 20))


class ScramSecretSourceTests(SynchronousTestCase):
    """
    L{PasswdFileChecker} as an L{IScramSecretSource}, and as the checker of
    L{IScramCredentials}.
    """

    def setUp(self) -> None:
        self.derivations: list[Callable[[], Any]] = []

        def countingDeferToThread(f: Callable[[], Any]) -> Deferred[Any]:
            self.derivations.append(f)
            return defer.maybeDeferred(f)

        self.patch(cred, "deferToThread", countingDeferToThread)
        self.path = writePasswd(
            self,
            RFC7677_LINE,
            "plain:{PLAIN}pencil",
            "hashed:" + hashPassword("pencil", "SSHA512"),
            "nul:{PLAIN.b64}" + base64.b64encode(b"pen\0cil").decode(),
        )
        self.checker = PasswdFileChecker(self.path)

    def secrets(self, username: bytes, hashName: str = "sha256") -> ScramSecrets:
        found = self.successResultOf(self.checker.scramSecrets(username, hashName))
        assert found is not None
        return found

    def test_interfaces(self) -> None:
        """
        The checker provides L{IScramSecretSource} and lists L{IScramCredentials} only when
        some user can use SCRAM.
        """
        self.assertTrue(verifyObject(IScramSecretSource, self.checker))
        self.assertIn(IScramCredentials, self.checker.credentialInterfaces)
        hashedOnly = PasswdFileChecker(writePasswd(self, "a:" + hashPassword("x", "SSHA512")))
        self.assertNotIn(IScramCredentials, hashedOnly.credentialInterfaces)
        scramOnly = PasswdFileChecker(writePasswd(self, RFC7677_LINE))
        self.assertEqual(
            set(scramOnly.credentialInterfaces), {IUsernamePassword, IScramCredentials}
        )

    def test_storedSecrets(self) -> None:
        """
        A SCRAM entry's secrets are served as stored, for its own hash only.
        """
        self.assertEqual(self.secrets(b"user"), RFC7677_SECRETS)
        other = self.secrets(b"user", "sha1")
        self.assertNotEqual(other.salt, RFC7677_SALT)
        self.assertEqual(len(other.storedKey), 20)

    def test_plaintextDerivedOnce(self) -> None:
        """
        A plaintext user's secrets are derived from the password with a salt stable for this
        process, once per hash until the file changes; a client computes the same keys.
        """
        first = self.secrets(b"plain")
        self.assertEqual(self.secrets(b"plain"), first)
        self.assertEqual(len(self.derivations), 1)
        self.assertEqual(len(first.salt), 16)
        self.assertEqual(first.iterations, 4096)
        expected = ScramMechanism("SCRAM-SHA-256").make_auth_info("pencil", 4096, first.salt)
        self.assertEqual((first.storedKey, first.serverKey), expected[1:3])
        self.secrets(b"plain", "sha1")
        self.assertEqual(len(self.derivations), 2)
        rewrite(self.path, "plain:{PLAIN}pencil")
        self.assertEqual(self.secrets(b"plain"), first)
        self.assertEqual(len(self.derivations), 3)

    def test_fakeSecrets(self) -> None:
        """
        Unknown users, users whose password cannot make SCRAM keys, and users with a NUL in
        their password get fake secrets shaped like real ones (16-octet salt, the file's
        iteration count), stable across exchanges, and nothing is derived for them.
        """
        for name in (b"nobody", b"hashed", b"nul"):
            fake = self.secrets(name)
            self.assertEqual(self.secrets(name), fake)
            shape = (len(fake.salt), fake.iterations, len(fake.storedKey))
            self.assertEqual(shape, (16, 4096, 32))
        self.assertNotEqual(self.secrets(b"nobody").salt, self.secrets(b"hashed").salt)
        self.assertEqual(self.derivations, [])

    def test_fileIterationCount(self) -> None:
        """
        Derived and fake secrets use the iteration count most SCRAM entries use, so that it
        does not tell them apart.
        """
        lines = [f"s{i}:" + hashPassword("x", "SCRAM-SHA-256", rounds=5000) for i in range(2)]
        checker = PasswdFileChecker(writePasswd(self, *lines, "p:{PLAIN}pw"))
        for name in (b"p", b"nobody"):
            found = self.successResultOf(checker.scramSecrets(name, "sha256"))
            assert found is not None
            self.assertEqual(found.iterations, 5000)

    def test_checkScramCredentials(self) -> None:
        """
        L{IScramCredentials} are checked against the StoredKey: RFC 7677's proof passes, a
        proof made with another password fails, and so does any proof for a user without
        real secrets, with the same failure.
        """
        rfc = ScramCredentials(b"user", "sha256", RFC7677_AUTH_MESSAGE, RFC7677_PROOF)
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(rfc)), b"user")
        plain = self.secrets(b"plain")
        good = scramProof(b"plain", b"pencil", plain, "sha256")
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(good)), b"plain")
        failures = [
            self.failureResultOf(self.checker.requestAvatarId(credentials), UnauthorizedLogin)
            for credentials in [
                scramProof(b"plain", b"pencil!", plain, "sha256"),
                scramProof(b"user", b"pencil", RFC7677_SECRETS, "sha1"),
                scramProof(b"nobody", b"pencil", self.secrets(b"nobody"), "sha256"),
                scramProof(b"hashed", b"pencil", self.secrets(b"hashed"), "sha256"),
                ScramCredentials(b"user", "sha256", RFC7677_AUTH_MESSAGE, RFC7677_PROOF[:-1]),
            ]
        ]
        self.assertEqual({f.value.args for f in failures}, {("Invalid user name or password",)})


class SystemCryptTests(SynchronousTestCase):
    """
    SHA-crypt, MD5-crypt and DES-crypt hashes are verified by libxcrypt, which agrees with
    libpass, and libpass still verifies them where libxcrypt is missing.
    """

    def setUp(self) -> None:
        if cred._systemCrypt is None:
            self.fail("libxcrypt (libcrypt.so.1) is missing or failed its known-answer test")

    @settings(max_examples=40, deadline=None)
    @given(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
            min_size=1,
            max_size=40,
        ),
        st.sampled_from(["SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "DES-CRYPT"]),
    )
    def test_agreesWithLibPass(self, password: str, scheme: str) -> None:
        """
        For any password, libxcrypt recomputes exactly the hash libpass made.
        """
        stored = hashPassword(password, scheme).split("}", 1)[1].encode("ascii")
        self.assertEqual(cred._systemCrypt(password.encode("utf-8"), stored), stored)

    def test_fallback(self) -> None:
        """
        Without libxcrypt, libpass verifies: right passwords match, wrong ones do not.
        """
        self.patch(cred, "_systemCrypt", None)
        stored = hashPassword("secret", "SHA512-CRYPT").split("}", 1)[1]
        self.assertTrue(cred._verifyPassLib(sha512_crypt, stored, b"secret"))
        self.assertFalse(cred._verifyPassLib(sha512_crypt, stored, b"Secret"))

    def test_wrongPassword(self) -> None:
        stored = hashPassword("secret", "SHA512-CRYPT").split("}", 1)[1]
        self.assertTrue(cred._verifyPassLib(sha512_crypt, stored, b"secret"))
        self.assertFalse(cred._verifyPassLib(sha512_crypt, stored, b"secret "))
