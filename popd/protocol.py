"""
The POP3 server protocol (RFC 1939, with CAPA and RESP-CODES from RFC 2449, STLS from RFC 2595)
and its factory.

The protocol owns the session: its state, the message numbers, the deletion marks.  It reads mail
only through L{IMaildrop} and authenticates only through a C{twisted.cred} portal, so it knows
nothing of where mail or users live.
"""

from __future__ import annotations

import binascii
import enum
import ipaddress
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from operator import attrgetter, methodcaller
from typing import Any, cast

from twisted.cred.credentials import ICredentials, IUsernameHashedPassword, UsernamePassword
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    INegotiated,
    IOpenSSLServerConnectionCreator,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
    ITLSTransport,
    ITransport,
)
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from popd._wire import CRLF, MessageEncoder, headerEnd, parseNumber
from popd.credentials import APOPCredentials
from popd.errors import MaildropInUse, MessageGone, PermanentFailure, TemporaryFailure
from popd.interfaces import IMaildrop, IMessage, Listing, MessageInfo
from popd.limits import ConcurrencyLimit, FailurePenalty, IdleTimeouts, LoginDelay
from popd.metrics import Metrics
from popd.sasl import Challenge, ISASLExchange, ISASLMechanism, MalformedResponse, mechanismsFor
from popd.twistedmail import IMailbox, MailboxMaildrop

#: How much of a message is read from the store at a time.
CHUNK_SIZE = 64 * 1024

#: The languages of response texts (RFC 6856 LANG): tag and description.
LANGUAGES = {b"en": b"English"}

# The columns of a listing that LIST and UIDL answer with.
_SIZES: Callable[[Listing], Sequence[object]] = attrgetter("sizes")
_UIDLS: Callable[[Listing], Sequence[object]] = attrgetter("uidls")


class State(enum.Enum):
    """
    The states of a POP3 session (RFC 1939 section 3).
    """

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


class Response:
    """
    The fixed texts of responses.  Free text never starts with C{[}, which would read as a
    response code (RFC 2449 section 8, rule R27), and never echoes what the client sent.
    """

    UNKNOWN = b"-ERR Unknown command."
    WRONG_STATE = b"-ERR Command not valid in this state."
    SYNTAX = b"-ERR Syntax error."
    LINE_TOO_LONG = b"-ERR Line too long."
    NUL = b"-ERR NUL octets are not allowed."
    TOO_MANY_BAD = b"-ERR Too many bad commands; closing the connection."
    NO_SUCH_MESSAGE = b"-ERR No such message."
    DELETED = b"-ERR Message already deleted."
    GONE = b"-ERR Message was removed by another agent."
    USER_FIRST = b"-ERR Send USER first."
    AUTH_FAILED = b"-ERR [AUTH] Authentication failed."
    TOO_MANY_FAILURES = b"-ERR [AUTH] Too many authentication failures; closing the connection."
    CLEARTEXT_DISABLED = b"-ERR [AUTH] Plaintext authentication is disallowed without TLS."
    IN_USE = b"-ERR [IN-USE] Maildrop is locked by another session."
    SYS_TEMP = b"-ERR [SYS/TEMP] Temporary server failure; try again later."
    SYS_PERM = b"-ERR [SYS/PERM] Permanent server failure; contact your administrator."
    NOT_REMOVED = b"-ERR [SYS/TEMP] Some deleted messages were not removed."
    TLS_ACTIVE = b"-ERR TLS is already active."
    TOO_MANY_CONNECTIONS = b"-ERR [SYS/TEMP] Too many connections from your address."
    TOO_MANY_SESSIONS = b"-ERR [IN-USE] Too many sessions for this user."
    LOGIN_DELAY = b"-ERR [LOGIN-DELAY] Logged in too recently; try again later."
    UTF8_HEADERS = b"-ERR [UTF8] Message has UTF-8 header fields; send UTF8 first."
    NO_LANGUAGE = b"-ERR Unsupported language."
    NO_MECHANISM = b"-ERR Unknown or unavailable authentication mechanism."
    SASL_CANCELLED = b"-ERR Authentication cancelled."
    SASL_MALFORMED = b"-ERR [AUTH] Malformed authentication response."
    TLS_BEGIN = b"+OK Begin TLS negotiation."
    OK = b"+OK"
    BYE = b"+OK Bye."


def _isTLS(transport: object) -> bool:
    """
    Whether a transport is already encrypted: a reactor's TLS connection provides
    L{ISSLTransport}, a L{twisted.protocols.tls} wrapper only L{INegotiated}.
    """
    return ISSLTransport.providedBy(transport) or INegotiated.providedBy(transport)


def _isLoopback(address: object) -> bool:
    """
    Whether a peer address is this host: such a connection cannot be eavesdropped on.
    """
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, (IPv4Address, IPv6Address)):
        try:
            return ipaddress.ip_address(address.host.split("%")[0]).is_loopback
        except ValueError:
            return False
    return False


