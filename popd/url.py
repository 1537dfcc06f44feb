"""
POP URLs (RFC 2384): C{pop://<user>;auth=<mechanism>@<host>:<port>}, one string that says
where a maildrop is and how to log in to it, for configuration files and command lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

#: The port of a POP URL that names none (RFC 2384 section 3).
DEFAULT_PORT = 110

# user-auth "@" is optional; the host may be a bracketed IPv6 literal.
_URL = re.compile(
    r"pop://(?:(?P<user>[^;@/]*)(?:;auth=(?P<auth>[^@/]+))?@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@/\[\]]+)(?::(?P<port>[0-9]{1,5}))?/?",
    re.IGNORECASE,
)
# enc-auth-type: "*", "+APOP" (and other "+" extensions) or a SASL mechanism name.
_AUTH = re.compile(r"\*|\+[A-Za-z0-9-]+|[A-Za-z0-9-_]{1,20}")
# What RFC 2384's "achar" leaves unescaped in a user name.
_USER_SAFE = "&=~!$'()*+,-._"


@dataclass(frozen=True)
class PopURL:
    """
    A parsed POP URL.

    @ivar user: the user name, decoded; L{None} when the URL names none.
    @ivar auth: how to log in: C{None} (unspecified: USER/PASS, or the best the client knows),
        C{"*"} (any mechanism), C{"+APOP"}, or a SASL mechanism name in upper case.
    @ivar host: the host name or address (an IPv6 address without its brackets).
    @ivar port: the port.
    """

    host: str
    port: int = DEFAULT_PORT
    user: str | None = None
    auth: str | None = None

    @classmethod
    def fromString(cls, url: str) -> PopURL:
        """
        Parse a POP URL.

        @raise ValueError: when C{url} is not one.
        """
        match = _URL.fullmatch(url)
        if match is None:
            raise ValueError(f"not a POP URL (pop://user;auth=type@host:port): {url!r}")
        user, auth, host, port = match.group("user", "auth", "host", "port")
        if auth is not None:
            auth = unquote(auth)
            if not _AUTH.fullmatch(auth):
                raise ValueError(f"not an authentication type of a POP URL: {auth!r}")
            if auth != "*" and not auth.startswith("+"):
                auth = auth.upper()
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"not a port: {port}")
        if user is not None and not user:
            raise ValueError("empty user name in a POP URL")
        return cls(
            host=host.strip("[]"),
            port=DEFAULT_PORT if port is None else int(port),
            user=None if user is None else unquote(user, errors="strict"),
            auth=auth,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORT else f":{self.port}"
        if self.user is None:
            return f"pop://{host}{port}"
        auth = "" if self.auth is None else f";AUTH={self.auth}"
        return f"pop://{quote(self.user, safe=_USER_SAFE)}{auth}@{host}{port}"
