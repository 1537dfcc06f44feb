"""
OAuth 2.0 bearer tokens (RFC 6750) as C{twisted.cred} credentials, for the OAUTHBEARER
(RFC 7628) and XOAUTH2 SASL mechanisms of L{popd.sasl}.

popd does not know how to check a token: that depends on the identity provider (a JWT signed
with its keys, an introspection endpoint as in RFC 7662, a Google or Microsoft API).  An
application provides an L{ITokenValidator}; L{OAuthTokenChecker} makes a checker of it.
"""

from __future__ import annotations

from typing import cast
from weakref import WeakKeyDictionary, WeakSet

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer


class ITokenValidator(Interface):
    """
    Decides whether a bearer token grants access to a maildrop.
    """

    def validate(username: bytes | None, token: bytes) -> Deferred[bytes | None]:
        """
        Check a token.

        @param username: the user the client asks to log in as, or L{None} when it named
            nobody (OAUTHBEARER's authorization identity is optional) and the token alone
            says who it is.
        @param token: the token, as the client sent it.
        @return: a L{Deferred} firing with the user the token grants access to, or L{None} to
            refuse it (expired, revoked, wrong audience or scope).  A user other than
            C{username} is a refusal too.  Fail it only for problems that say nothing about
            the token (the identity provider cannot be reached): the client then gets
            C{-ERR [SYS/TEMP]} rather than C{-ERR [AUTH]}.
        """


class IOAuthBearerCredentials(ICredentials):
    """
    A bearer token, and the user it is presented for.
    """

    username: bytes | None = Attribute("The user asked for, or L{None}.")
    token: bytes = Attribute("The bearer token.")


@implementer(IOAuthBearerCredentials)
class OAuthBearerCredentials:
    """
    A bearer token from OAUTHBEARER or XOAUTH2.
    """

    def __init__(self, username: bytes | None, token: bytes) -> None:
        self.username = username
        self.token = token


@implementer(ICredentialsChecker)
class OAuthTokenChecker:
    """
    Check L{IOAuthBearerCredentials} with an L{ITokenValidator}; the avatar ID is the user the
    validator names.

    OAUTHBEARER must know a token's verdict before the login, to send RFC 7628's error
    challenge: L{checkAhead} asks the validator then, and the login that follows with the same
    credentials object reuses the verdict rather than asking again (an identity provider may
    be remote, or count uses).
    """

    credentialInterfaces = (IOAuthBearerCredentials,)

    def __init__(self, validator: ITokenValidator) -> None:
        self._validator = validator
        # Keyed by the very credentials object, which only the exchange that made it holds;
        # entries go with it when an exchange is abandoned.
        self._granted: WeakKeyDictionary[IOAuthBearerCredentials, bytes] = WeakKeyDictionary()
        self._refused: WeakSet[IOAuthBearerCredentials] = WeakSet()

    def requestAvatarId(self, credentials: IOAuthBearerCredentials) -> Deferred[bytes | tuple[()]]:
        """
        Check a token, or use the verdict L{checkAhead} recorded for these credentials.

        @return: a L{Deferred} firing with the user name, or failing with
            L{UnauthorizedLogin}, or with the validator's own failure.
        """
        if credentials in self._refused:
            self._refused.discard(credentials)
            return fail(UnauthorizedLogin("Invalid token"))
        avatarId = self._granted.pop(credentials, None)
        if avatarId is not None:
            return succeed(avatarId)
        # ICredentialsChecker also allows the anonymous avatar ID, which this never is.
        return cast("Deferred[bytes | tuple[()]]", self._validate(credentials))

    def checkAhead(self, credentials: IOAuthBearerCredentials) -> Deferred[bytes]:
        """
        Check a token now, as L{requestAvatarId} does, and record a grant or a refusal for the
        next L{requestAvatarId} of the same credentials object.
        """
        return self._validate(credentials).addBoth(self._record, credentials)

    def _record(
        self, verdict: bytes | Failure, credentials: IOAuthBearerCredentials
    ) -> bytes | Failure:
        if isinstance(verdict, bytes):
            self._granted[credentials] = verdict
        elif isinstance(verdict.value, UnauthorizedLogin):
            self._refused.add(credentials)
        return verdict

    def _validate(self, credentials: IOAuthBearerCredentials) -> Deferred[bytes]:
        verdict: Deferred[bytes | None] = maybeDeferred(
            self._validator.validate, credentials.username, credentials.token
        )
        return verdict.addCallback(self._granting, credentials.username)

    def _granting(self, avatarId: bytes | None, requested: bytes | None) -> bytes:
        if avatarId is None or (requested is not None and avatarId != requested):
            raise UnauthorizedLogin("Invalid token")
        return avatarId
