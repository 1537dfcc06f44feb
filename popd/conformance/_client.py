"""
The conformance suite's POP3 client: blocking sockets and C{ssl}, nothing from popd's server or
from Twisted, so that the suite shares no code path with a server it judges.

Every read waits at most the per-operation timeout and never past the deadline of the check in
progress, so a server that hangs makes a check fail instead of hanging the suite.  Every
connection reports what it received to a L{WireLog}, which the checks of rules R2, R3 and R7
judge once all other checks have run.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass, field

CRLF = b"\r\n"

_RESPONSE_CODE = re.compile(rb"\[([^\]]*)\]")
_LINE = re.compile(rb"[^\n]*\n|[^\n]+\Z")


class ServerError(Exception):
    """
    The server broke off the conversation: it did not answer in time, closed the connection, or
    sent something that is not a POP3 response.
    """


class ServerTimeout(ServerError):
    """
    The server sent nothing within the timeout.
    """


class ServerClosed(ServerError):
    """
    The server closed the connection (or reset it) where an answer was due.
    """


class NotAStatusLine(ServerError):
    """
    A line where a status line (C{+OK} or C{-ERR}) was due began with something else.
    """


def show(data: bytes, limit: int = 60) -> str:
    """
    Render wire octets for a one-line report: printable ASCII as is, anything else escaped,
    cut after C{limit} characters.
    """
    text = data.decode("ascii", "backslashreplace")
    text = "".join(c if " " <= c <= "~" else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def splitLines(body: bytes) -> list[bytes]:
    """
    Split octets after each LF, keeping the line ends; a last line without one is kept too.
    Unlike C{bytes.splitlines}, a lone CR does not end a line.
    """
    return _LINE.findall(body)


def unstuff(body: bytes) -> bytes:
    """
    Undo byte-stuffing (RFC 1939 section 3): drop the first octet of every line that starts
    with C{.}.

    @param body: a multi-line response as received, without its status line and terminator.
    @return: the octets the server meant, whose length RFC 1939 counts as the message size.
    """
    return b"".join(line[1:] if line.startswith(b".") else line for line in splitLines(body))


@dataclass(frozen=True)
class Reply:
    """
    A status line (RFC 1939 section 3), without its line end.

    @ivar line: the whole line as received.
    """

    line: bytes

    @property
    def ok(self) -> bool:
        """
        Whether the indicator is C{+OK} (in any case: R2 is judged from the L{WireLog}).
        """
        return self.line[:3].upper() == b"+OK"

    @property
    def text(self) -> bytes:
        """
        What follows the status indicator and its space.
        """
        indicator = 3 if self.ok else 4
        return self.line[indicator + 1 :] if self.line[indicator:].startswith(b" ") else b""

    @property
    def code(self) -> bytes | None:
        """
        The RFC 2449 response code that starts the text (C{IN-USE}, C{SYS/TEMP}), if any.
        """
        match = _RESPONSE_CODE.match(self.text)
        return match.group(1).upper() if match else None

    def __str__(self) -> str:
        return show(self.line)


@dataclass
class WireLog:
    """
    What the server sent on every connection of a run, for the checks that judge every
    response rather than one: R2 (status indicators in upper case), R3 (CRLF line ends, first
    lines of at most 512 octets) and R7 (multi-line framing and byte-stuffing).

    @ivar statusLines: every status line, with its line end.
    @ivar bodies: the body of every C{RETR} and C{TOP} response, as received.
    @ivar multilineResponses: how many multi-line responses were read to their end.
    @ivar badTerminators: terminator lines that were not exactly C{.CRLF}.
    @ivar unterminated: descriptions of multi-line responses that never ended.
    @ivar bareLineFeeds: samples of lines that ended with LF alone.
    @ivar desyncs: descriptions of responses that went on after their terminator.
    """

    statusLines: list[bytes] = field(default_factory=list)
    bodies: list[tuple[bytes, bytes]] = field(default_factory=list)
    multilineResponses: int = 0
    badTerminators: list[bytes] = field(default_factory=list)
    unterminated: list[str] = field(default_factory=list)
    bareLineFeeds: list[bytes] = field(default_factory=list)
    desyncs: list[str] = field(default_factory=list)


class Connection:
    """
    One POP3 connection, read line by line.

    @ivar greeting: the server's greeting, once L{readGreeting} has read it.
    @ivar tlsVersion: the negotiated TLS version, or L{None} while the connection is plain.
    """

    def __init__(
        self,
        host: str,
        port: int,
        log: WireLog,
        *,
        timeout: float,
        deadline: float,
        tlsContext: ssl.SSLContext | None = None,
    ) -> None:
        """
        Connect, and with C{tlsContext} negotiate implicit TLS (RFC 8314) at once.

        @param timeout: the longest wait for any one read, in seconds.
        @param deadline: a L{time.monotonic} time after which every read fails.
        @raise ServerError: the connection or the TLS handshake failed.
        """
        self._host = host
        self._log = log
        self._timeout = timeout
        self._deadline = deadline
        self._buffer = b""
        self.greeting: Reply | None = None
        self.tlsVersion: str | None = None
        try:
            self._socket: socket.socket = socket.create_connection(
                (host, port), timeout=self._remaining()
            )
        except OSError as e:
            raise ServerClosed(f"cannot connect to {host}:{port}: {e}") from None
        if tlsContext is not None:
            try:
                self._handshake(tlsContext)
            except ServerError:
                self.close()
                raise

    def _remaining(self) -> float:
        left = min(self._timeout, self._deadline - time.monotonic())
        if left <= 0:
            raise ServerTimeout("the check ran out of time")
        return left

    def _fill(self) -> None:
        try:
            self._socket.settimeout(self._remaining())
            data = self._socket.recv(65536)
        except TimeoutError:
            raise ServerTimeout(f"no answer within {self._timeout:g} s") from None
        except OSError as e:
            raise ServerClosed(f"connection failed: {e}") from None
        if not data:
            raise ServerClosed("the server closed the connection")
        self._buffer += data

    def _handshake(self, context: ssl.SSLContext) -> None:
        try:
            self._socket.settimeout(self._remaining())
            self._socket = context.wrap_socket(self._socket, server_hostname=self._host)
        except TimeoutError:
            raise ServerTimeout("the TLS handshake timed out") from None
        except OSError as e:
            raise ServerClosed(f"the TLS handshake failed: {e}") from None
        assert isinstance(self._socket, ssl.SSLSocket)
        self.tlsVersion = self._socket.version()

    def startTLS(self, context: ssl.SSLContext) -> None:
        """
        Negotiate TLS on this connection, after the server accepted C{STLS} (RFC 2595).

        @raise ServerError: the handshake failed.
        """
        self._handshake(context)

    def send(self, data: bytes) -> None:
        """
        Send octets as they are.
        """
        try:
            self._socket.settimeout(self._remaining())
            self._socket.sendall(data)
        except TimeoutError:
            raise ServerTimeout("the server stopped reading") from None
        except OSError as e:
            raise ServerClosed(f"sending failed: {e}") from None

    def readLine(self) -> bytes:
        """
        Read one line, with its line end; a line ending with a bare LF is logged for R3.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
                if not line.endswith(CRLF):
                    self._log.bareLineFeeds.append(line)
                return line
            self._fill()

    def readStatus(self) -> Reply:
        """
        Read a status line.

        @raise NotAStatusLine: the line does not start with C{+OK} or C{-ERR} (in any case).
        """
        return self._status(self.readLine())

    def _status(self, line: bytes) -> Reply:
        content = line.rstrip(b"\r\n")
        indicator = content.split(b" ", 1)[0].upper()
        if indicator not in (b"+OK", b"-ERR"):
            raise NotAStatusLine(f"expected +OK or -ERR, got {show(content)!r}")
        self._log.statusLines.append(line)
        return Reply(content)

    def readStatusOrChallenge(self) -> Reply | bytes:
        """
        Read the answer to a line of a SASL exchange (RFC 5034 section 4).

        @return: a status line, or the base64 text of a C{+} continuation.
        """
        line = self.readLine()
        if line.startswith(b"+ ") or line.rstrip(b"\r\n") == b"+":
            return line[2:].rstrip(b"\r\n")
        return self._status(line)

    def readGreeting(self) -> Reply:
        """
        Read the greeting (RFC 1939 section 4).
        """
        self.greeting = self.readStatus()
        return self.greeting

    def readBody(self) -> bytes:
        """
        Read the rest of a multi-line response up to its terminating C{.} line.

        @return: the lines between the status line and the terminator, as received (still
            byte-stuffed).
        """
        lines: list[bytes] = []
        try:
            while True:
                line = self.readLine()
                if line.rstrip(b"\r\n") == b".":
                    if line != b".\r\n":
                        self._log.badTerminators.append(line)
                    break
                lines.append(line)
        except ServerError as e:
            self._log.unterminated.append(f"{e} after {len(lines)} lines")
            raise
        self._log.multilineResponses += 1
        return b"".join(lines)

    def command(self, line: bytes) -> Reply:
        """
        Send a command line and read its status line.
        """
        self.send(line + CRLF)
        return self.readStatus()

    def multiline(self, line: bytes) -> tuple[Reply, bytes | None]:
        """
        Send a command whose C{+OK} answer is multi-line, and read the whole answer.

        @return: the status line, and the body when the answer is C{+OK}.
        """
        reply = self.command(line)
        if not reply.ok:
            return reply, None
        body = self.readBody()
        if line[:4].upper() in (b"RETR", b"TOP "):
            self._log.bodies.append((line, body))
        return reply, body

    def readAvailable(self, seconds: float) -> bytes:
        """
        Collect whatever arrives within C{seconds}, for checks that the server says nothing.

        @return: the octets received (already buffered ones included); the connection may have
            been closed.
        """
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self._socket.settimeout(max(0.01, end - time.monotonic()))
                data = self._socket.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break
            if not data:
                break
            self._buffer += data
        data, self._buffer = self._buffer, b""
        return data

    def waitClosed(self) -> bool:
        """
        Wait for the server to close the connection, reading and discarding anything else.

        @return: whether it closed within the timeout.
        """
        try:
            while True:
                self._buffer = b""
                self._fill()
        except ServerClosed:
            return True
        except ServerTimeout:
            return False

    def close(self) -> None:
        """
        Drop the connection without a word: for the server, a session ended other than by
        C{QUIT} (RFC 1939 section 6).
        """
        try:
            self._socket.close()
        except OSError:
            pass
