"""
What every check of the conformance suite works with: the run's configuration, the registry of
checks, verdicts, and a L{Context} that opens sessions the way the server asks for and caches
what several checks read (capabilities, the main user's maildrop).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import math
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from popd.conformance._client import (
    Connection,
    NotAStatusLine,
    Reply,
    ServerClosed,
    ServerError,
    WireLog,
    show,
    splitLines,
    unstuff,
)

_TIMESTAMP = re.compile(rb"<[^<>]*>")
_STAT = re.compile(rb"\+OK (\d+) (\d+)(?: .*)?\Z")
_SCAN_LINE = re.compile(rb"(\d+) (\d+)(?: .*)?\Z")
_UIDL_LINE = re.compile(rb"(\d+) (\S+)\Z")

#: How long to go on trying to log in while the maildrop is still locked by a session the suite
#: has just ended: a server may release the lock a moment after the connection closes.
_IN_USE_PATIENCE = 3.0


class Security(enum.Enum):
    """
    How the suite reaches the server.
    """

    PLAIN = "plain"
    #: Plain connections upgraded with C{STLS} (RFC 2595) before anything else.
    STARTTLS = "starttls"
    #: Implicit TLS (RFC 8314), usually port 995.
    TLS = "tls"


@dataclass(frozen=True)
class Config:
    """
    A conformance run.

    @ivar user: the main user; its maildrop is only read, never changed.
    @ivar scratchUser: a user whose maildrop the checks of deletion, locking and UPDATE may
        change (each run removes one message); without one, those checks are skipped.
    @ivar timeout: the longest wait for any one answer, in seconds.
    @ivar checkTimeout: the longest time one check may take, in seconds.
    @ivar cafile: certificates to verify the server's with; without it the server's
        certificate is not verified (the suite judges POP3, not a PKI).
    @ivar slow: also run the checks that take more than ten minutes (R8).
    @ivar select: run only the checks whose id starts with one of these (C{"R5"},
        C{"R22.stable"}); all when empty.
    @ivar maxMessages: how many messages of the main maildrop are retrieved, at most.
    """

    host: str
    port: int
    user: str
    password: str
    security: Security = Security.PLAIN
    scratchUser: str | None = None
    scratchPassword: str | None = None
    timeout: float = 10.0
    checkTimeout: float = 60.0
    cafile: str | None = None
    slow: bool = False
    select: tuple[str, ...] = ()
    maxMessages: int = 20


class Outcome(enum.Enum):
    """
    What a check concluded: the server passed it, failed it, or the check could not judge.
    """

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Verdict:
    """
    What a check found: an outcome and one line saying why.
    """

    outcome: Outcome
    detail: str


def passed(detail: str) -> Verdict:
    """
    @return: a PASS verdict, C{detail} saying what was seen.
    """
    return Verdict(Outcome.PASS, detail)


def failed(detail: str) -> Verdict:
    """
    @return: a FAIL verdict, C{detail} saying what was sent and what came back.
    """
    return Verdict(Outcome.FAIL, detail)


def skipped(detail: str) -> Verdict:
    """
    @return: a SKIP verdict, C{detail} saying why the check could not judge.
    """
    return Verdict(Outcome.SKIP, detail)


class Skip(Exception):
    """
    Raised by a check, or a helper it calls, that cannot judge this server: a capability is
    not advertised, the maildrop lacks the content needed, no scratch user was given.
    """


class Fail(Exception):
    """
    Raised by a check, or a helper it calls, that found a violation.
    """


CheckFunction = Callable[["Context"], Verdict]


@dataclass(frozen=True)
class Check:
    """
    A registered check.

    @ivar rule: the number of the rule of STANDARDS.md it verifies.
    @ivar afterAll: it judges what the whole run received, so it runs after all others.
    """

    rule: int
    name: str
    function: CheckFunction
    afterAll: bool

    @property
    def identifier(self) -> str:
        return f"R{self.rule}.{self.name}"


#: Every check, in registration order.
CHECKS: list[Check] = []


def check(
    rule: int, name: str, *, afterAll: bool = False
) -> Callable[[CheckFunction], CheckFunction]:
    """
    Register a check of rule C{rule}, reported as C{R<rule>.<name>}.
    """

    def register(function: CheckFunction) -> CheckFunction:
        CHECKS.append(Check(rule, name, function, afterAll))
        return function

    return register


@dataclass(frozen=True)
class Capabilities:
    """
    A CAPA response (RFC 2449 section 5): one capability per line, a tag and parameters.
    """

    lines: tuple[bytes, ...]

    def tags(self) -> dict[bytes, tuple[bytes, ...]]:
        """
        Tag (in upper case: tags are case-insensitive) to parameters.
        """
        result: dict[bytes, tuple[bytes, ...]] = {}
        for line in self.lines:
            words = line.split()
            if words:
                result[words[0].upper()] = tuple(words[1:])
        return result

    def has(self, tag: bytes) -> bool:
        """
        Whether C{tag} (in upper case) is listed.
        """
        return tag in self.tags()

    def mechanisms(self) -> tuple[bytes, ...]:
        """
        The SASL mechanisms offered, in upper case.
        """
        return tuple(m.upper() for m in self.tags().get(b"SASL", ()))


@dataclass
class Message:
    """
    One message of the main maildrop, as the survey retrieved it.

    @ivar size: its size in the scan listing.
    @ivar reply: the status line of C{RETR}, if it was retrieved.
    @ivar body: the multi-line body as received (byte-stuffed), after C{+OK}.
    @ivar problem: why the response could not be read in full, if so.
    """

    number: int
    size: int
    reply: Reply | None = None
    body: bytes | None = None
    problem: str | None = None

    @property
    def content(self) -> bytes | None:
        """
        The message as the server meant it: the body un-stuffed.
        """
        return None if self.body is None else unstuff(self.body)


@dataclass
class Maildrop:
    """
    The main user's maildrop, read once per run and then judged by several checks.

    @ivar stat: the C{STAT} answer.
    @ivar listBody: the body of the C{LIST} answer, as received.
    @ivar sizes: message number to size, from the scan listing, in its order.
    @ivar malformed: scan listing lines that are not C{number size}.
    @ivar uids: message number to unique-id, or L{None} when C{UIDL} is not offered.
    @ivar uidlBody: the body of the C{UIDL} answer, as received.
    @ivar messages: the retrieved messages (at most L{Config.maxMessages}), by number.
    """

    stat: Reply
    listBody: bytes
    sizes: dict[int, int]
    malformed: list[bytes]
    uids: dict[int, bytes] | None
    uidlBody: bytes | None
    messages: dict[int, Message] = field(default_factory=dict)

    def retrieved(self) -> list[Message]:
        """
        The messages whose whole answer was read, in order.
        """
        return [m for m in self.messages.values() if m.body is not None and m.problem is None]


def parseStat(reply: Reply) -> tuple[int, int]:
    """
    @return: the message count and octet total of a C{STAT} answer (RFC 1939 section 5).
    @raise Fail: it is not C{+OK nn mm}.
    """
    match = _STAT.match(reply.line)
    if match is None:
        raise Fail(f"STAT answered {reply}, not '+OK nn mm'")
    return int(match.group(1)), int(match.group(2))


def parseScanListing(body: bytes) -> tuple[dict[int, int], list[bytes]]:
    """
    @return: message number to size from a C{LIST} body, and the lines that are malformed.
    """
    sizes: dict[int, int] = {}
    malformed: list[bytes] = []
    for line in splitLines(body):
        match = _SCAN_LINE.match(line.rstrip(b"\r\n"))
        if match is None:
            malformed.append(line)
        else:
            sizes[int(match.group(1))] = int(match.group(2))
    return sizes, malformed


def parseUniqueIds(body: bytes) -> dict[int, bytes]:
    """
    @return: message number to unique-id from a C{UIDL} body.
    @raise Fail: a line is not C{number uid}.
    """
    uids: dict[int, bytes] = {}
    for line in splitLines(body):
        match = _UIDL_LINE.match(line.rstrip(b"\r\n"))
        if match is None:
            raise Fail(f"UIDL listing line {show(line)!r} is not 'number unique-id'")
        uids[int(match.group(1))] = match.group(2)
    return uids


def apopTimestamp(greeting: Reply | None) -> bytes | None:
    """
    The APOP timestamp of a greeting (RFC 1939 section 7), angle brackets included.
    """
    if greeting is None:
        return None
    match = _TIMESTAMP.search(greeting.text)
    return match.group(0) if match else None


def apopDigest(timestamp: bytes, secret: bytes) -> bytes:
    """
    The APOP digest (RFC 1939 section 7): MD5 of the timestamp and the secret, in lower-case hex.
    """
    return hashlib.md5(timestamp + secret).hexdigest().encode("ascii")


def plainResponse(user: bytes, password: bytes) -> bytes:
    """
    A SASL PLAIN response (RFC 4616) in base64, with an empty authorization identity.
    """
    return base64.b64encode(b"\0" + user + b"\0" + password)


class Session:
    """
    A POP3 session of the suite, on one user's maildrop, that ends safely: a session that
    marked messages unmarks them with C{RSET} and ends with C{QUIT} only when C{STAT} shows
    they are unmarked, and otherwise drops the connection, which must remove nothing (R24).
    Only L{quit} commits deletions, and only the UPDATE checks call it, on the scratch user.

    Use it in a C{with} block: an exception drops the connection.

    @ivar connection: the current connection.
    @ivar loggedIn: whether the session is in the TRANSACTION state.
    """

    def __init__(self, context: Context, user: bytes, password: bytes) -> None:
        self._context = context
        self.user = user
        self.password = password
        self.connection = context.connect()
        self.loggedIn = False
        self._countBeforeMarks: int | None = None
        self._retrieved = False
        self._ended = False

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.end()
        else:
            self.drop()

    def login(self) -> None:
        """
        Log in with the first method the server offers of C{USER}/C{PASS}, SASL C{PLAIN} and
        C{APOP}; while the answer is C{-ERR [IN-USE]} (a lock that a session of the suite has
        just given up), try again on a new connection for a few seconds.

        @raise Fail: the server refused.
        """
        giveUp = time.monotonic() + _IN_USE_PATIENCE
        while True:
            reply = self._context.login(self.connection, self.user, self.password)
            self.loggedIn = reply.ok
            if reply.ok:
                return
            inUse = reply.code == b"IN-USE" or b"lock" in reply.text.lower()
            if not inUse or time.monotonic() > giveUp:
                raise Fail(f"cannot log in as {self.user.decode('utf-8', 'replace')}: {reply}")
            self.connection.close()
            time.sleep(0.1)
            self.connection = self._context.connect()

    def command(self, line: bytes) -> Reply:
        """
        Send a command and read its status line, keeping track of deletion marks.
        """
        keyword = line[:5].upper()
        if keyword.startswith(b"DELE") and self.loggedIn and self._countBeforeMarks is None:
            self._countBeforeMarks = parseStat(self.connection.command(b"STAT"))[0]
        if keyword.startswith(b"RETR"):
            self._retrieved = True
        return self.connection.command(line)

    def multiline(self, line: bytes) -> tuple[Reply, bytes | None]:
        """
        Send a command whose C{+OK} answer is multi-line, and read it all.
        """
        if line[:4].upper() == b"RETR":
            self._retrieved = True
        return self.connection.multiline(line)

    def retrieve(self, line: bytes) -> tuple[Reply, bytes | None]:
        """
        Like L{multiline}, then make sure the answer really ended at its terminator: the next
        answer (to C{NOOP}) must be a status line.  A server that fails to byte-stuff a lone
        C{.} line ends the response early, and the rest of the message follows it.
        """
        reply, body = self.multiline(line)
        try:
            self.connection.command(b"NOOP")
        except NotAStatusLine as e:
            problem = f"{show(line)}: the answer went on after its terminator ({e})"
            self._context.log.desyncs.append(problem)
            raise Fail(problem) from None
        return reply, body

    def stat(self) -> tuple[int, int]:
        """
        @return: the message count and octet total from C{STAT}.
        """
        return parseStat(self.command(b"STAT"))

    def quit(self) -> Reply:
        """
        End with C{QUIT}, committing any deletion (UPDATE, RFC 1939 section 6).

        @return: the answer; the server must close the connection after it.
        """
        self._ended = True
        try:
            reply = self.connection.command(b"QUIT")
            if not self.connection.waitClosed():
                raise Fail(f"QUIT answered {reply} but the connection stayed open")
            return reply
        finally:
            self.connection.close()

    def drop(self) -> None:
        """
        Close the connection without a word.
        """
        self._ended = True
        self.connection.close()

    def end(self) -> None:
        """
        End the session without removing anything, as the class docstring describes.
        """
        if self._ended:
            return
        try:
            if self._countBeforeMarks is not None:
                self.connection.command(b"RSET")
                if self.stat()[0] != self._countBeforeMarks:
                    self.drop()
                    return
            if self._retrieved and self.loggedIn and self._context.expiring(self):
                # EXPIRE: QUIT would remove what this session retrieved (RFC 2449 6.7).
                self.drop()
                return
            self.quit()
        except (ServerError, Fail):
            self.drop()


class Context:
    """
    The state of one conformance run, handed to every check.

    @ivar config: the run's configuration.
    @ivar log: what the server sent, over the whole run.
    @ivar failedLogins: every answer to a login with a wrong password or an unknown user seen
        so far, with what was tried; R30 judges them all.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.log = WireLog()
        self.failedLogins: list[tuple[str, Reply]] = []
        self._deadline = math.inf
        self._tls = self._clientContext(config.cafile)
        self._cache: dict[str, object] = {}

    @staticmethod
    def _clientContext(cafile: str | None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cafile is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context.load_verify_locations(cafile)
        return context

    def startCheck(self, seconds: float) -> None:
        """
        Give the check about to run C{seconds} to finish.
        """
        self._deadline = time.monotonic() + seconds

    def user(self) -> tuple[bytes, bytes]:
        """
        @return: the main user's name and password.
        """
        return self.config.user.encode("utf-8"), self.config.password.encode("utf-8")

    def scratch(self) -> tuple[bytes, bytes]:
        """
        @return: the scratch user's name and password.
        @raise Skip: none was given.
        """
        config = self.config
        if config.scratchUser is None or config.scratchPassword is None:
            raise Skip("changes a maildrop: needs --scratch-user and --scratch-password")
        return config.scratchUser.encode("utf-8"), config.scratchPassword.encode("utf-8")

    # Connections and sessions

    def connect(self, *, upgrade: bool = True) -> Connection:
        """
        Connect and read the greeting; with implicit TLS, negotiate it first; in STARTTLS
        mode, upgrade with C{STLS} unless C{upgrade} is false.

        @raise Fail: the server refused C{STLS} in STARTTLS mode.
        """
        config = self.config
        implicit = config.security is Security.TLS
        connection = Connection(
            config.host,
            config.port,
            self.log,
            timeout=config.timeout,
            deadline=self._deadline,
            tlsContext=self._tls if implicit else None,
        )
        try:
            connection.readGreeting()
            if upgrade and config.security is Security.STARTTLS:
                reply = connection.command(b"STLS")
                if not reply.ok:
                    raise Fail(f"STLS refused: {reply}")
                self.startTLS(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def startTLS(self, connection: Connection) -> None:
        """
        Negotiate TLS on a connection whose C{STLS} the server accepted.
        """
        connection.startTLS(self._tls)

    def session(self, *, scratch: bool = False, login: bool = True) -> Session:
        """
        Open a session on the main maildrop, or the scratch user's, logged in unless told not.
        """
        user, password = self.scratch() if scratch else self.user()
        session = Session(self, user, password)
        if login:
            try:
                session.login()
            except BaseException:
                session.drop()
                raise
        return session

    def markingSession(self) -> Session:
        """
        A logged-in session for checks that mark messages without committing: the scratch
        user's when it has messages, else the main user's (L{Session.end} unmarks them).
        """
        if self.config.scratchUser is not None and self.config.scratchPassword is not None:
            session = self.session(scratch=True)
            try:
                if session.stat()[0]:
                    return session
            except BaseException:
                session.drop()
                raise
            session.end()
        return self.session()

    def login(self, connection: Connection, user: bytes, password: bytes) -> Reply:
        """
        Log in on C{connection} with the first method offered of C{USER}/C{PASS}, SASL
        C{PLAIN} and C{APOP}.

        @raise Skip: the server offers none of them.
        """
        method = self.loginMethod()
        if method == "USER":
            reply = connection.command(b"USER " + user)
            return connection.command(b"PASS " + password) if reply.ok else reply
        if method == "PLAIN":
            return connection.command(b"AUTH PLAIN " + plainResponse(user, password))
        timestamp = apopTimestamp(connection.greeting)
        if timestamp is None:
            raise Skip("the server offers no login method the suite knows")
        return connection.command(b"APOP " + user + b" " + apopDigest(timestamp, password))

    def loginMethod(self) -> str:
        """
        @return: C{"USER"}, C{"PLAIN"} or C{"APOP"}: how the suite logs in.
        """
        capabilities = self.authCapabilities()
        if capabilities is None or capabilities.has(b"USER"):
            return "USER"
        if b"PLAIN" in capabilities.mechanisms():
            return "PLAIN"
        return "APOP"

    # What several checks read, read once

    def _once(self, key: str, compute: Callable[[], object]) -> object:
        """
        Compute something once per run; a failure is remembered and raised again as L{Fail}.
        """
        if key not in self._cache:
            try:
                self._cache[key] = compute()
            except (ServerError, Fail) as e:
                self._cache[key] = Fail(str(e))
        value = self._cache[key]
        if isinstance(value, Fail):
            raise value
        return value

    def _readCapabilities(self, connection: Connection) -> Capabilities | None:
        _, body = connection.multiline(b"CAPA")
        if body is None:
            return None
        return Capabilities(tuple(line.rstrip(b"\r\n") for line in splitLines(body)))

    def authCapabilities(self) -> Capabilities | None:
        """
        The capabilities in the AUTHORIZATION state, on a connection secured as configured.

        @return: L{None} when the server does not implement CAPA.
        """

        def compute() -> Capabilities | None:
            connection = self.connect()
            try:
                return self._readCapabilities(connection)
            finally:
                connection.close()

        result = self._once("authCapabilities", compute)
        assert result is None or isinstance(result, Capabilities)
        return result

    def plainCapabilities(self) -> Capabilities | None:
        """
        The capabilities before TLS, on a plain connection.

        @raise Skip: the suite reaches the server with implicit TLS.
        """
        if self.config.security is Security.TLS:
            raise Skip("connections start with TLS (--tls): there is no plain connection")
        if self.config.security is Security.PLAIN:
            return self.authCapabilities()

        def compute() -> Capabilities | None:
            connection = self.connect(upgrade=False)
            try:
                return self._readCapabilities(connection)
            finally:
                connection.close()

        result = self._once("plainCapabilities", compute)
        assert result is None or isinstance(result, Capabilities)
        return result

    def transactionCapabilities(self, session: Session | None = None) -> Capabilities | None:
        """
        The capabilities in the TRANSACTION state, for the main user.

        @param session: a logged-in session to ask in, if they must be read: a session must
            not open another one, which its lock on the maildrop would refuse.
        """

        def compute() -> Capabilities | None:
            if session is not None and session.loggedIn:
                return self._readCapabilities(session.connection)
            with self.session() as own:
                return self._readCapabilities(own.connection)

        result = self._once("transactionCapabilities", compute)
        assert result is None or isinstance(result, Capabilities)
        return result

    def advertised(self, tag: bytes, *, transaction: bool = False) -> tuple[bytes, ...]:
        """
        Require a capability.

        @return: its parameters.
        @raise Skip: CAPA is not implemented or does not list C{tag}.
        """
        capabilities = self.transactionCapabilities() if transaction else self.authCapabilities()
        if capabilities is None:
            raise Skip(f"CAPA is not implemented, so {tag.decode()} is not advertised")
        tags = capabilities.tags()
        if tag not in tags:
            raise Skip(f"{tag.decode()} is not advertised")
        return tags[tag]

    def offers(self, tag: bytes) -> bool:
        """
        Whether the server advertises C{tag} before login.
        """
        capabilities = self.authCapabilities()
        return capabilities is not None and capabilities.has(tag)

    def expiring(self, session: Session | None = None) -> bool:
        """
        Whether the server may remove retrieved messages at QUIT by its EXPIRE policy
        (RFC 2449 section 6.7): then sessions on the main user that retrieved anything are
        dropped instead, to keep the main maildrop unchanged.

        @param session: the logged-in session that asks, if any.
        """
        capabilities = self.transactionCapabilities(session)
        if capabilities is None:
            return False
        policy = capabilities.tags().get(b"EXPIRE", (b"NEVER",))
        return bool(policy) and policy[0].upper() != b"NEVER"

    def wrongPasswordLogin(self) -> tuple[Reply, Reply | None]:
        """
        Log in as the main user with a wrong password, then with the right one on the same
        connection: R11, R14 and R30 judge the answers, so a run costs one failed login.

        @return: the failed login's answer, and the answer of the login that followed, or
            L{None} when the server closed the connection after the failure.
        """

        def compute() -> tuple[Reply, Reply | None]:
            user, password = self.user()
            connection = self.connect()
            try:
                failure = self.login(connection, user, password + b"-wrong")
                self.failedLogins.append(("a wrong password", failure))
                try:
                    retry = self.login(connection, user, password)
                except ServerClosed:
                    return failure, None
                if retry.ok:
                    connection.command(b"QUIT")
                return failure, retry
            finally:
                connection.close()

        result = self._once("wrongPasswordLogin", compute)
        assert isinstance(result, tuple)
        return result

    def maildrop(self) -> Maildrop:
        """
        Read the main maildrop: C{STAT}, C{LIST}, C{UIDL} and C{RETR} of the first messages.
        A C{RETR} answer that cannot be read in full is recorded in its L{Message} and the
        survey goes on with a new session.
        """
        result = self._once("maildrop", self._survey)
        assert isinstance(result, Maildrop)
        return result

    def _survey(self) -> Maildrop:
        session = self.session()
        try:
            stat = session.command(b"STAT")
            parseStat(stat)
            reply, listBody = session.multiline(b"LIST")
            if listBody is None:
                raise Fail(f"LIST answered {reply}")
            sizes, malformed = parseScanListing(listBody)
            uids: dict[int, bytes] | None = None
            uidlBody: bytes | None = None
            if self.authCapabilities() is None or self.offers(b"UIDL"):
                reply, uidlBody = session.multiline(b"UIDL")
                if uidlBody is not None:
                    uids = parseUniqueIds(uidlBody)
            maildrop = Maildrop(stat, listBody, sizes, malformed, uids, uidlBody)
            budget = 32 * 1024 * 1024
            for number, size in list(sizes.items())[: self.config.maxMessages]:
                if size > budget:
                    continue
                budget -= size
                message = Message(number, size)
                maildrop.messages[number] = message
                try:
                    message.reply, message.body = session.retrieve(b"RETR %d" % (number,))
                except (ServerError, Fail) as e:
                    message.problem = str(e)
                    session.drop()
                    session = self.session()
        except BaseException:
            session.drop()
            raise
        session.end()
        return maildrop
