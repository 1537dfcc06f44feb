"""
Server-side SASL mechanisms for the POP3 C{AUTH} command (RFC 5034).

A mechanism turns the client's responses into C{twisted.cred} credentials; the protocol then
logs in with them exactly as it does for C{USER}/C{PASS}, so every checker works with every
mechanism it can verify, and every failure is answered alike: late, with C{-ERR [AUTH]}.

Mechanisms that need more than the portal's credential interfaces (SCRAM needs a user's salted
keys before the login, OAUTHBEARER the token's verdict) take their back-end when constructed;
L{mechanismsFor} finds those back-ends among a portal's checkers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from scramp import ScramException, ScramMechanism  # type: ignore[import-untyped]
from scramp.utils import saslprep  # type: ignore[import-untyped]
from twisted.cred.credentials import (
    ICredentials,
    IUsernameHashedPassword,
    IUsernamePassword,
    UsernamePassword,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from popd.oauth import IOAuthBearerCredentials, OAuthBearerCredentials, OAuthTokenChecker


class Challenge(NamedTuple):
    """
    The server's next challenge, sent to the client as C{+ <base64>}.
    """

    data: bytes


class MalformedResponse(Exception):
    """
    The client's response does not fit the mechanism; the exchange ends with C{-ERR}.
    """


class ISASLExchange(Interface):
    """
    One run of a mechanism, for one C{AUTH} command.
    """

    def respond(
        response: bytes | None,
    ) -> Challenge | ICredentials | Deferred[Challenge | ICredentials]:
        """
        Take the client's next (base64-decoded) response.

        @param response: the response, or L{None} when C{AUTH} came without an initial one.
        @return: the next challenge, or the credentials to log in with, or a L{Deferred} firing
            with either (for mechanisms that must look up a user's secrets on the way).
        @raise MalformedResponse: when the response cannot be understood (or fail the
            L{Deferred} with it).
        """

    def cancel() -> ICredentials | None:
        """
        The client cancelled the exchange (C{*}, RFC 5034 section 4).

        @return: L{None}, or credentials the portal will refuse when the mechanism had already
            refused the client (OAUTHBEARER's error challenge), so that cancelling then counts,
            and waits, as the failed login it is.
        """


class ISASLMechanism(Interface):
    """
    A SASL mechanism the server can offer.
    """

    name: bytes = Attribute("The registered mechanism name, in upper case.")
    cleartext: bool = Attribute(
        "Whether the password crosses the wire as it is: such mechanisms are only offered "
        "where USER/PASS is (RFC 2595 section 2.2)."
    )

    def available(portal: Portal) -> bool:
        """
        Whether C{portal} can check what this mechanism produces; a mechanism is offered only
        then.
        """

    def exchange(hostname: bytes) -> ISASLExchange:
        """
        Start one authentication exchange on a server called C{hostname}.
        """


def _field(value: bytes) -> bytes:
    """
    Check a decoded user name or password: it must be UTF-8 and free of CR, LF and NUL,
    which could otherwise be smuggled into logs or later lines.
    """
    if b"\r" in value or b"\n" in value or b"\0" in value:
        raise MalformedResponse("control characters in a SASL field")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedResponse("SASL field is not UTF-8") from None
    return value


@implementer(ISASLExchange)
class _PlainExchange:
    def cancel(self) -> None:
        return None

    def respond(self, response: bytes | None) -> Challenge | ICredentials:
        if response is None:
            return Challenge(b"")
        # RFC 4616: authzid NUL authcid NUL passwd.
        parts = response.split(b"\0")
        if len(parts) != 3:
            raise MalformedResponse("PLAIN takes three fields")
        authzid, authcid, password = parts
        if not authcid or not password:
            raise MalformedResponse("PLAIN needs a user name and a password")
        if authzid and authzid != authcid:
            # Acting as another user is not supported; refuse rather than ignore it.
            raise MalformedResponse("PLAIN authorization identity differs")
        return UsernamePassword(_field(authcid), _field(password))


@implementer(ISASLMechanism)
class Plain:
    """
    PLAIN (RFC 4616): user name and password in one response.
    """

    name = b"PLAIN"
    cleartext = True

    def available(self, portal: Portal) -> bool:
        return IUsernamePassword in portal.listCredentialsInterfaces()

    def exchange(self, hostname: bytes) -> ISASLExchange:
        return _PlainExchange()


@implementer(ISASLExchange)
class _LoginExchange:
    def __init__(self) -> None:
        self._username: bytes | None = None

    def cancel(self) -> None:
        return None

    def respond(self, response: bytes | None) -> Challenge | ICredentials:
        if response is None:
            return Challenge(b"Username:")
        if self._username is None:
            self._username = _field(response)
            if not self._username:
                raise MalformedResponse("LOGIN needs a user name")
            return Challenge(b"Password:")
        return UsernamePassword(self._username, _field(response))


@implementer(ISASLMechanism)
class Login:
    """
    LOGIN (draft-murchison-sasl-login): user name and password in two responses; what
    Outlook and many phones use.
    """

    name = b"LOGIN"
    cleartext = True

    def available(self, portal: Portal) -> bool:
        return IUsernamePassword in portal.listCredentialsInterfaces()

    def exchange(self, hostname: bytes) -> ISASLExchange:
        return _LoginExchange()


@implementer(IUsernameHashedPassword)
class CramMD5Credentials:
    """
    A CRAM-MD5 answer (RFC 2195): the hex HMAC-MD5 of the challenge, keyed with the secret.
    """

    def __init__(self, challenge: bytes, username: bytes, digest: bytes) -> None:
        self.challenge = challenge
        self.username = username
        self.digest = digest

    def checkPassword(self, password: bytes) -> bool:
        expected = hmac.new(password, self.challenge, hashlib.md5).hexdigest().encode("ascii")
        return hmac.compare_digest(expected, self.digest)


@implementer(ISASLExchange)
class _CramMD5Exchange:
    def __init__(self, hostname: bytes) -> None:
        self._challenge = b"<%s.%d@%s>" % (
            secrets.token_hex(16).encode("ascii"),
            int(time.time()),
            hostname,
        )
        self._sent = False

    def cancel(self) -> None:
        return None

    def respond(self, response: bytes | None) -> Challenge | ICredentials:
        if not self._sent:
            if response is not None:
                raise MalformedResponse("CRAM-MD5 takes no initial response")
            self._sent = True
            return Challenge(self._challenge)
        username, _, digest = (response or b"").rpartition(b" ")
        if not username or len(digest) != 32 or digest.strip(b"0123456789abcdef"):
            raise MalformedResponse("CRAM-MD5 response is 'user hexdigest'")
        return CramMD5Credentials(self._challenge, _field(username), digest)


@implementer(ISASLMechanism)
class CramMD5:
    """
    CRAM-MD5 (RFC 2195): a challenge-response that keeps the password off the wire but needs
    the secret, or an equivalent, on the server.
    """

    name = b"CRAM-MD5"
    cleartext = False

    def available(self, portal: Portal) -> bool:
        # Checking an HMAC needs the secret in the clear, as for APOP.
        return IUsernameHashedPassword in portal.listCredentialsInterfaces()

    def exchange(self, hostname: bytes) -> ISASLExchange:
        return _CramMD5Exchange(hostname)


#: The mechanisms popd offers by default, strongest first.
DEFAULT_MECHANISMS: tuple[ISASLMechanism, ...] = (CramMD5(), Plain(), Login())


def _unescapeSaslName(name: bytes) -> bytes:
    """
    Decode a GS2 C{saslname} (RFC 5801 section 4, RFC 5802 section 5.1), in which C{,} and C{=}
    are sent as C{=2C} and C{=3D}; any other C{=} is malformed.
    """
    if re.search(rb"=(?!2C|3D)", name):
        raise MalformedResponse("bad escape in a SASL name")
    # =2C first: "=3D2C" is an escaped "=" followed by "2C".
    return name.replace(b"=2C", b",").replace(b"=3D", b"=")


def _gs2Header(header: bytes) -> bytes | None:
    """
    Check a GS2 header without channel binding (RFC 5801 section 4): C{n} or C{y}, then an
    optional C{a=} authorization identity.

    @param header: the header without its final comma: C{flag "," [authzid]}.
    @return: the authorization identity, or L{None} without one.
    @raise MalformedResponse: for anything else, C{p=} (a channel binding request) included:
        popd offers no C{-PLUS} mechanism.
    """
    flag, comma, authzid = header.partition(b",")
    if not comma or flag not in (b"n", b"y"):
        raise MalformedResponse("GS2 header without channel binding expected")
    if not authzid:
        return None
    if not authzid.startswith(b"a="):
        raise MalformedResponse("malformed GS2 authorization identity")
    return _field(_unescapeSaslName(authzid[2:]))


# SCRAM (RFC 5802, RFC 7677)

#: The SCRAM mechanisms popd offers, by the C{hashlib} name of their hash.
SCRAM_HASHES: Final = {"sha256": b"SCRAM-SHA-256", "sha1": b"SCRAM-SHA-1"}

#: The iteration count popd generates, Dovecot's default and RFC 7677's minimum.
SCRAM_DEFAULT_ITERATIONS: Final = 4096

#: The iteration counts scramp accepts (RFC 7677 asks for at least 4096; Dovecot too).
SCRAM_MIN_ITERATIONS: Final = 4096
SCRAM_MAX_ITERATIONS: Final = 10_000_000

# The shortest salt scramp accepts.
_SCRAM_MIN_SALT: Final = 12

# Keys the per-process derivations below: stable salts and fake secrets for one server run.
_PROCESS_KEY: Final = secrets.token_bytes(32)


class ScramSecrets(NamedTuple):
    """
    What a SCRAM server stores for a user (RFC 5802 section 3): never the password itself.

    @ivar salt: the salt of C{SaltedPassword}, sent to the client.
    @ivar iterations: the PBKDF2 iteration count, sent to the client.
    @ivar storedKey: C{H(ClientKey)}: checks the client's proof.
    @ivar serverKey: C{HMAC(SaltedPassword, "Server Key")}: proves the server to the client.
    """

    salt: bytes
    iterations: int
    storedKey: bytes
    serverKey: bytes


def checkScramSecrets(hashName: str, scram: ScramSecrets) -> None:
    """
    Check that SCRAM secrets are usable with C{hashName}.

    @raise ValueError: for a salt shorter than 12 octets, an iteration count outside 4096 to
        10,000,000, or keys that are not digests of C{hashName}; the message names no secret.
    """
    size = hashlib.new(hashName).digest_size
    if len(scram.salt) < _SCRAM_MIN_SALT:
        raise ValueError(f"SCRAM salt shorter than {_SCRAM_MIN_SALT} octets")
    if not SCRAM_MIN_ITERATIONS <= scram.iterations <= SCRAM_MAX_ITERATIONS:
        raise ValueError(
            f"SCRAM iteration count outside {SCRAM_MIN_ITERATIONS}-{SCRAM_MAX_ITERATIONS}"
        )
    if len(scram.storedKey) != size or len(scram.serverKey) != size:
        raise ValueError(f"SCRAM keys are not {size}-octet {hashName} digests")


def _normalize(password: bytes) -> bytes:
    """
    Prepare a password as RFC 5802 section 2.2 says clients do: SASLprep (RFC 4013).
    """
    try:
        prepared: str = saslprep(password.decode("utf-8"))
    except (UnicodeDecodeError, ScramException):
        # No conforming client can send what SASLprep refuses; Dovecot, which never applies
        # it, hashes the octets, and so does popd.
        return password
    return prepared.encode("utf-8")


def deriveScramSecrets(
    hashName: str, password: bytes, salt: bytes, iterations: int
) -> ScramSecrets:
    """
    Compute a user's SCRAM secrets from the password (RFC 5802 section 3).

    The password is SASLprep-ed first, as clients do; Dovecot hashes it as it is, which differs
    only for passwords that SASLprep changes (compatibility characters, non-ASCII spaces).

    @param hashName: a C{hashlib} name, C{"sha256"} or C{"sha1"}.
    """
    salted = hashlib.pbkdf2_hmac(hashName, _normalize(password), salt, iterations)
    clientKey = hmac.digest(salted, b"Client Key", hashName)
    return ScramSecrets(
        salt,
        iterations,
        hashlib.new(hashName, clientKey).digest(),
        hmac.digest(salted, b"Server Key", hashName),
    )


def _processDigest(label: bytes, hashName: str, username: bytes) -> bytes:
    """
    A digest of C{hashName} that only this process can compute, stable for its lifetime.
    """
    message = b"\0".join([label, hashName.encode("ascii"), username])
    return hmac.digest(_PROCESS_KEY, message, hashName)


def scramSalt(hashName: str, username: bytes) -> bytes:
    """
    A 16-octet salt for a user whose SCRAM secrets are derived on the fly: the same for every
    exchange of this process, as a stored salt would be, and unpredictable to others.
    """
    return _processDigest(b"salt", hashName, username)[:16]


def fakeScramSecrets(hashName: str, username: bytes, iterations: int) -> ScramSecrets:
    """
    Secrets for a user who cannot log in with SCRAM (unknown, or no usable password), shaped
    like real ones and stable across exchanges, so that the server-first message does not tell
    such users apart: the exchange goes on and fails at the proof, which nobody can make.
    """
    return ScramSecrets(
        scramSalt(hashName, username),
        iterations,
        _processDigest(b"stored", hashName, username),
        _processDigest(b"server", hashName, username),
    )


class IScramSecretSource(Interface):
    """
    Where SCRAM mechanisms find users' salted keys.
    """

    def scramSecrets(username: bytes, hashName: str) -> Deferred[ScramSecrets | None]:
        """
        Look up a user's SCRAM secrets.

        @param hashName: the C{hashlib} name of the mechanism's hash (C{"sha256"}).
        @return: a L{Deferred} firing with the secrets.  A source that must not reveal which
            users exist fires with fake ones (L{fakeScramSecrets}) for everybody else; L{None}
            lets the mechanism make fakes itself, at the default iteration count.
        """


class IScramCredentials(ICredentials):
    """
    A SCRAM exchange whose proof the mechanism has checked, for the portal's checker to check
    again, cheaply, against the secrets it trusts.
    """

    username: bytes = Attribute("The authentication identity, UTF-8, unescaped.")
    hashName: str = Attribute("The C{hashlib} name of the mechanism's hash.")
    authMessage: bytes = Attribute("The C{AuthMessage} of RFC 5802 section 3.")
    clientProof: bytes = Attribute("The decoded C{ClientProof}.")

    def checkStoredKey(storedKey: bytes) -> bool:
        """
        Whether the proof was made with the C{ClientKey} whose hash is C{storedKey}.
        """


@implementer(IScramCredentials)
class ScramCredentials:
    """
    The outcome of a SCRAM exchange (see L{IScramCredentials}).
    """

    def __init__(
        self, username: bytes, hashName: str, authMessage: bytes, clientProof: bytes
    ) -> None:
        self.username = username
        self.hashName = hashName
        self.authMessage = authMessage
        self.clientProof = clientProof

    def checkStoredKey(self, storedKey: bytes) -> bool:
        # RFC 5802 section 3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage).
        signature = hmac.digest(storedKey, self.authMessage, self.hashName)
        if len(self.clientProof) != len(signature):
            return False
        clientKey = bytes(a ^ b for a, b in zip(self.clientProof, signature, strict=True))
        return hmac.compare_digest(hashlib.new(self.hashName, clientKey).digest(), storedKey)


def _serverNonce() -> str:
    """
    The server's part of a SCRAM nonce: printable, without commas (RFC 5802 section 5.1).
    """
    return secrets.token_urlsafe(24)


@implementer(ISASLExchange)
class _ScramExchange:
    """
    One SCRAM exchange over RFC 5034: client-first, server-first, client-final, then the
    server-final C{v=} as a challenge that the client answers with an empty response.

    scramp parses and checks the messages and the proof; popd reads the user name first, to
    look the secrets up asynchronously, which scramp's synchronous C{auth_fn} cannot.
    """

    def __init__(self, source: IScramSecretSource, hashName: str) -> None:
        self._source = source
        self._hashName = hashName
        self._server: Any = None
        self._secrets: ScramSecrets | None = None
        self._username = b""
        self._clientFirstBare = b""
        self._serverFirst = b""
        self._credentials: ScramCredentials | None = None

    def cancel(self) -> None:
        return None

    def respond(
        self, response: bytes | None
    ) -> Challenge | ICredentials | Deferred[Challenge | ICredentials]:
        if response is None:
            return Challenge(b"")
        if self._credentials is not None:
            # The client has the server's signature; it acknowledges it with nothing.
            if response:
                raise MalformedResponse("SCRAM expects an empty last response")
            return self._credentials
        if self._server is None:
            return self._clientFirst(_field(response))
        return self._clientFinal(_field(response))

    def _clientFirst(self, message: bytes) -> Deferred[Challenge | ICredentials]:
        # gs2-header "n=" saslname "," ...: the user name is the first attribute.
        flag, comma, rest = message.partition(b",")
        authzid, comma2, bare = rest.partition(b",")
        if _gs2Header(flag + comma + authzid) is not None:
            # scramp refuses an authorization identity: acting as another user is not supported.
            raise MalformedResponse("SCRAM authorization identity not supported")
        first = bare.split(b",", 1)[0]
        if not comma2 or not first.startswith(b"n="):
            raise MalformedResponse("SCRAM client-first without a user name")
        username = _unescapeSaslName(first[2:])
        if not username:
            raise MalformedResponse("SCRAM client-first with an empty user name")
        mechanism = ScramMechanism(SCRAM_HASHES[self._hashName].decode("ascii"))
        self._server = mechanism.make_server(self._authInfo, s_nonce=_serverNonce())
        self._username, self._clientFirstBare = username, bare
        lookUp: Deferred[ScramSecrets | None] = maybeDeferred(
            self._source.scramSecrets, username, self._hashName
        )
        return lookUp.addCallback(self._serverFirstMessage, message)

    def _authInfo(self, username: str) -> tuple[bytes, bytes, bytes, int]:
        # scramp's auth_fn: the secrets were looked up before scramp is given the message.
        assert self._secrets is not None
        found = self._secrets
        return found.salt, found.storedKey, found.serverKey, found.iterations

    def _serverFirstMessage(
        self, found: ScramSecrets | None, message: bytes
    ) -> Challenge | ICredentials:
        if found is None:
            found = fakeScramSecrets(self._hashName, self._username, SCRAM_DEFAULT_ITERATIONS)
        # Unusable secrets are the server's fault: a ValueError, answered [SYS/TEMP].
        checkScramSecrets(self._hashName, found)
        self._secrets = found
        try:
            self._server.set_client_first(message.decode("utf-8"))
            serverFirst: str = self._server.get_server_first()
        except ScramException:
            raise MalformedResponse("malformed SCRAM client-first message") from None
        self._serverFirst = serverFirst.encode("ascii")
        return Challenge(self._serverFirst)

    def _clientFinal(self, message: bytes) -> Challenge | ICredentials:
        try:
            self._server.set_client_final(message.decode("utf-8"))
        except ScramException:
            if self._serverError() != "e=invalid-proof":
                raise MalformedResponse("malformed SCRAM client-final message") from None
            # A wrong password: the portal's checker refuses these credentials as it refuses
            # a wrong PASS, so the answer is the same delayed -ERR [AUTH], counted alike.
            return self._makeCredentials(message)
        self._credentials = self._makeCredentials(message)
        return Challenge(str(self._server.get_server_final()).encode("ascii"))

    def _serverError(self) -> str | None:
        """
        The C{e=} message scramp prepared after an error, or L{None}.
        """
        try:
            return str(self._server.get_server_final())
        except ScramException:
            return None

    def _makeCredentials(self, message: bytes) -> ScramCredentials:
        # scramp has checked that the proof is the last attribute, in valid base64.
        withoutProof, _, proof = message.rpartition(b",p=")
        authMessage = b",".join([self._clientFirstBare, self._serverFirst, withoutProof])
        return ScramCredentials(
            self._username, self._hashName, authMessage, base64.b64decode(proof)
        )


@implementer(ISASLMechanism)
class Scram:
    """
    SCRAM-SHA-256 (RFC 7677) or SCRAM-SHA-1 (RFC 5802) without channel binding: a
    challenge-response that keeps the password off the wire, needs only salted keys on the
    server, and lets the client check the server too.

    The mechanism checks the proof itself (the server-final message needs it), and then hands
    L{IScramCredentials} to the portal, whose checker checks the proof again, so that the login
    still goes through the checker and the realm.
    """

    cleartext = False

    def __init__(self, source: IScramSecretSource, hashName: str = "sha256") -> None:
        """
        @param source: where users' secrets come from.
        @param hashName: a key of L{SCRAM_HASHES}.
        """
        if hashName not in SCRAM_HASHES:
            raise ValueError(f"no SCRAM mechanism for {hashName}")
        self.name = SCRAM_HASHES[hashName]
        self._source = source
        self._hashName = hashName

    def available(self, portal: Portal) -> bool:
        return IScramCredentials in portal.listCredentialsInterfaces()

    def exchange(self, hostname: bytes) -> ISASLExchange:
        return _ScramExchange(self._source, self._hashName)


# OAUTHBEARER (RFC 7628) and XOAUTH2

# RFC 6750 section 2.1.
_B64TOKEN: Final = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")


def _keyValues(data: bytes) -> dict[bytes, bytes]:
    """
    Parse C{*kvpair kvsep} (RFC 7628 section 3.1): C{key=value} pairs, each ended by C{\\x01},
    then one more C{\\x01}.
    """
    if not data.endswith(b"\x01"):
        raise MalformedResponse("key-value pairs must end with \\x01")
    items = data[:-1].split(b"\x01")
    if items.pop() != b"":
        raise MalformedResponse("key-value pairs must end with \\x01")
    pairs: dict[bytes, bytes] = {}
    for item in items:
        key, equals, value = item.partition(b"=")
        if not equals or not key.isalpha() or key in pairs:
            raise MalformedResponse("malformed key-value pair")
        pairs[key] = value
    return pairs


def _bearerToken(pairs: dict[bytes, bytes]) -> bytes:
    """
    The token of the C{auth} pair: C{Bearer} (case-insensitive) and a C{b64token} (RFC 6750).
    """
    scheme, _, token = pairs.get(b"auth", b"").partition(b" ")
    token = token.lstrip(b" ")
    if scheme.lower() != b"bearer" or not _B64TOKEN.fullmatch(token):
        raise MalformedResponse("a Bearer token is required")
    return token


def _parseOAuthBearer(response: bytes) -> OAuthBearerCredentials:
    """
    Parse an OAUTHBEARER client response: C{gs2-header kvsep *kvpair kvsep}.
    """
    header, kvsep, rest = _field(response).partition(b"\x01")
    if not kvsep or not header.endswith(b","):
        raise MalformedResponse("OAUTHBEARER starts with a GS2 header")
    return OAuthBearerCredentials(_gs2Header(header[:-1]), _bearerToken(_keyValues(rest)))


def _parseXOAuth2(response: bytes) -> OAuthBearerCredentials:
    """
    Parse an XOAUTH2 client response: C{user=<name>\\x01auth=Bearer <token>\\x01\\x01}.
    """
    pairs = _keyValues(_field(response))
    username = pairs.get(b"user", b"")
    if not username:
        raise MalformedResponse("XOAUTH2 needs a user name")
    return OAuthBearerCredentials(username, _bearerToken(pairs))


@implementer(ISASLExchange)
class _BearerExchange:
    """
    One OAUTHBEARER or XOAUTH2 exchange.

    The token is checked before the login, because a refusal is not a plain C{-ERR}: the
    server first sends an error challenge (RFC 7628 section 3.2.2), which the client answers
    (with C{\\x01}; XOAUTH2 clients with an empty response).  Whatever it answers, the refused
    credentials then go to the portal, whose checker refuses them again from its record of the
    verdict, so that the answer is the protocol's usual delayed C{-ERR [AUTH]}.
    """

    def __init__(
        self,
        checker: OAuthTokenChecker,
        parse: Callable[[bytes], OAuthBearerCredentials],
        error: bytes,
    ) -> None:
        self._checker = checker
        self._parse = parse
        self._error = error
        self._refused: OAuthBearerCredentials | None = None

    def respond(
        self, response: bytes | None
    ) -> Challenge | ICredentials | Deferred[Challenge | ICredentials]:
        if self._refused is not None:
            return self._refused
        if response is None:
            return Challenge(b"")
        credentials = self._parse(response)
        verdict = self._checker.checkAhead(credentials)
        return verdict.addCallbacks(
            self._granted, self._denied, callbackArgs=(credentials,), errbackArgs=(credentials,)
        )

    def cancel(self) -> ICredentials | None:
        return self._refused

    def _granted(self, avatarId: bytes, credentials: OAuthBearerCredentials) -> ICredentials:
        return credentials

    def _denied(self, reason: Failure, credentials: OAuthBearerCredentials) -> Challenge | Failure:
        if not isinstance(reason.value, UnauthorizedLogin):
            # The validator could not decide (its provider is unreachable): a server problem.
            return reason
        self._refused = credentials
        return Challenge(self._error)


def _checksTokens(portal: Portal, checker: OAuthTokenChecker) -> bool:
    """
    Whether C{portal} checks bearer tokens with C{checker}, the one whose verdicts the
    exchanges record.
    """
    return portal.checkers.get(IOAuthBearerCredentials) is checker


def _errorChallenge(fields: dict[str, str | None]) -> bytes:
    """
    A JSON error challenge, the fields in order, those without a value left out.
    """
    present = {key: value for key, value in fields.items() if value is not None}
    return json.dumps(present, separators=(",", ":")).encode("utf-8")


@implementer(ISASLMechanism)
class OAuthBearer:
    """
    OAUTHBEARER (RFC 7628): an OAuth 2.0 bearer token (RFC 6750) in one response.

    The token crosses the wire as it is and can be replayed until it expires: the mechanism is
    offered only where USER/PASS is (TLS or loopback).
    """

    name = b"OAUTHBEARER"
    cleartext = True

    def __init__(
        self,
        checker: OAuthTokenChecker,
        *,
        scope: str | None = None,
        openidConfiguration: str | None = None,
    ) -> None:
        """
        @param checker: validates tokens; the mechanism is available only with a portal
            that checks L{IOAuthBearerCredentials} with it.
        @param scope: the OAuth scope a token needs, told to clients whose token is refused.
        @param openidConfiguration: the URL of the OpenID Connect discovery document that
            tells clients where to get a token, told to them likewise (RFC 7628 section 3.2.2).
        """
        self._checker = checker
        self._error = _errorChallenge(
            {
                "status": "invalid_token",
                "scope": scope,
                "openid-configuration": openidConfiguration,
            }
        )

    def available(self, portal: Portal) -> bool:
        return _checksTokens(portal, self._checker)

    def exchange(self, hostname: bytes) -> ISASLExchange:
        return _BearerExchange(self._checker, _parseOAuthBearer, self._error)


@implementer(ISASLMechanism)
class XOAuth2:
    """
    XOAUTH2, Google's predecessor of OAUTHBEARER, which many mail clients still use for Gmail
    and Microsoft 365 accounts; offered only where USER/PASS is, as L{OAuthBearer}.
    """

    name = b"XOAUTH2"
    cleartext = True

    def __init__(self, checker: OAuthTokenChecker, *, scope: str | None = None) -> None:
        """
        @param checker: validates tokens; the mechanism is available only with a portal
            that checks L{IOAuthBearerCredentials} with it.
        @param scope: the OAuth scope a token needs, told to clients whose token is refused.
        """
        self._checker = checker
        self._error = _errorChallenge({"status": "401", "schemes": "bearer", "scope": scope})

    def available(self, portal: Portal) -> bool:
        return _checksTokens(portal, self._checker)

    def exchange(self, hostname: bytes) -> ISASLExchange:
        return _BearerExchange(self._checker, _parseXOAuth2, self._error)


def mechanismsFor(portal: Portal) -> tuple[ISASLMechanism, ...]:
    """
    The mechanisms a portal's checkers can serve, strongest first: SCRAM-SHA-256 and
    SCRAM-SHA-1 when a checker provides L{IScramSecretSource}; OAUTHBEARER and XOAUTH2 when the
    checker for L{IOAuthBearerCredentials} is an L{OAuthTokenChecker}; then
    L{DEFAULT_MECHANISMS}.  Each is still offered only when C{available}.
    """
    mechanisms: list[ISASLMechanism] = []
    sources = [c for c in portal.checkers.values() if IScramSecretSource.providedBy(c)]
    if sources:
        mechanisms += [Scram(sources[0], hashName) for hashName in SCRAM_HASHES]
    oauth = portal.checkers.get(IOAuthBearerCredentials)
    if isinstance(oauth, OAuthTokenChecker):
        mechanisms += [OAuthBearer(oauth), XOAuth2(oauth)]
    return (*mechanisms, *DEFAULT_MECHANISMS)