@implementer(IPushProducer)
class _MessageSender:
    """
    Streams one message from the store to the transport, encoding it on the way, and honours
    back-pressure: memory stays flat for any message size.

    Outside UTF-8 mode it reads the header section before it sends anything, and refuses a
    message with raw 8-bit octets there: a client that did not ask for UTF-8 header fields may
    not be able to read them (RFC 6856 section 2, rule R36).
    """

    __slots__ = (
        "_transport",
        "_message",
        "_first",
        "_encoder",
        "_progress",
        "_head",
        "_paused",
        "_reading",
        "_looping",
        "_finished",
        "begun",
        "done",
    )

    def __init__(
        self,
        transport: ITransport,
        message: IMessage,
        first: bytes,
        encoder: MessageEncoder,
        progress: Callable[[int], None],
        checkHeader: bool,
    ) -> None:
        """
        @param first: the status line that precedes the message, without its CRLF.
        @param progress: called with the number of octets of each piece of message written.
        @param checkHeader: whether to refuse a message with 8-bit octets in its header.
        """
        self._transport = transport
        self._message = message
        self._first = first
        self._encoder = encoder
        self._progress = progress
        # While the header is checked: the start of the message read so far.
        self._head: bytes | None = b"" if checkHeader else None
        self._paused = False
        self._reading = False
        self._looping = False
        self._finished = False
        #: Whether the status line is out: from then on, only the whole message can follow.
        self.begun = False
        #: Fires with C{True} once the terminator is written, or C{False} when the message was
        #: refused for its header (nothing was written); fails when the store failed.
        self.done: Deferred[bool] = Deferred()

    def start(self) -> Deferred[bool]:
        """
        Start streaming.

        @return: L{done}.
        """
        cast(IConsumer, self._transport).registerProducer(self, True)
        if self._head is None:
            self._begin(b"")
        self._readNext()
        return self.done

    def _readNext(self) -> None:
        # A loop, not recursion: stores that answer at once must not deepen the stack.
        self._looping = True
        try:
            while not (self._paused or self._finished or self._reading):
                self._reading = True
                self._message.read(CHUNK_SIZE).addCallbacks(self._received, self._failed)
        finally:
            self._looping = False

    def _received(self, chunk: bytes) -> None:
        self._reading = False
        if self._finished:
            return
        if self._head is not None:
            head = self._head + chunk
            end = headerEnd(head)
            if end < 0 and chunk and len(head) < CHUNK_SIZE:
                # Read on: the header section has not ended yet.
                self._head = head
                self._readAgain()
                return
            self._head = None
            if not (head[:end] if end >= 0 else head).isascii():
                self._end()
                self.done.callback(False)
                return
            chunk = head
        encoded = self._encoder.encode(chunk)
        if not self.begun:
            # The status line and the start of the message go out in one write.
            self._begin(encoded)
        elif encoded:
            self._transport.write(encoded)
        if encoded:
            self._progress(len(encoded))
        if not chunk or self._encoder.done:
            self._transport.write(self._encoder.finish())
            self._end()
            self.done.callback(True)
        else:
            self._readAgain()

    def _readAgain(self) -> None:
        if not self._looping:
            self._readNext()

    def _begin(self, encoded: bytes) -> None:
        self.begun = True
        self._transport.write(self._first + CRLF + encoded)

    def _failed(self, reason: Failure) -> None:
        self._reading = False
        if not self._finished:
            self._end()
            self.done.errback(reason)

    def _end(self) -> None:
        self._finished = True
        self._message.close()
        cast(IConsumer, self._transport).unregisterProducer()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._readNext()

    def stopProducing(self) -> None:
        if not self._finished:
            self._finished = True
            self._message.close()


class _SessionStatistics:
    """
    What a session did, for its summary log line.
    """

    __slots__ = ("started", "outcome", "mechanism", "retrieved", "topped", "deleted", "octetsSent")

    def __init__(self) -> None:
        self.started = 0.0
        self.outcome = "disconnected"
        self.mechanism = "-"
        self.retrieved = 0
        self.topped = 0
        self.deleted = 0
        self.octetsSent = 0


_NO_MARKS: frozenset[int] = frozenset()
_NO_COMMANDS: frozenset[bytes] = frozenset()


class _Transaction:
    """
    What a session works on in the TRANSACTION state: the listing of its maildrop, taken at
    login, which fixes the message numbers (RFC 1939 section 4), and the marks the session made
    on it.

    @ivar deleted: the indices of the messages marked deleted.
    @ivar retrieved: the indices of the messages retrieved (RSET does not clear these).
    @ivar highestAccessed: the highest message number retrieved or deleted since the last
        RSET, for C{LAST}.
    """

    __slots__ = ("listing", "_octets", "deleted", "retrieved", "highestAccessed")

    def __init__(self, listing: Sequence[MessageInfo]) -> None:
        self.listing = Listing.of(listing)
        self._octets = self.listing.octets
        # Sets are made at the first mark: an idle session holds none.
        self.deleted: AbstractSet[int] = _NO_MARKS
        self.retrieved: AbstractSet[int] = _NO_MARKS
        self.highestAccessed = 0

    def delete(self, index: int) -> None:
        self.deleted = self._marked(self.deleted, index)

    def retrieve(self, index: int) -> None:
        self.retrieved = self._marked(self.retrieved, index)

    def _marked(self, marks: AbstractSet[int], index: int) -> set[int]:
        """
        @return: C{marks} with C{index} added: the same set once it is one of this session's.
        """
        if not isinstance(marks, set):
            marks = set()
        marks.add(index)
        self.highestAccessed = max(self.highestAccessed, index + 1)
        return marks

    def reset(self) -> None:
        self.deleted = _NO_MARKS
        self.highestAccessed = 0

    def totals(self) -> tuple[int, int]:
        """
        @return: the number of messages not marked deleted, and their octets.
        """
        listing, deleted = self.listing, self.deleted
        sizes = listing.sizes
        return len(listing) - len(deleted), self._octets - sum(sizes[i] for i in deleted)

    def scanListing(
        self, template: bytes, column: Callable[[Listing], Sequence[object]]
    ) -> list[bytes]:
        """
        The scan listing lines of the messages not marked deleted, in order (rule R18).

        @param template: formats a message number and its value in C{column}.
        """
        numbered: Iterable[tuple[int, object]] = enumerate(column(self.listing), 1)
        deleted = self.deleted
        if deleted:
            numbered = ((n, value) for n, value in numbered if n - 1 not in deleted)
        return list(map(template.__mod__, numbered))


