"""
Server-side SASL mechanisms for the POP3 C{AUTH} command (RFC 5034).

A mechanism turns the client's responses into C{twisted.cred} credentials; the protocol then
logs in with them exactly as it does for C{USER}/C{PASS}, so every checker works with every
mechanism it can verify.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import NamedTuple

from twisted.cred.credentials import (
    ICredentials,
    IUsernameHashedPassword,
    IUsernamePassword,
    UsernamePassword,
)
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface, implementer


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
