"""
A C{twisted.cred} checker for Dovecot-compatible passwd-files, and the matching password hasher.

A passwd-file holds one user a line, C{user:{SCHEME}stored[:uid:gid:gecos:home:shell:extra]}, in
UTF-8; blank lines and lines starting with C{#} are ignored, and a password without a
C{{SCHEME}} prefix is in the checker's default scheme (C{CRYPT}, as in Dovecot).  A scheme name
may carry an encoding suffix, C{.b64}/C{.base64} or C{.hex}, that says how the stored value is
written; without one each scheme has Dovecot's default encoding, and the fixed-length digest
schemes tell hex from base64 by length, as Dovecot does.

Scheme names (case-insensitive) and what they store, as Dovecot's C{doveadm pw} writes them:

  - C{PLAIN}, C{CLEAR}, C{CLEARTEXT}: the password itself.
  - C{PLAIN-MD5} (hex), C{LDAP-MD5}, C{SHA}, C{SHA1}, C{SHA256}, C{SHA512} (base64): an unsalted
    digest of the password.
  - C{SMD5}, C{SSHA}, C{SSHA256}, C{SSHA512}: base64 of C{digest(password + salt) + salt}.
  - C{CRYPT}, C{DES-CRYPT}, C{MD5-CRYPT}, C{SHA256-CRYPT}, C{SHA512-CRYPT}, C{BLF-CRYPT}: a
    crypt(3) string (C{$1$}, C{$5$}, C{$6$}, C{$2y$}/C{$2a$}/C{$2b$} or traditional DES).  As in
    Dovecot, any of these names accepts any of these formats; C{CRYPT} generates C{$2y$}.
  - C{MD5}: an C{MD5-CRYPT} string, or failing that a C{PLAIN-MD5} digest (Dovecot's alias).
  - C{ARGON2I}, C{ARGON2ID}, C{ARGON2}: a libsodium-style C{$argon2i$}/C{$argon2id$} string.
  - C{CRAM-MD5}, C{HMAC-MD5}: 64 hex digits, the MD5 states of HMAC-MD5's outer then inner hash
    after the 64-octet key block, each as four little-endian 32-bit words.
  - C{SCRAM-SHA-1}, C{SCRAM-SHA-256}: C{iterations,salt,StoredKey,ServerKey}, the last three in
    base64 (Dovecot's C{password-scheme-scram.c}): what SCRAM needs, and PASS can be checked
    against.

The crypt(3) family, bcrypt and Argon2 are verified by libpass (the maintained fork of passlib).
Neither libpass nor C{hashlib} can produce the intermediate MD5 state that C{CRAM-MD5} stores, so
popd calls OpenSSL's C{MD5_Init} and C{MD5_Transform} through C{ctypes} on the libcrypto that
Python's own C{_hashlib} is linked against: a maintained implementation rather than hand-written
crypto.  Where that library lacks the functions (or fails a known-answer test), C{CRAM-MD5} is
simply not among L{SCHEMES}.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import hmac
import os
import secrets
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, NoReturn

from passlib.exc import PasswordValueError
from passlib.hash import argon2, bcrypt, des_crypt, md5_crypt, sha256_crypt, sha512_crypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer
from zope.interface.interface import InterfaceClass

from popd.sasl import (
    SCRAM_DEFAULT_ITERATIONS,
    SCRAM_MAX_ITERATIONS,
    SCRAM_MIN_ITERATIONS,
    IScramCredentials,
    IScramSecretSource,
    ScramSecrets,
    checkScramSecrets,
    deriveScramSecrets,
    fakeScramSecrets,
    scramSalt,
)

# libpass loads a handler's backend on first use.  Loading them now keeps that out of the worker
# threads, and avoids a libpass 1.9 bug: an argon2 handler made by .using() after another
# handler's backend loaded fails with "failed to replace lazy loader".
bcrypt.get_backend()
argon2.get_backend()

_REFUSED: Final = "Invalid user name or password"

# What hashPassword generates by default, and what an empty file's unknown users cost.
_DEFAULT_SCHEME: Final = "SHA512-CRYPT"

# bcrypt reads at most 72 octets of password; newer bcrypt libraries raise instead of ignoring
# the rest as crypt_blowfish (Dovecot's implementation) does.
_BCRYPT_MAX_PASSWORD: Final = 72

# Dovecot's defaults for doveadm pw (password-scheme-crypt.c).
_SHA_CRYPT_ROUNDS: Final = 5000
_BLF_CRYPT_ROUNDS: Final = 5
# Argon2: libsodium's interactive limits for argon2i (t=4, 32 MiB), one step above them for
# argon2id (t=3, 64 MiB), one lane as libsodium; rounds sets the time cost only.
_ARGON2I_DEFAULTS: Final = {"type": "I", "rounds": 4, "memory_cost": 32768, "parallelism": 1}
_ARGON2ID_DEFAULTS: Final = {"type": "ID", "rounds": 3, "memory_cost": 65536, "parallelism": 1}

# Dovecot salts SSHA and friends with 4 random octets; verifiers take any salt after the digest,
# so popd generates a longer one.
_SALT_LENGTH: Final = 16

# A refused APOP check still computes a digest, with this secret nobody knows.
_DUMMY_SECRET: Final = secrets.token_bytes(32)


class PasswdFileError(Exception):
    """
    The passwd-file given to L{PasswdFileChecker} could not be read.
    """


class _BadLine(Exception):
    """
    A passwd-file line that cannot be used.  The message names the problem and never the secret.
    """


@dataclass(frozen=True)
class _Entry:
    """
    One user's stored password, ready to check.

    @ivar verify: tells whether a password matches; may take long (see C{costScheme}).
    @ivar costScheme: the scheme whose default-cost hash takes as long to verify, used for the
        dummy verification of unknown users and to decide whether to leave the reactor thread.
    @ivar plaintext: the password itself, for plaintext-equivalent schemes only.
    @ivar scram: the C{hashlib} name and the secrets of a stored SCRAM entry.
    @ivar derived: SCRAM secrets derived from C{plaintext}, by C{hashlib} name: a cache that
        lives as long as the entry, until the file is read again.
    """

    verify: Callable[[bytes], bool]
    costScheme: str
    plaintext: bytes | None = None
    scram: tuple[str, ScramSecrets] | None = None
    derived: dict[str, ScramSecrets] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class _Scheme:
    """
    How one scheme name is written, read and generated.

    @ivar encoding: the default encoding of the stored value: C{"none"}, C{"hex"} or
        C{"base64"}.
    @ivar rawLength: the decoded length of a fixed-length value (which lets hex and base64 be
        told apart, as Dovecot does), or C{0}.
    @ivar expensive: whether verification is slow enough to run off the reactor thread.
    @ivar load: makes an L{_Entry} from the decoded stored value, or raises L{_BadLine}.
    @ivar generate: makes the raw stored value from a password and an optional cost.
    """

    encoding: str
    rawLength: int
    expensive: bool
    load: Callable[[bytes], _Entry]
    generate: Callable[[bytes, int | None], bytes]


def _noRounds(name: str, rounds: int | None) -> None:
    """
    Refuse a cost for a scheme that has none.
    """
    if rounds is not None:
        raise ValueError(f"the {name} scheme takes no rounds")


def _checkRounds(name: str, rounds: int, low: int, high: int) -> int:
    """
    Refuse a cost outside the range a scheme allows, rather than silently clamp it as Dovecot.
    """
    if not low <= rounds <= high:
        raise ValueError(f"{name} rounds must be between {low} and {high}")
    return rounds


# PLAIN, CLEAR, CLEARTEXT


def _equal(stored: bytes, password: bytes) -> bool:
    return hmac.compare_digest(stored, password)


def _loadPlain(raw: bytes) -> _Entry:
    return _Entry(partial(_equal, raw), "PLAIN", plaintext=raw)


def _generatePlain(password: bytes, rounds: int | None) -> bytes:
    _noRounds("PLAIN", rounds)
    return password


# Unsalted and salted digests


def _verifyDigest(algorithm: str, stored: bytes, password: bytes) -> bool:
    return hmac.compare_digest(hashlib.new(algorithm, password).digest(), stored)


def _verifySalted(algorithm: str, stored: bytes, password: bytes) -> bool:
    size = hashlib.new(algorithm).digest_size
    digest = hashlib.new(algorithm, password + stored[size:]).digest()
    return hmac.compare_digest(digest, stored[:size])


def _digestScheme(name: str, algorithm: str, encoding: str) -> _Scheme:
    def load(raw: bytes) -> _Entry:
        return _Entry(partial(_verifyDigest, algorithm, raw), name)

    def generate(password: bytes, rounds: int | None) -> bytes:
        _noRounds(name, rounds)
        return hashlib.new(algorithm, password).digest()

    return _Scheme(encoding, hashlib.new(algorithm).digest_size, False, load, generate)


def _saltedScheme(name: str, algorithm: str) -> _Scheme:
    def load(raw: bytes) -> _Entry:
        if len(raw) <= hashlib.new(algorithm).digest_size:
            raise _BadLine(f"{name} value too short to hold a salt")
        return _Entry(partial(_verifySalted, algorithm, raw), name)

    def generate(password: bytes, rounds: int | None) -> bytes:
        _noRounds(name, rounds)
        salt = os.urandom(_SALT_LENGTH)
        return hashlib.new(algorithm, password + salt).digest() + salt

    return _Scheme("base64", 0, False, load, generate)


# crypt(3) and Argon2, through libpass

# The scheme that generates each crypt(3) format at Dovecot's default cost.
_CRYPT_COST_SCHEMES: Final = {
    sha512_crypt: "SHA512-CRYPT",
    sha256_crypt: "SHA256-CRYPT",
    bcrypt: "BLF-CRYPT",
    md5_crypt: "MD5-CRYPT",
    des_crypt: "DES-CRYPT",
}


def _findSystemCrypt() -> Callable[[bytes, bytes], bytes | None] | None:
    """
    Bind the system's crypt(3), libxcrypt's C{crypt_rn}.

    libpass verifies the SHA-crypt and MD5-crypt formats in Python, holding the interpreter
    lock for milliseconds per login; libxcrypt does the same work in C, and a C{ctypes} call
    releases the lock, so logins checked in threads run in parallel.

    @return: a function from a password and a stored hash to the hash recomputed with that
        hash's salt and cost (L{None} when libxcrypt refuses them), or L{None} when there is
        no libxcrypt that passes a known-answer test.
    """
    name = ctypes.util.find_library("crypt")
    try:
        cryptRN = ctypes.CDLL(name).crypt_rn if name else None
    except (OSError, AttributeError):
        cryptRN = None
    if cryptRN is None:
        return None
    cryptRN.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    cryptRN.restype = ctypes.c_char_p
    # Larger than libxcrypt's struct crypt_data (32768 octets on every platform it supports).
    dataSize = 1 << 16

    def systemCrypt(password: bytes, stored: bytes) -> bytes | None:
        data = ctypes.create_string_buffer(dataSize)
        result: bytes | None = cryptRN(password, stored, data, dataSize)
        return None if result is None or result.startswith(b"*") else result

    if systemCrypt(b"password", _SYSTEM_CRYPT_KNOWN_ANSWER) != _SYSTEM_CRYPT_KNOWN_ANSWER:
        return None
    return systemCrypt


# "password" as glibc's and libxcrypt's SHA512-CRYPT with 5000 rounds: a known answer.
_SYSTEM_CRYPT_KNOWN_ANSWER: Final = (
    b"$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc."
    b"eoxqOmSuNp2xS0ktL3nh/"
)

_systemCrypt: Final = _findSystemCrypt()

# The formats libxcrypt verifies for libpass.
_SYSTEM_CRYPT_HANDLERS: Final = (sha512_crypt, sha256_crypt, md5_crypt, des_crypt)


def _verifyPassLib(handler: Any, stored: str, password: bytes) -> bool:
    if handler in _SYSTEM_CRYPT_HANDLERS and _systemCrypt is not None:
        recomputed = _systemCrypt(password, stored.encode("ascii"))
        if recomputed is not None:
            return hmac.compare_digest(recomputed, stored.encode("ascii"))
    if handler is bcrypt:
        password = password[:_BCRYPT_MAX_PASSWORD]
    try:
        return bool(handler.verify(password, stored))
    except PasswordValueError:
        # A password longer than libpass takes (4096 octets) matches nothing.
        return False


def _parsePassLib(handlers: tuple[Any, ...], raw: bytes) -> tuple[Any, str]:
    """
    Find the libpass handler for a stored hash and check that the hash is well-formed, so that
    a damaged line is reported when the file is read rather than at each login.
    """
    try:
        stored = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _BadLine("hash is not ASCII") from None
    for handler in handlers:
        if handler.identify(stored):
            try:
                handler.from_string(stored)
            except ValueError:
                raise _BadLine(f"malformed {handler.name} hash") from None
            return handler, stored
    raise _BadLine("hash format not supported")


def _loadCrypt(raw: bytes) -> _Entry:
    handler, stored = _parsePassLib(tuple(_CRYPT_COST_SCHEMES), raw)
    return _Entry(partial(_verifyPassLib, handler, stored), _CRYPT_COST_SCHEMES[handler])


def _hashPassLib(handler: Any, password: bytes, **settings: Any) -> bytes:
    if handler is bcrypt:
        password = password[:_BCRYPT_MAX_PASSWORD]
    return str(handler.using(**settings).hash(password)).encode("ascii")


def _generateDESCrypt(password: bytes, rounds: int | None) -> bytes:
    _noRounds("DES-CRYPT", rounds)
    return _hashPassLib(des_crypt, password)


def _generateMD5Crypt(password: bytes, rounds: int | None) -> bytes:
    _noRounds("MD5-CRYPT", rounds)
    return _hashPassLib(md5_crypt, password)


def _generateSHACrypt(handler: Any, name: str, password: bytes, rounds: int | None) -> bytes:
    # With the default 5000 rounds the "rounds=" field is left out, as glibc and Dovecot do.
    if rounds is None:
        rounds = _SHA_CRYPT_ROUNDS
    return _hashPassLib(handler, password, rounds=_checkRounds(name, rounds, 1000, 999999999))


def _generateBLFCrypt(password: bytes, rounds: int | None) -> bytes:
    if rounds is None:
        rounds = _BLF_CRYPT_ROUNDS
    rounds = _checkRounds("BLF-CRYPT", rounds, 4, 31)
    return _hashPassLib(bcrypt, password, ident="2y", rounds=rounds)


def _loadArgon2(raw: bytes) -> _Entry:
    handler, stored = _parsePassLib((argon2,), raw)
    costScheme = "ARGON2I" if handler.from_string(stored).type == "i" else "ARGON2ID"
    return _Entry(partial(_verifyPassLib, handler, stored), costScheme)


def _generateArgon2(
    name: str, defaults: dict[str, Any], password: bytes, rounds: int | None
) -> bytes:
    settings = dict(defaults)
    if rounds is not None:
        settings["rounds"] = _checkRounds(name, rounds, 1, 2**32 - 1)
    return _hashPassLib(argon2, password, **settings)


def _loadMD5(raw: bytes) -> _Entry:
    # Dovecot's MD5 scheme: an MD5-CRYPT string, or else a PLAIN-MD5 digest in hex or base64.
    if raw.startswith(b"$1$"):
        handler, stored = _parsePassLib((md5_crypt,), raw)
        return _Entry(partial(_verifyPassLib, handler, stored), "MD5-CRYPT")
    plainMD5 = _SCHEMES["PLAIN-MD5"]
    # Latin-1 maps every octet; anything not ASCII then fails to decode as hex or base64.
    return plainMD5.load(_decode(raw.decode("latin-1"), plainMD5, None))


# CRAM-MD5, through OpenSSL's MD5 compression function


class _MD5Context(ctypes.Structure):
    """
    OpenSSL's C{MD5_CTX} (C{openssl/md5.h}); popd reads only the state words C{A} to C{D}.
    """

    _fields_ = [
        ("A", ctypes.c_uint32),
        ("B", ctypes.c_uint32),
        ("C", ctypes.c_uint32),
        ("D", ctypes.c_uint32),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint32 * 16),
        ("num", ctypes.c_uint),
    ]


# HMAC's key pads (RFC 2104), as translation tables the way the hmac module builds them.
_INNER_PAD: Final = bytes(octet ^ 0x36 for octet in range(256))
_OUTER_PAD: Final = bytes(octet ^ 0x5C for octet in range(256))

# What Dovecot stores for the password "password" (doveadm pw -s CRAM-MD5).
_CRAM_MD5_KNOWN_ANSWER: Final = bytes.fromhex(
    "9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740"
)


def _findMD5Block() -> Callable[[bytes], bytes] | None:
    """
    Bind OpenSSL's MD5 compression function.

    @return: a function from one 64-octet block to the 16-octet MD5 state after compressing it
        into the initial state, as four little-endian words; or L{None} when this Python's
        libcrypto does not provide one that passes a known-answer test.
    """
    try:
        import _hashlib

        # dlsym on the extension module also finds the symbols of the libcrypto it links.
        libcrypto = ctypes.CDLL(_hashlib.__file__)
        md5Init = libcrypto.MD5_Init
        md5Transform = libcrypto.MD5_Transform
    except (ImportError, OSError, AttributeError):
        return None
    md5Init.argtypes = [ctypes.POINTER(_MD5Context)]
    md5Init.restype = ctypes.c_int
    md5Transform.argtypes = [ctypes.POINTER(_MD5Context), ctypes.c_char_p]
    md5Transform.restype = None

    def md5Block(block: bytes) -> bytes:
        context = _MD5Context()
        md5Init(ctypes.byref(context))
        md5Transform(ctypes.byref(context), block)
        return struct.pack("<4I", context.A, context.B, context.C, context.D)

    if _cramMD5Contexts(md5Block, b"password") != _CRAM_MD5_KNOWN_ANSWER:
        return None
    return md5Block


def _cramMD5Contexts(md5Block: Callable[[bytes], bytes], password: bytes) -> bytes:
    """
    Compute what Dovecot's C{CRAM-MD5} scheme stores: the HMAC-MD5 outer then inner state after
    the key block.
    """
    key = hashlib.md5(password).digest() if len(password) > 64 else password
    key = key.ljust(64, b"\0")
    return md5Block(key.translate(_OUTER_PAD)) + md5Block(key.translate(_INNER_PAD))


def _cramMD5Scheme(md5Block: Callable[[bytes], bytes]) -> _Scheme:
    def verify(stored: bytes, password: bytes) -> bool:
        return hmac.compare_digest(_cramMD5Contexts(md5Block, password), stored)

    def load(raw: bytes) -> _Entry:
        return _Entry(partial(verify, raw), "CRAM-MD5")

    def generate(password: bytes, rounds: int | None) -> bytes:
        _noRounds("CRAM-MD5", rounds)
        return _cramMD5Contexts(md5Block, password)

    return _Scheme("hex", 32, False, load, generate)


# SCRAM-SHA-1, SCRAM-SHA-256


def _parseScram(hashName: str, raw: bytes) -> ScramSecrets:
    """
    Parse Dovecot's C{iterations,base64(salt),base64(StoredKey),base64(ServerKey)}.

    @raise _BadLine: when malformed, or outside what SCRAM clients accept.
    """
    fields = raw.split(b",")
    if len(fields) != 4 or not fields[0].isdigit():
        raise _BadLine("SCRAM value is not iterations,salt,StoredKey,ServerKey")
    try:
        salt, storedKey, serverKey = (base64.b64decode(f, validate=True) for f in fields[1:])
    except ValueError:
        raise _BadLine("SCRAM value is not valid base64") from None
    scram = ScramSecrets(salt, int(fields[0]), storedKey, serverKey)
    try:
        checkScramSecrets(hashName, scram)
    except ValueError as e:
        raise _BadLine(str(e)) from None
    return scram


def _verifyScram(hashName: str, stored: ScramSecrets, password: bytes) -> bool:
    derived = deriveScramSecrets(hashName, password, stored.salt, stored.iterations)
    return hmac.compare_digest(derived.storedKey, stored.storedKey)


def _scramScheme(name: str, hashName: str) -> _Scheme:
    def load(raw: bytes) -> _Entry:
        stored = _parseScram(hashName, raw)
        return _Entry(partial(_verifyScram, hashName, stored), name, scram=(hashName, stored))

    def generate(password: bytes, rounds: int | None) -> bytes:
        if rounds is None:
            rounds = SCRAM_DEFAULT_ITERATIONS
        # Dovecot's range, capped where scramp stops.
        iterations = _checkRounds(name, rounds, SCRAM_MIN_ITERATIONS, SCRAM_MAX_ITERATIONS)
        scram = deriveScramSecrets(hashName, password, os.urandom(_SALT_LENGTH), iterations)
        encoded = (base64.b64encode(v) for v in (scram.salt, scram.storedKey, scram.serverKey))
        return b",".join([b"%d" % (iterations,), *encoded])

    return _Scheme("none", 0, True, load, generate)


def _buildSchemes() -> dict[str, _Scheme]:
    plain = _Scheme("none", 0, False, _loadPlain, _generatePlain)
    crypt = partial(_Scheme, "none", 0, True, _loadCrypt)
    sha256Crypt = partial(_generateSHACrypt, sha256_crypt, "SHA256-CRYPT")
    sha512Crypt = partial(_generateSHACrypt, sha512_crypt, "SHA512-CRYPT")
    argon2i = partial(_generateArgon2, "ARGON2I", _ARGON2I_DEFAULTS)
    argon2id = partial(_generateArgon2, "ARGON2ID", _ARGON2ID_DEFAULTS)
    schemes = {
        "PLAIN": plain,
        "CLEAR": plain,
        "CLEARTEXT": plain,
        "PLAIN-MD5": _digestScheme("PLAIN-MD5", "md5", "hex"),
        "LDAP-MD5": _digestScheme("LDAP-MD5", "md5", "base64"),
        "SHA": _digestScheme("SHA", "sha1", "base64"),
        "SHA1": _digestScheme("SHA1", "sha1", "base64"),
        "SHA256": _digestScheme("SHA256", "sha256", "base64"),
        "SHA512": _digestScheme("SHA512", "sha512", "base64"),
        "SMD5": _saltedScheme("SMD5", "md5"),
        "SSHA": _saltedScheme("SSHA", "sha1"),
        "SSHA256": _saltedScheme("SSHA256", "sha256"),
        "SSHA512": _saltedScheme("SSHA512", "sha512"),
        "CRYPT": crypt(_generateBLFCrypt),
        "DES-CRYPT": crypt(_generateDESCrypt),
        "MD5-CRYPT": crypt(_generateMD5Crypt),
        "SHA256-CRYPT": crypt(sha256Crypt),
        "SHA512-CRYPT": crypt(sha512Crypt),
        "BLF-CRYPT": crypt(_generateBLFCrypt),
        "MD5": _Scheme("none", 0, True, _loadMD5, _generateMD5Crypt),
        "ARGON2": _Scheme("none", 0, True, _loadArgon2, argon2id),
        "ARGON2I": _Scheme("none", 0, True, _loadArgon2, argon2i),
        "ARGON2ID": _Scheme("none", 0, True, _loadArgon2, argon2id),
        "SCRAM-SHA-1": _scramScheme("SCRAM-SHA-1", "sha1"),
        "SCRAM-SHA-256": _scramScheme("SCRAM-SHA-256", "sha256"),
    }
    md5Block = _findMD5Block()
    if md5Block is not None:
        schemes["CRAM-MD5"] = schemes["HMAC-MD5"] = _cramMD5Scheme(md5Block)
    return schemes


_SCHEMES: Final = _buildSchemes()

SCHEMES: Final[tuple[str, ...]] = tuple(sorted(_SCHEMES))
"""
The supported scheme names, upper-case (names are matched case-insensitively).
"""

_ENCODINGS: Final = {"B64": "base64", "BASE64": "base64", "HEX": "hex"}


def _lookUp(name: str) -> tuple[_Scheme, str | None]:
    """
    Find a scheme by its name with an optional encoding suffix (C{SSHA.hex}).

    @return: the scheme, and the encoding the suffix names or L{None} without one.
    @raise ValueError: for an unknown scheme or encoding.
    """
    schemeName, dot, encodingName = name.upper().partition(".")
    scheme = _SCHEMES.get(schemeName)
    encoding = _ENCODINGS.get(encodingName) if dot else None
    if scheme is None or (dot and encoding is None):
        raise ValueError(f"unknown password scheme: {name}")
    return scheme, encoding


def _decode(value: str, scheme: _Scheme, encoding: str | None) -> bytes:
    """
    Turn a stored value into the octets its scheme works on.

    @param encoding: the encoding a suffix named, or L{None} for the scheme's default.
    """
    if encoding is None:
        encoding = scheme.encoding
        if encoding != "none" and scheme.rawLength:
            encoding = "hex" if len(value) == 2 * scheme.rawLength else "base64"
    try:
        if encoding == "hex":
            raw = binascii.a2b_hex(value)
        elif encoding == "base64":
            raw = base64.b64decode(value, validate=True)
        else:
            raw = value.encode("utf-8")
    except ValueError:
        raise _BadLine(f"value is not valid {encoding}") from None
    if scheme.rawLength and len(raw) != scheme.rawLength:
        raise _BadLine(f"value is {len(raw)} octets instead of {scheme.rawLength}")
    return raw


def _parsePassword(stored: str, defaultScheme: str) -> _Entry:
    """
    Parse the password field of a passwd-file line.

    @raise _BadLine: when the field cannot be used.
    """
    if stored.startswith("{") and "}" in stored:
        schemeName, value = stored[1:].split("}", 1)
    elif stored.startswith("$1$"):
        # Dovecot takes an unprefixed MD5-crypt string as such, whatever the default scheme.
        schemeName, value = "MD5-CRYPT", stored
    else:
        schemeName, value = defaultScheme, stored
    try:
        scheme, encoding = _lookUp(schemeName)
    except ValueError:
        # Not named: a mistyped prefix may be part of a password.
        raise _BadLine("unknown password scheme") from None
    return scheme.load(_decode(value, scheme, encoding))


def hashPassword(password: str, scheme: str = _DEFAULT_SCHEME, *, rounds: int | None = None) -> str:
    """
    Hash a password the way Dovecot's C{doveadm pw -s SCHEME} does.

    @param password: the password; it is hashed as UTF-8.
    @param scheme: one of L{SCHEMES}, case-insensitive, with an optional C{.b64} or C{.hex}
        encoding suffix.  C{CRYPT} generates C{$2y$} bcrypt, as Dovecot does.
    @param rounds: the cost, as C{doveadm pw -r}: the rounds of C{SHA256-CRYPT} and
        C{SHA512-CRYPT} (default 5000), the log2 cost of C{BLF-CRYPT} and C{CRYPT} (default
        5), the time cost of the Argon2 schemes, the iteration count of the SCRAM schemes
        (default 4096, at most 10,000,000); L{None} for the default.
    @return: the complete C{{SCHEME}value} password field.
    @raise ValueError: for an unknown scheme, a cost the scheme does not take, a password with
        a NUL (which no login could present, see L{PasswdFileChecker}), or a colon or line break
        in a C{PLAIN} field without an encoding suffix.
    """
    spec, encoding = _lookUp(scheme)
    if "\0" in password:
        raise ValueError("a password cannot contain NUL")
    raw = spec.generate(password.encode("utf-8"), rounds)
    encoding = encoding or spec.encoding
    if encoding == "hex":
        value = raw.hex()
    elif encoding == "base64":
        value = base64.b64encode(raw).decode("ascii")
    else:
        value = raw.decode("utf-8")
        if any(separator in value for separator in ":\r\n"):
            raise ValueError(f"{scheme} cannot store ':' or line breaks; use {scheme}.b64")
    return f"{{{scheme.upper()}}}{value}"


_dummyEntries: dict[str, _Entry] = {}


def _dummyEntry(scheme: str) -> _Entry:
    """
    Return an entry, hashed at the default cost in C{scheme}, for nobody's random password.

    Verifying an unknown user's password against it takes as long as verifying a real user's,
    so that timing does not reveal which names exist.  Made once per scheme, on first use (in a
    worker thread for expensive schemes).
    """
    entry = _dummyEntries.get(scheme)
    if entry is None:
        entry = _parsePassword(hashPassword(secrets.token_urlsafe(), scheme), scheme)
        entry = _dummyEntries.setdefault(scheme, entry)
    return entry


def _verifyUnknown(scheme: str, password: bytes) -> bool:
    """
    Spend the time a verification in C{scheme} takes, then refuse.
    """
    _dummyEntry(scheme).verify(password)
    return False


def _fileIdentity(status: os.stat_result) -> tuple[int, int, int, int]:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


@implementer(ICredentialsChecker, IScramSecretSource)
class PasswdFileChecker:
    """
    Check user names and passwords against a Dovecot-compatible passwd-file.

    Checks L{IUsernamePassword} for every user, L{IUsernameHashedPassword} (APOP, CRAM-MD5)
    for users whose password is stored in a plaintext-equivalent scheme (C{PLAIN}, C{CLEAR},
    C{CLEARTEXT}), and L{IScramCredentials} for those and for users stored in the matching
    C{SCRAM-*} scheme.  An unknown user and a wrong password fail alike, with the same
    L{UnauthorizedLogin} after about the same time.  A password with a NUL octet never
    matches: Dovecot, working on C strings, can neither store nor receive one, and HMAC's
    zero-padded key would make C{CRAM-MD5} take C{"pw\\0"} for C{"pw"}.

    As an L{IScramSecretSource} it serves the SCRAM mechanisms: stored secrets as they are;
    for plaintext users, secrets derived with a salt that is stable for this process
    (L{scramSalt}) and the file's usual iteration count, computed in a worker thread once per
    user, hash and reading of the file; fake ones of the same shape for every other name, so
    that the exchange does not reveal which users exist.  (A plaintext user's first exchange
    after a reading of the file takes one PBKDF2 longer.)

    The file is read again when its inode, size or modification time change, checked with one
    C{stat} per check, so that an administrator's edit applies without a restart.  Lines that
    cannot be used are skipped with a warning naming the line number; a user defined twice keeps
    the first definition.  A file that becomes unreadable leaves the last contents read in use.

    @ivar defaultScheme: the scheme of passwords without a C{{SCHEME}} prefix.
    """

    _log = Logger()

    def __init__(self, path: str | FilePath[str], defaultScheme: str = "CRYPT") -> None:
        """
        Read the passwd-file.

        @param path: the passwd-file, UTF-8.
        @param defaultScheme: one of L{SCHEMES}, optionally with an encoding suffix.
        @raise PasswdFileError: when the file cannot be read.
        @raise ValueError: for an unknown C{defaultScheme}.
        """
        _lookUp(defaultScheme)
        self._path = path.path if isinstance(path, FilePath) else path
        self.defaultScheme = defaultScheme
        self._users: dict[bytes, _Entry] = {}
        self._identity: tuple[int, int, int, int] | None = None
        self._hasPlaintext = False
        self._hasScram = False
        self._scramIterations: dict[str, int] = {}
        self._costScheme = _DEFAULT_SCHEME
        self._unreadable = False
        try:
            self._read()
        except OSError as e:
            reason = e.strerror or e
            raise PasswdFileError(f"cannot read passwd-file {self._path}: {reason}") from e

    @property
    def credentialInterfaces(self) -> tuple[InterfaceClass, ...]:
        """
        L{IUsernamePassword}; L{IUsernameHashedPassword} when at least one user's password is
        stored in a plaintext-equivalent scheme; L{IScramCredentials} when at least one user
        can use SCRAM (such a password, or a C{SCRAM-*} one).  Reflects the file as last read,
        without checking it for changes; note that a L{Portal<twisted.cred.portal.Portal>}
        reads this once, when the checker is registered.
        """
        interfaces: tuple[InterfaceClass, ...] = (IUsernamePassword,)
        if self._hasPlaintext:
            interfaces += (IUsernameHashedPassword,)
        if self._hasScram:
            interfaces += (IScramCredentials,)
        return interfaces

    def plaintextSecret(self, username: bytes) -> bytes | None:
        """
        Return a user's password when it is stored in a plaintext-equivalent scheme, for
        mechanisms that need the shared secret itself (APOP, CRAM-MD5).

        @return: the password, or L{None} for an unknown user or a hashed password.
        """
        self._refresh()
        entry = self._users.get(username)
        return None if entry is None else entry.plaintext

    def scramSecrets(self, username: bytes, hashName: str) -> Deferred[ScramSecrets | None]:
        """
        Look up a user's SCRAM secrets (see the class docstring); never L{None}.
        """
        self._refresh()
        found: Deferred[ScramSecrets | None] = self._lookUpScram(username, hashName).addCallback(
            lambda result: result[0]
        )
        return found

    def _lookUpScram(self, username: bytes, hashName: str) -> Deferred[tuple[ScramSecrets, bool]]:
        """
        Find or make a user's SCRAM secrets.

        @return: a L{Deferred} firing with the secrets, and whether they are real (rather than
            fake ones, for a user who cannot log in with SCRAM using C{hashName}).
        """
        entry = self._users.get(username)
        iterations = self._scramIterations.get(hashName, SCRAM_DEFAULT_ITERATIONS)
        if entry is not None and entry.scram is not None and entry.scram[0] == hashName:
            return succeed((entry.scram[1], True))
        # A password with a NUL matches nothing (see the class docstring).
        if entry is not None and entry.plaintext is not None and b"\0" not in entry.plaintext:
            cached = entry.derived.get(hashName)
            if cached is not None:
                return succeed((cached, True))
            derive = partial(
                deriveScramSecrets,
                hashName,
                entry.plaintext,
                scramSalt(hashName, username),
                iterations,
            )
            derived: Deferred[ScramSecrets] = deferToThread(derive)
            return derived.addCallback(
                lambda scram: (entry.derived.setdefault(hashName, scram), True)
            )
        return succeed((fakeScramSecrets(hashName, username, iterations), False))

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        """
        Check credentials against the passwd-file.

        @param credentials: an L{IUsernamePassword}, L{IUsernameHashedPassword} or
            L{IScramCredentials} provider.
        @return: a L{Deferred} firing with the user name, or failing with L{UnauthorizedLogin}:
            the same failure for an unknown user, a wrong password, and a user whose stored
            password cannot check the credentials given.
        """
        self._refresh()
        username: bytes = credentials.username
        entry = self._users.get(username)
        if IUsernamePassword.providedBy(credentials):
            password: bytes = credentials.password
            if b"\0" in password:
                matched = succeed(False)
            else:
                matched = self._verify(entry, password)
        elif IScramCredentials.providedBy(credentials):
            matched = self._checkScram(username, credentials)
        else:
            matched = self._checkHashed(entry, credentials)
        return matched.addCallbacks(
            self._matched, self._unexpected, callbackArgs=(username,), errbackArgs=(username,)
        )

    def _verify(self, entry: _Entry | None, password: bytes) -> Deferred[bool]:
        """
        Verify a plaintext password, in a worker thread when that takes long.  An unknown user's
        password is verified against a dummy hash of the file's most common kind.
        """
        if entry is None:
            check: Callable[[], bool] = partial(_verifyUnknown, self._costScheme, password)
            costScheme = self._costScheme
        else:
            check = partial(entry.verify, password)
            costScheme = entry.costScheme
        if _SCHEMES[costScheme].expensive:
            return deferToThread(check)
        return maybeDeferred(check)

    def _checkHashed(self, entry: _Entry | None, credentials: Any) -> Deferred[bool]:
        """
        Let L{IUsernameHashedPassword} credentials check themselves against the plaintext
        password.  Without one a digest is still computed, against a secret nobody knows, so
        that refusals take the same time.
        """
        secret = None if entry is None else entry.plaintext
        matched: Deferred[bool] = maybeDeferred(
            credentials.checkPassword, _DUMMY_SECRET if secret is None else secret
        )
        return matched.addCallback(lambda result: bool(result) and secret is not None)

    def _checkScram(self, username: bytes, credentials: Any) -> Deferred[bool]:
        """
        Check the proof of L{IScramCredentials} against the StoredKey, real or fake, so that
        refusals take the same time.
        """
        found = self._lookUpScram(username, credentials.hashName)
        return found.addCallback(
            lambda result: bool(credentials.checkStoredKey(result[0].storedKey)) and result[1]
        )

    def _matched(self, matched: bool, username: bytes) -> bytes:
        if not matched:
            raise UnauthorizedLogin(_REFUSED)
        return username

    def _unexpected(self, failure: Failure, username: bytes) -> NoReturn:
        """
        Log an error raised while checking, and answer it with a refusal, so that the client
        learns no more than from any refusal.
        """
        self._log.failure("Checking the password of {user!r} failed", failure, user=username)
        raise UnauthorizedLogin(_REFUSED)

    def reload(self) -> None:
        """
        Read the file again now if it changed (on C{SIGHUP}); every check does this anyway.
        """
        self._refresh()

    def _refresh(self) -> None:
        """
        Read the file again when it changed; keep the last contents read when it cannot be.
        """
        try:
            if _fileIdentity(os.stat(self._path)) != self._identity:
                self._read()
        except OSError as e:
            if not self._unreadable:
                self._log.error(
                    "Cannot read passwd-file {path}: {error}; keeping the {count} users read "
                    "before",
                    path=self._path,
                    error=e.strerror or e,
                    count=len(self._users),
                )
            self._unreadable = True
        else:
            if self._unreadable:
                self._log.info("passwd-file {path} is readable again", path=self._path)
            self._unreadable = False

    def _read(self) -> None:
        """
        Read and parse the file, replacing the users known so far.

        @raise OSError: when the file cannot be read.
        """
        with open(self._path, "rb") as passwdFile:
            identity = _fileIdentity(os.fstat(passwdFile.fileno()))
            data = passwdFile.read()
        users: dict[bytes, _Entry] = {}
        for lineNumber, line in enumerate(data.split(b"\n"), 1):
            line = line.removesuffix(b"\r")
            if not line.strip() or line.startswith(b"#"):
                continue
            try:
                username, entry = self._parseLine(line)
            except _BadLine as e:
                self._log.warn(
                    "passwd-file {path} line {lineNumber}: {reason}; line skipped",
                    path=self._path,
                    lineNumber=lineNumber,
                    reason=str(e),
                )
                continue
            if username in users:
                self._log.warn(
                    "passwd-file {path} line {lineNumber}: user {user!r} is already defined; "
                    "the first definition wins",
                    path=self._path,
                    lineNumber=lineNumber,
                    user=username,
                )
                continue
            users[username] = entry
        self._users = users
        self._identity = identity
        self._hasPlaintext = any(entry.plaintext is not None for entry in users.values())
        self._hasScram = self._hasPlaintext or any(e.scram is not None for e in users.values())
        # Derived and fake secrets use the iteration count most stored ones use, so that the
        # server-first message does not single them out.
        scramIterations: dict[str, Counter[int]] = {}
        for entry in users.values():
            if entry.scram is not None:
                hashName, stored = entry.scram
                scramIterations.setdefault(hashName, Counter())[stored.iterations] += 1
        self._scramIterations = {
            hashName: counts.most_common(1)[0][0] for hashName, counts in scramIterations.items()
        }
        costSchemes = Counter(entry.costScheme for entry in users.values())
        self._costScheme = costSchemes.most_common(1)[0][0] if users else _DEFAULT_SCHEME
        self._log.info(
            "Read {count} users from passwd-file {path}", count=len(users), path=self._path
        )

    def _parseLine(self, line: bytes) -> tuple[bytes, _Entry]:
        """
        Parse one C{user:password[:...]} line.

        @raise _BadLine: when it cannot be used.
        """
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadLine("not valid UTF-8") from None
        fields = text.split(":")
        if len(fields) < 2 or not fields[0]:
            raise _BadLine("expected user:password")
        if not fields[1]:
            raise _BadLine("empty password field")
        return fields[0].encode("utf-8"), _parsePassword(fields[1], self.defaultScheme)