class POP3ServerProtocol(LineReceiver):
    """
    One POP3 session.

    Each state has a whitelist of commands; a command whose work is asynchronous pauses the
    reading of further lines until it has answered, so pipelined commands (RFC 2449 section 6.6)
    are answered completely and in order.
    """

    # Lines end with CRLF; a bare LF is accepted too, and the CR stripped.
    delimiter = b"\n"
    _log = Logger()
    factory: POP3ServerFactory

    def __init__(self) -> None:
        # Every attribute is set here, LineReceiver's too.  CPython 3.11 stores the attributes
        # of an instance compactly, 8 octets each, only under names that the first few
        # instances of its class set; an instance that sets any other name gets a full
        # dictionary, 1.3 KiB more.  A server that accepts many connections before the first
        # line arrives would otherwise learn the line buffer's names too late.
        self.connected = 0
        self.transport = None
        self.paused = False
        self._busyReceiving = False
        self.clearLineBuffer()
        self.state = State.AUTHORIZATION
        self._user: bytes | None = None
        self._maildrop: IMaildrop | None = None
        self._logout: Callable[[], None] | None = None
        # The user whose session slot this connection holds.
        self._sessionUser: bytes | None = None
        self._transaction: _Transaction | None = None
        self._utf8 = False
        self._peerKey: str | None = None
        self._secure = False
        self._apopTimestamp: bytes | None = None
        self._saslExchange: ISASLExchange | None = None
        self._authFailures = 0
        self._badCommands = 0
        self._commandPending = False
        self._discardingLongLine = False
        self._overflow: bytes | None = None
        self._sender: _MessageSender | None = None
        # What this connection does not offer of the commands popd knows.
        self._unavailable = _NO_COMMANDS
        self._statistics = _SessionStatistics()

    @property
    def MAX_LENGTH(self) -> int:  # type: ignore[override]
        """
        LineReceiver's limit, which does not count the LF; the factory's does.
        """
        return self.factory.maxLineLength - 1

    # Connection life

    def connectionMade(self) -> None:
        factory = self.factory
        factory.metrics.connected()
        self._statistics.started = factory.reactor.seconds()
        self._secure = _isTLS(self.transport)
        if ITCPTransport.providedBy(self.transport):
            # Responses are written whole; Nagle's algorithm would only delay them.
            self._transport.setTcpNoDelay(True)
        self._unavailable = factory.unavailableCommands(self._transport)
        if b"APOP" in self._unavailable:
            greeting = b"+OK POP3 server ready."
        else:
            self._apopTimestamp = b"<%s.%d@%s>" % (
                secrets.token_hex(16).encode("ascii"),
                int(time.time()),
                factory.hostname,
            )
            greeting = b"+OK POP3 server ready " + self._apopTimestamp
        peer = self._transport.getPeer()
        if isinstance(peer, (IPv4Address, IPv6Address)):
            if not factory.peerConnections.acquire(peer.host):
                self._statistics.outcome = "too many connections"
                self.sendLine(Response.TOO_MANY_CONNECTIONS)
                self._transport.loseConnection()
                return
            self._peerKey = peer.host
        factory.idleTimeouts.watch(self, factory.authorizationTimeout)
        self.sendLine(greeting)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = 0
        self.factory.idleTimeouts.forget(self)
        if self._peerKey is not None:
            self.factory.peerConnections.release(self._peerKey)
            self._peerKey = None
        if self._sender is not None:
            self._sender.stopProducing()
        # Any end but QUIT in TRANSACTION removes nothing (rule R24).
        self._releaseMaildrop()
        stats = self._statistics
        elapsed = self.factory.reactor.seconds() - stats.started
        self.factory.metrics.sessionEnded(stats.outcome, elapsed)
        self._log.info(
            "session end: user={user} peer={peer} tls={tls} auth={mechanism} outcome={outcome}"
            " retr={retr} top={top} dele={dele} octets={octets} duration={duration:.3f}s",
            user=self._user.decode("utf-8", "replace") if self._user is not None else "-",
            peer=str(self._transport.getPeer()),
            tls=self._secure,
            mechanism=stats.mechanism,
            outcome=stats.outcome,
            retr=stats.retrieved,
            top=stats.topped,
            dele=stats.deleted,
            octets=stats.octetsSent,
            duration=elapsed,
        )

    def timeoutConnection(self) -> None:
        """
        Called when the connection has been idle too long: before login, the factory's
        C{authorizationTimeout} seconds, then its C{timeout} seconds.
        """
        # RFC 1939 section 3: close without a response and without UPDATE (rule R8).
        self._statistics.outcome = "timeout"
        self._transport.abortConnection()

    def resetTimeout(self) -> None:
        """
        Restart the idle countdown: the client is active.
        """
        self.factory.idleTimeouts.touch(self)

    def _releaseMaildrop(self) -> None:
        maildrop, logout = self._maildrop, self._logout
        self._maildrop = self._logout = None
        if self._sessionUser is not None:
            self.factory.userSessions.release(self._sessionUser)
            self._sessionUser = None
        if maildrop is not None:
            maildrop.close().addErrback(
                lambda f: self._log.failure("closing a maildrop", failure=f)
            )
        if logout is not None:
            logout()

    # Framing

    def dataReceived(self, data: bytes) -> None:
        while True:
            if self._discardingLongLine:
                end = data.find(self.delimiter)
                if end < 0:
                    return
                data = data[end + 1 :]
                self._discardingLongLine = False
                self._badCommand(Response.LINE_TOO_LONG)
                if self._closing():
                    return
            super().dataReceived(data)
            if self._overflow is None:
                return
            data, self._overflow = self._overflow, None
            self._discardingLongLine = True

    def lineLengthExceeded(self, line: bytes) -> None:
        # Answered once the over-long line has ended; its octets are never buffered.
        self._overflow = line

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._saslExchange is not None:
            self._runCommand(b"AUTH", POP3ServerProtocol._saslResponse, line)
            return
        if b"\0" in line:
            self._badCommand(Response.NUL)
            return
        keyword, _, argument = line.partition(b" ")
        keyword = keyword.upper()
        # Only keywords popd knows become metric labels: clients cannot create new series.
        label = None if keyword in self._unavailable else _KNOWN_COMMANDS.get(keyword)
        self.factory.metrics.commands[label or "unknown"] += 1
        command = _COMMANDS[self.state].get(keyword) if label else None
        if command is None:
            self._badCommand(Response.WRONG_STATE if label else Response.UNKNOWN)
            return
        self._runCommand(keyword, command, argument)

    def _runCommand(self, keyword: bytes, command: _Command, argument: bytes) -> None:
        try:
            result = command(self, argument)
        except Exception:
            self._log.failure("command {keyword} failed", keyword=keyword.decode("ascii"))
            self.sendLine(Response.SYS_TEMP)
            return
        if result is not None:
            self._commandPending = True
            result.addBoth(self._commandDone)
            if self._commandPending:
                # Read no further line until this command has answered (rule R26).
                self.pauseProducing()

    @property
    def _transport(self) -> ITCPTransport:
        """
        The transport, typed for what this protocol uses of it (TCP, TLS and UNIX transports
        all provide it).
        """
        assert self.transport is not None
        return cast(ITCPTransport, self.transport)

    def _closing(self) -> bool:
        """
        Whether the session is over or ending: an answer that arrives now goes nowhere.
        """
        return not self.connected or bool(getattr(self._transport, "disconnecting", False))

    def _commandDone(self, result: object) -> None:
        self._commandPending = False
        if isinstance(result, Failure):
            self._log.failure("command failed", failure=result)
            if not self._closing():
                self.sendLine(Response.SYS_TEMP)
        if self.paused and not self._closing():
            self.resumeProducing()

    def _badCommand(self, response: bytes) -> None:
        """
        Answer a command that could not be run; too many of them end the session.
        """
        self._badCommands += 1
        if self._badCommands > self.factory.maxBadCommands:
            self._statistics.outcome = "too many bad commands"
            self.sendLine(Response.TOO_MANY_BAD)
            self._transport.loseConnection()
        else:
            self.sendLine(response)

    def sendLine(self, line: bytes) -> None:
        # Responses always end with CRLF, whatever line end the client used (rule R3).
        self._transport.write(line + b"\r\n")

    def _sendMultiline(self, first: bytes, lines: Sequence[bytes]) -> None:
        """
        Send a multi-line response whose lines need no byte-stuffing (listings).
        """
        self._transport.write(b"\r\n".join([first, *lines, b".", b""]))

    # AUTHORIZATION

    def _cleartextAllowed(self) -> bool:
        return self._secure or self.factory.allowCleartext or _isLoopback(self._transport.getPeer())

    def do_USER(self, argument: bytes) -> None:
        if not self._cleartextAllowed():
            self._badCommand(Response.CLEARTEXT_DISABLED)
            return
        if not argument or b" " in argument:
            self._badCommand(Response.SYNTAX)
            return
        # The same answer for every name: USER must not reveal which mailboxes exist (R14).
        self._user = argument
        self.sendLine(Response.OK)

    def do_PASS(self, argument: bytes) -> Deferred[Any] | None:
        if not self._cleartextAllowed():
            self._badCommand(Response.CLEARTEXT_DISABLED)
            return None
        if self._user is None:
            self._badCommand(Response.USER_FIRST)
            return None
        if not argument:
            self._badCommand(Response.SYNTAX)
            return None
        # The whole rest of the line is the password: it may contain spaces (rule R12).
        self._statistics.mechanism = "USER"
        return self._login(UsernamePassword(self._user, argument))

    def do_APOP(self, argument: bytes) -> Deferred[Any] | None:
        assert self._apopTimestamp is not None
        name, _, digest = argument.partition(b" ")
        if not name or len(digest) != 32 or not all(c in b"0123456789abcdef" for c in digest):
            self._badCommand(Response.SYNTAX)
            return None
        self._user = name
        self._statistics.mechanism = "APOP"
        return self._login(APOPCredentials(self._apopTimestamp, name, digest))

    def _availableMechanisms(self) -> list[ISASLMechanism]:
        """
        The SASL mechanisms usable on this connection now.
        """
        cleartext = self._cleartextAllowed()
        portal = self.factory.portal
        return [
            mechanism
            for mechanism in self.factory.mechanisms
            if (cleartext or not mechanism.cleartext) and mechanism.available(portal)
        ]

    def do_AUTH(self, argument: bytes) -> Deferred[Any] | None:
        mechanisms = self._availableMechanisms()
        if not argument:
            # Not in RFC 5034, but what Outlook sends to learn the mechanisms.
            self._sendMultiline(b"+OK", [mechanism.name for mechanism in mechanisms])
            return None
        name, _, initial = argument.partition(b" ")
        chosen = [mechanism for mechanism in mechanisms if mechanism.name == name.upper()]
        if not chosen:
            self._badCommand(Response.NO_MECHANISM)
            return None
        response: bytes | None = None
        if initial:
            # RFC 5034 section 4: "=" is an empty initial response.
            response = b"" if initial == b"=" else self._decodeBase64(initial)
            if response is None:
                self._badCommand(Response.SASL_MALFORMED)
                return None
        self._statistics.mechanism = "AUTH " + chosen[0].name.decode("ascii")
        self._saslExchange = chosen[0].exchange(self.factory.hostname)
        return self._saslStep(response)

    @staticmethod
    def _decodeBase64(encoded: bytes) -> bytes | None:
        try:
            return binascii.a2b_base64(encoded, strict_mode=True)
        except binascii.Error:
            return None

    def _saslResponse(self, line: bytes) -> Deferred[Any] | None:
        """
        Take a line sent during a SASL exchange: a base64 response, or C{*} to cancel.
        """
        if line == b"*":
            # RFC 5034 section 4: a cancelled exchange MUST be answered with -ERR (rule R31).
            exchange, self._saslExchange = self._saslExchange, None
            assert exchange is not None
            refused = exchange.cancel()
            if refused is not None:
                return self._login(refused)
            self.sendLine(Response.SASL_CANCELLED)
            return None
        response = self._decodeBase64(line)
        if response is None:
            self._saslExchange = None
            self._badCommand(Response.SASL_MALFORMED)
            return None
        return self._saslStep(response)

    def _saslStep(self, response: bytes | None) -> Deferred[Any] | None:
        exchange = self._saslExchange
        assert exchange is not None
        try:
            result = exchange.respond(response)
        except MalformedResponse:
            self._saslMalformed()
            return None
        if isinstance(result, Deferred):
            return result.addCallbacks(self._saslAnswer, self._saslFailed)
        return self._saslAnswer(result)

    def _saslAnswer(self, result: Challenge | ICredentials) -> Deferred[Any] | None:
        if self._closing():
            return None
        if isinstance(result, Challenge):
            self.sendLine(b"+ " + binascii.b2a_base64(result.data, newline=False))
            return None
        self._saslExchange = None
        return self._login(result)

    def _saslFailed(self, reason: Failure) -> Failure | None:
        if not reason.check(MalformedResponse):
            self._saslExchange = None
            return reason
        if not self._closing():
            self._saslMalformed()
        return None

    def _saslMalformed(self) -> None:
        self._saslExchange = None
        self._badCommand(Response.SASL_MALFORMED)

    def _login(self, credentials: ICredentials) -> Deferred[Any]:
        """
        Authenticate, lock the maildrop and take its listing; then enter TRANSACTION.
        """
        self._user = getattr(credentials, "username", self._user)
        # Realms written for twisted.mail.pop3 answer with an IMailbox, which popd adapts.
        d = self.factory.portal.login(credentials, None, IMaildrop, IMailbox)
        d.addCallback(self._loggedIn)
        d.addErrback(self._loginFailed)
        return d

    def _loggedIn(self, avatar: tuple[object, object, Callable[[], None]]) -> Deferred[None]:
        interface, avatarObject, logout = avatar
        self._logout = logout
        if interface is IMailbox:
            key = (id(self.factory.portal), self._user)
            self._maildrop = MailboxMaildrop(cast(IMailbox, avatarObject), key)
        else:
            self._maildrop = IMaildrop(avatarObject)
        maildrop = self._maildrop
        if self._closing():
            self._releaseMaildrop()
            return defer.succeed(None)
        factory = self.factory
        user = self._user or b""
        if self._peerKey is not None:
            factory.penalty.succeeded(self._peerKey)
        if not factory.userSessions.acquire(user):
            self._releaseMaildrop()
            factory.metrics.logins["too_many_sessions"] += 1
            self.sendLine(Response.TOO_MANY_SESSIONS)
            return defer.succeed(None)
        self._sessionUser = user
        # Checked only now, after a valid password, so that it reveals nothing (rule R28).
        if factory.loginDelay is not None and not factory.loginDelay.allow(user):
            self._releaseMaildrop()
            factory.metrics.logins["login_delay"] += 1
            self.sendLine(Response.LOGIN_DELAY)
            return defer.succeed(None)
        return maildrop.listing().addCallback(self._listed)

    def _listed(self, listing: Sequence[MessageInfo]) -> None:
        factory = self.factory
        factory.metrics.logins["success"] += 1
        self._transaction = _Transaction(listing)
        self.state = State.TRANSACTION
        self._statistics.outcome = "logged in"
        factory.idleTimeouts.watch(self, factory.timeout)
        self.sendLine(b"+OK Logged in.")

    def _loginFailed(self, reason: Failure) -> Deferred[Any] | None:
        self._releaseMaildrop()
        logins = self.factory.metrics.logins
        if reason.check(MaildropInUse):
            logins["in_use"] += 1
            self.sendLine(Response.IN_USE)
            return None
        if not reason.check(UnauthorizedLogin, LoginFailed):
            logins["error"] += 1
            self._log.failure("login failed unexpectedly", failure=reason)
            self.sendLine(Response.SYS_TEMP)
            return None
        logins["failure"] += 1
        self._authFailures += 1
        self._user = None
        # The answer comes late, without blocking the reactor, so guessing is slow; a peer
        # that keeps failing waits longer each time.
        if self._peerKey is None:
            delay = self.factory.authFailureDelay
        else:
            delay = self.factory.penalty.failed(self._peerKey)
        return deferLater(self.factory.reactor, delay, self._refuseLogin)

    def _refuseLogin(self) -> None:
        if self._closing():
            return
        if self._authFailures >= self.factory.maxAuthFailures:
            self._statistics.outcome = "too many authentication failures"
            self.sendLine(Response.TOO_MANY_FAILURES)
            self._transport.loseConnection()
        else:
            self.sendLine(Response.AUTH_FAILED)

    def do_STLS(self, argument: bytes) -> None:
        if argument:
            self._badCommand(Response.SYNTAX)
            return
        if self._secure:
            self._badCommand(Response.TLS_ACTIVE)
            return
        self.sendLine(Response.TLS_BEGIN)
        # Whatever arrived after STLS was sent in cleartext and may have been injected by a
        # man in the middle: it is dropped, never read as commands (rule R33).
        self.clearLineBuffer()
        self._user = None
        self._secure = True
        transport = self.transport
        assert ITLSTransport.providedBy(transport)
        assert self.factory.tlsContextFactory is not None
        transport.startTLS(self.factory.tlsContextFactory)

    def do_UTF8(self, argument: bytes) -> None:
        # RFC 6856 section 2: messages with UTF-8 header fields are sent only in UTF-8 mode.
        if self._noArgument(argument):
            self._utf8 = True
            self.sendLine(b"+OK UTF8 mode enabled.")

    def do_LANG(self, argument: bytes) -> None:
        # RFC 6856 section 3: responses are in English, the one language popd speaks.
        if not argument:
            lines = [tag + b" " + name for tag, name in LANGUAGES.items()]
            self._sendMultiline(b"+OK Language listing follows.", lines)
            return
        tag = b"en" if argument == b"*" else argument.lower().split(b"-", 1)[0]
        if b" " in argument or tag not in LANGUAGES:
            self._badCommand(Response.NO_LANGUAGE)
            return
        self.sendLine(b"+OK " + tag + b" Language changed.")

    def do_CAPA(self, argument: bytes) -> None:
        if argument:
            self._badCommand(Response.SYNTAX)
            return
        capabilities = [b"TOP", b"UIDL", b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE"]
        if self._cleartextAllowed():
            capabilities.append(b"USER")
        mechanisms = self._availableMechanisms()
        if mechanisms:
            capabilities.append(b" ".join([b"SASL", *(m.name for m in mechanisms)]))
        if b"STLS" not in self._unavailable and not self._secure:
            capabilities.append(b"STLS")
        factory = self.factory
        if factory.loginDelay is not None:
            capabilities.append(b"LOGIN-DELAY %d" % (factory.loginDelay.seconds,))
        if factory.expireDays is None:
            capabilities.append(b"EXPIRE NEVER")
        else:
            capabilities.append(b"EXPIRE %d" % (factory.expireDays,))
        capabilities += [b"UTF8 USER", b"LANG", b"IMPLEMENTATION popd"]
        self._sendMultiline(b"+OK Capability list follows.", capabilities)

    def do_QUIT(self, argument: bytes) -> Deferred[Any] | None:
        if argument:
            self._badCommand(Response.SYNTAX)
            return None
        if self.state is not State.TRANSACTION:
            self._statistics.outcome = "quit"
            self.sendLine(Response.BYE)
            self._transport.loseConnection()
            return None
        # UPDATE (RFC 1939 section 6): the only way marked messages are removed (rule R23).
        self.state = State.UPDATE
        transaction = self._transaction
        assert transaction is not None
        self._statistics.deleted = len(transaction.deleted)
        removed = transaction.deleted | self._expired()
        assert self._maildrop is not None
        d = self._maildrop.commit(sorted(removed), sorted(transaction.retrieved - removed))
        d.addCallbacks(self._committed, self._commitFailed, callbackArgs=(len(removed),))
        return d

    def _expired(self) -> AbstractSet[int]:
        """
        The messages the EXPIRE policy removes at this UPDATE (RFC 2449 section 6.7, rule R29):
        those retrieved at least the policy's days ago, and with EXPIRE 0 those retrieved in
        this session.  A message never retrieved never expires.
        """
        transaction = self._transaction
        assert transaction is not None
        days = self.factory.expireDays
        if days is None:
            return _NO_MARKS
        if days == 0:
            return transaction.retrieved
        cutoff = self.factory.reactor.seconds() - days * 86400
        retrievedAt = transaction.listing.retrievedAt
        if retrievedAt is None:
            return _NO_MARKS
        return {
            index
            for index, moment in enumerate(retrievedAt)
            if moment is not None and moment <= cutoff
        }

    def _committed(self, notRemoved: Sequence[int], removed: int) -> None:
        if notRemoved:
            self._statistics.outcome = "commit incomplete"
            self.sendLine(Response.NOT_REMOVED)
        else:
            self._statistics.outcome = "committed"
            self.sendLine(b"+OK Bye; %d messages removed." % (removed,))
        self._releaseMaildrop()
        self._transport.loseConnection()

    def _commitFailed(self, reason: Failure) -> None:
        self._statistics.outcome = "commit failed"
        if reason.check(PermanentFailure):
            self.sendLine(Response.SYS_PERM)
        else:
            if not reason.check(TemporaryFailure):
                self._log.failure("commit failed", failure=reason)
            self.sendLine(Response.NOT_REMOVED)
        self._releaseMaildrop()
        self._transport.loseConnection()

    # TRANSACTION

    def _messageIndex(self, argument: bytes) -> int | None:
        """
        Turn a message-number argument into a 0-based index, or answer C{-ERR}: numbers start
        at 1 (rule R16) and deleted messages are out of reach (rule R18).
        """
        number = parseNumber(argument)
        if number is None:
            self._badCommand(Response.SYNTAX)
            return None
        transaction = self._transaction
        assert transaction is not None
        if not 1 <= number <= len(transaction.listing):
            self.sendLine(Response.NO_SUCH_MESSAGE)
            return None
        if number - 1 in transaction.deleted:
            self.sendLine(Response.DELETED)
            return None
        return number - 1

    def _noArgument(self, argument: bytes) -> bool:
        if argument:
            self._badCommand(Response.SYNTAX)
            return False
        return True

    def do_STAT(self, argument: bytes) -> None:
        if self._noArgument(argument):
            assert self._transaction is not None
            self.sendLine(b"+OK %d %d" % self._transaction.totals())

    def do_LIST(self, argument: bytes) -> None:
        self._scanListing(argument, b"%d %d", _SIZES)

    def do_UIDL(self, argument: bytes) -> None:
        self._scanListing(argument, b"%d %s", _UIDLS)

    def _scanListing(
        self, argument: bytes, template: bytes, column: Callable[[Listing], Sequence[object]]
    ) -> None:
        """
        Answer C{LIST} or C{UIDL}: one message's line with an argument, every undeleted
        message's otherwise (rules R18, R22).

        @param template: formats a message number and its value in C{column}.
        """
        transaction = self._transaction
        assert transaction is not None
        if not argument:
            lines = transaction.scanListing(template, column)
            first = b"+OK %d messages (%d octets)" % transaction.totals()
            self._sendMultiline(first, lines)
            return
        index = self._messageIndex(argument)
        if index is not None:
            self.sendLine(b"+OK " + template % (index + 1, column(transaction.listing)[index]))

    def do_RETR(self, argument: bytes) -> Deferred[Any] | None:
        index = self._messageIndex(argument)
        if index is None:
            return None
        assert self._transaction is not None
        self._statistics.retrieved += 1
        self._transaction.retrieve(index)
        first = b"+OK %d octets" % (self._transaction.listing.sizes[index],)
        return self._sendMessage(index, first, MessageEncoder())

    def do_TOP(self, argument: bytes) -> Deferred[Any] | None:
        number, _, lines = argument.partition(b" ")
        bodyLines = parseNumber(lines)
        if bodyLines is None:
            self._badCommand(Response.SYNTAX)
            return None
        index = self._messageIndex(number)
        if index is None:
            return None
        self._statistics.topped += 1
        return self._sendMessage(index, b"+OK", MessageEncoder(bodyLines))

    def _sendMessage(self, index: int, first: bytes, encoder: MessageEncoder) -> Deferred[Any]:
        assert self._maildrop is not None
        d = self._maildrop.open(index)
        d.addCallbacks(self._startSending, self._openFailed, callbackArgs=(first, encoder))
        return d

    def _startSending(
        self, message: IMessage, first: bytes, encoder: MessageEncoder
    ) -> Deferred[None] | None:
        """
        Send the C{first} line, then the message.
        """
        if self._closing():
            message.close()
            return None
        sender = _MessageSender(
            self._transport, message, first, encoder, self._messageProgress, not self._utf8
        )
        self._sender = sender
        return sender.start().addBoth(self._sent, sender)

    def _messageProgress(self, octets: int) -> None:
        self._statistics.octetsSent += octets
        self.factory.metrics.octetsSent += octets
        self.resetTimeout()

    def _sent(self, result: bool | Failure, sender: _MessageSender) -> Failure | None:
        self._sender = None
        if isinstance(result, Failure):
            if not sender.begun:
                # Nothing was sent: answered as any command that failed.
                return result
            # The +OK is out and the message is incomplete: nothing said now could be told
            # apart from message content, so the only honest answer is to drop the connection.
            self._log.failure("reading a message failed", failure=result)
            self._statistics.outcome = "store failure"
            self._transport.abortConnection()
        elif not result:
            self.sendLine(Response.UTF8_HEADERS)
        return None

    def _openFailed(self, reason: Failure) -> None:
        if reason.check(MessageGone):
            self.sendLine(Response.GONE)
        elif reason.check(PermanentFailure):
            self.sendLine(Response.SYS_PERM)
        else:
            if not reason.check(TemporaryFailure):
                self._log.failure("opening a message failed", failure=reason)
            self.sendLine(Response.SYS_TEMP)

    def do_DELE(self, argument: bytes) -> None:
        index = self._messageIndex(argument)
        if index is not None:
            # Only a mark: the message is removed at QUIT, if the session gets there (R20).
            assert self._transaction is not None
            self._transaction.delete(index)
            self.sendLine(b"+OK Message %d deleted." % (index + 1,))

    def do_NOOP(self, argument: bytes) -> None:
        if self._noArgument(argument):
            self.sendLine(Response.OK)

    def do_RSET(self, argument: bytes) -> None:
        if self._noArgument(argument):
            assert self._transaction is not None
            self._transaction.reset()
            self.sendLine(b"+OK %d messages." % (len(self._transaction.listing),))

    def do_LAST(self, argument: bytes) -> None:
        # RFC 1460, removed from the standard: only behind --enable-last, never in CAPA (R38).
        if self._noArgument(argument):
            assert self._transaction is not None
            self.sendLine(b"+OK %d" % (self._transaction.highestAccessed,))


_Command = Callable[[POP3ServerProtocol, bytes], "Deferred[Any] | None"]

#: Each state's whitelist of commands (RFC 1939 section 3): nothing else is ever dispatched.
_COMMANDS: dict[State, dict[bytes, _Command]] = {
    State.AUTHORIZATION: {
        b"USER": POP3ServerProtocol.do_USER,
        b"PASS": POP3ServerProtocol.do_PASS,
        b"APOP": POP3ServerProtocol.do_APOP,
        b"AUTH": POP3ServerProtocol.do_AUTH,
        b"STLS": POP3ServerProtocol.do_STLS,
        b"CAPA": POP3ServerProtocol.do_CAPA,
        b"UTF8": POP3ServerProtocol.do_UTF8,
        b"LANG": POP3ServerProtocol.do_LANG,
        b"QUIT": POP3ServerProtocol.do_QUIT,
    },
    State.TRANSACTION: {
        b"STAT": POP3ServerProtocol.do_STAT,
        b"LIST": POP3ServerProtocol.do_LIST,
        b"RETR": POP3ServerProtocol.do_RETR,
        b"TOP": POP3ServerProtocol.do_TOP,
        b"DELE": POP3ServerProtocol.do_DELE,
        b"NOOP": POP3ServerProtocol.do_NOOP,
        b"RSET": POP3ServerProtocol.do_RSET,
        b"UIDL": POP3ServerProtocol.do_UIDL,
        b"LAST": POP3ServerProtocol.do_LAST,
        b"CAPA": POP3ServerProtocol.do_CAPA,
        b"LANG": POP3ServerProtocol.do_LANG,
        b"QUIT": POP3ServerProtocol.do_QUIT,
    },
    State.UPDATE: {},
}

# Commands of some state, with their metric labels: answered "not valid in this state" rather
# than "unknown" elsewhere.
_KNOWN_COMMANDS = {
    keyword: keyword.decode("ascii") for table in _COMMANDS.values() for keyword in table
}


class POP3ServerFactory(ServerFactory[POP3ServerProtocol]):
    """
    Makes a L{POP3ServerProtocol} for each connection, and holds the policy they share.

    @ivar portal: authenticates users; its realm must hand out L{IMaildrop} avatars.
    @ivar tlsContextFactory: when set, plain connections offer C{STLS} with it.
    @ivar allowCleartext: allow USER/PASS on connections that are neither TLS nor loopback.
    @ivar timeout: idle seconds allowed after login (RFC 1939: at least 600).
    @ivar authorizationTimeout: idle seconds allowed before login.
    @ivar enableLast: offer the obsolete C{LAST} command (RFC 1460).
    @ivar maxLineLength: the longest command line accepted, CRLF included (RFC 2449: >= 255).
    @ivar maxAuthFailures: failed logins after which the connection is closed.
    @ivar maxBadCommands: bad commands after which the connection is closed.
    @ivar authFailureDelay: seconds a failed login waits for its answer.
    @ivar mechanisms: the SASL mechanisms offered where they are usable (RFC 5034).
    @ivar expireDays: the EXPIRE policy (RFC 2449 section 6.7): messages retrieved this many
        days ago are removed at the next UPDATE (0: at the end of the session that retrieved
        them); L{None} for never.
    @ivar metrics: counters of what the server did, for C{--metrics}.
    @ivar peerConnections: connections held by each peer address, up to a limit.
    @ivar userSessions: logged-in sessions held by each user, up to a limit.
    @ivar penalty: the growing delay of each peer's failed logins, from C{authFailureDelay}
        up to C{maxAuthFailureDelay}.
    @ivar loginDelay: the LOGIN-DELAY policy (RFC 2449 section 6.5), if any.
    @ivar idleTimeouts: closes connections idle for longer than C{authorizationTimeout} or
        C{timeout}.
    @ivar hostname: the host part of the APOP timestamp.
    """

    protocol = POP3ServerProtocol

    def __init__(
        self,
        portal: Portal,
        *,
        tlsContextFactory: IOpenSSLServerConnectionCreator | None = None,
        allowCleartext: bool = False,
        timeout: float = 600,
        authorizationTimeout: float = 180,
        enableLast: bool = False,
        maxLineLength: int = 2048,
        maxAuthFailures: int = 3,
        maxBadCommands: int = 10,
        authFailureDelay: float = 2.0,
        maxAuthFailureDelay: float = 15.0,
        maxConnectionsPerPeer: int = 20,
        maxSessionsPerUser: int = 10,
        loginDelay: int | None = None,
        expireDays: int | None = None,
        mechanisms: Sequence[ISASLMechanism] | None = None,
        reactor: IReactorTime | None = None,
    ) -> None:
        if maxLineLength < 255:
            raise ValueError("RFC 2449 requires command lines of at least 255 octets")
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = cast(IReactorTime, globalReactor)
        self.portal = portal
        self.tlsContextFactory = tlsContextFactory
        self.allowCleartext = allowCleartext
        self.timeout = timeout
        self.authorizationTimeout = authorizationTimeout
        self.enableLast = enableLast
        self.maxLineLength = maxLineLength
        self.maxAuthFailures = maxAuthFailures
        self.maxBadCommands = maxBadCommands
        self.authFailureDelay = authFailureDelay
        # By default, every mechanism the portal's checkers can serve (SCRAM, OAuth, ...).
        self.mechanisms = mechanismsFor(portal) if mechanisms is None else mechanisms
        self.expireDays = expireDays
        self.metrics = Metrics()
        self.peerConnections: ConcurrencyLimit[str] = ConcurrencyLimit(maxConnectionsPerPeer)
        self.userSessions: ConcurrencyLimit[bytes] = ConcurrencyLimit(maxSessionsPerUser)
        # A peer's penalty is forgotten after ten quiet minutes.
        self.penalty: FailurePenalty[str] = FailurePenalty(
            authFailureDelay, maxAuthFailureDelay, 600, reactor.seconds
        )
        self.loginDelay: LoginDelay[bytes] | None = (
            None if loginDelay is None else LoginDelay(loginDelay, reactor.seconds)
        )
        self.reactor = reactor
        self.idleTimeouts: IdleTimeouts[POP3ServerProtocol] = IdleTimeouts(
            reactor, methodcaller("timeoutConnection")
        )
        self.hostname = socket.gethostname().encode("ascii", "replace")
        self._unavailableCommands: dict[tuple[bool, bool, bool], frozenset[bytes]] = {}

    def canStartTLS(self, transport: ITransport) -> bool:
        """
        Whether a connection on C{transport} can be offered C{STLS}.
        """
        return (
            self.tlsContextFactory is not None
            and ITLSTransport.providedBy(transport)
            and not _isTLS(transport)
        )

    def unavailableCommands(self, transport: ITransport) -> frozenset[bytes]:
        """
        The commands popd knows that a connection on C{transport} does not offer: C{LAST}
        unless enabled, C{STLS} unless L{canStartTLS}, C{APOP} unless L{apopAvailable}.  All
        connections alike share one set.
        """
        key = (self.enableLast, self.canStartTLS(transport), self.apopAvailable())
        unavailable = self._unavailableCommands.get(key)
        if unavailable is None:
            offered = zip((b"LAST", b"STLS", b"APOP"), key, strict=True)
            unavailable = frozenset(command for command, on in offered if not on)
            self._unavailableCommands[key] = unavailable
        return unavailable

    def apopAvailable(self) -> bool:
        """
        Whether APOP can be offered: only when a checker can verify it, which needs a
        plaintext-equivalent secret (rule R13).
        """
        return IUsernameHashedPassword in self.portal.listCredentialsInterfaces()
