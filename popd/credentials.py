"""
Credentials that POP3 commands present to a C{twisted.cred} portal beyond the plain
user-and-password pair.
"""

from __future__ import annotations

import hashlib
import hmac

from twisted.cred.credentials import IUsernameHashedPassword
from zope.interface import implementer


@implementer(IUsernameHashedPassword)
class APOPCredentials:
    """
    The answer to an C{APOP} challenge (RFC 1939 section 7, rule R13): the lower-case hex MD5
    digest of the greeting's timestamp followed by the shared secret.

    A checker that knows the plaintext secret calls L{checkPassword} with it.
    """

    def __init__(self, timestamp: bytes, username: bytes, digest: bytes) -> None:
        self.timestamp = timestamp
        self.username = username
        self.digest = digest

    def checkPassword(self, password: bytes) -> bool:
        expected = hashlib.md5(self.timestamp + password).hexdigest().encode("ascii")
        return hmac.compare_digest(expected, self.digest)
