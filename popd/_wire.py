"""
Pure helpers for the POP3 wire format: message encoding (CRLF line ends and byte-stuffing, RFC 1939
section 3), the sizes that encoding implies, and strict parsing of command arguments.

Nothing here does I/O, so everything here is tested exhaustively with hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterable

CRLF = b"\r\n"
TERMINATOR = b".\r\n"


def transmittedSize(chunks: Iterable[bytes]) -> int:
    """
    The size of a stored message as POP3 transmits it (RFC 1939 section 11, rule R19).

    Every bare LF counts as CRLF, a CRLF stays a CRLF, and a final CRLF is counted when the
    message does not end with a line end.  Byte-stuffing is not counted.  This is exactly the
    number of octets L{MessageEncoder} emits before un-stuffing and before the terminator.

    @param chunks: the stored message, in pieces of any size.
    """
    size = 0
    bareLineFeeds = 0
    previous = b""
    for chunk in chunks:
        if not chunk:
            continue
        size += len(chunk)
        bareLineFeeds += chunk.count(b"\n") - chunk.count(b"\r\n")
        if previous.endswith(b"\r") and chunk.startswith(b"\n"):
            # A CRLF split across two chunks is not a bare LF.
            bareLineFeeds -= 1
        previous = chunk
    size += bareLineFeeds
    if not previous.endswith(b"\n"):
        # Also true of an empty message: it is sent as one empty line.
        size += 2
    return size


class MessageEncoder:
    """
    Turns a stored message, fed in pieces of any size, into the body of a multi-line POP3
    response: line ends become CRLF (never CR CR LF), a line starting with "." gets one more
    (rule R7), and C{finish} closes the message with a line end when it lacks one and the
    C{.CRLF} terminator.

    With C{bodyLines} set it encodes a C{TOP} response (rule R21): the header, the blank line
    that ends it, and at most that many body lines.

    @ivar done: C{True} once a C{TOP} limit has been reached; later input is ignored, so the
        caller may stop reading.
    """

    def __init__(self, bodyLines: int | None = None) -> None:
        self._bodyLinesLeft = bodyLines
        self._inBody = False
        # A CR at the end of a piece is held back: it may be the first half of a CRLF.
        self._heldCarriageReturn = False
        self._atLineStart = True
        self._emitted = False
        self.done = False

    def encode(self, chunk: bytes) -> bytes:
        """
        Encode the next piece of the stored message.

        @return: the octets to send now (possibly empty).
        """
        if self.done or not chunk:
            return b""
        if self._heldCarriageReturn:
            chunk = b"\r" + chunk
            self._heldCarriageReturn = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._heldCarriageReturn = True
            if not chunk:
                return b""
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        if self._atLineStart and chunk.startswith(b"."):
            chunk = b"." + chunk
        # Byte-stuffing first, while lines end with one octet: split and join search for the
        # two octets faster than replace does for three.
        stuffed = b"\n..".join(chunk.split(b"\n."))
        # Maildirs store LF line ends: this is usually the one copy of the chunk made.
        stuffed = stuffed.replace(b"\n", b"\r\n")
        if self._bodyLinesLeft is not None:
            stuffed = self._limitLines(stuffed)
        self._atLineStart = stuffed.endswith(b"\n")
        self._emitted = True
        return stuffed

    def finish(self) -> bytes:
        """
        End the message.

        @return: the last octets of the response, terminator included.
        """
        tail = b""
        if self._heldCarriageReturn:
            tail = b"\r"
            self._atLineStart = False
            self._emitted = True
        if not (self._atLineStart and self._emitted):
            # A message that does not end with a line end still gets one, and an empty
            # message is sent as one empty line, as transmittedSize counts them.
            tail += CRLF
        return tail + TERMINATOR

    def _limitLines(self, lines: bytes) -> bytes:
        """
        Cut CRLF-converted C{lines} after the header, the blank line that ends it, and the
        number of body lines still wanted.
        """
        assert self._bodyLinesLeft is not None
        position = 0
        while True:
            end = lines.find(CRLF, position)
            if end < 0:
                return lines
            # At position 0 the line may have begun in an earlier piece.
            lineEmpty = end == position and (position > 0 or self._atLineStart)
            position = end + 2
            if self._inBody:
                self._bodyLinesLeft -= 1
            elif lineEmpty:
                self._inBody = True
            if self._inBody and self._bodyLinesLeft <= 0:
                self.done = True
                self._heldCarriageReturn = False
                return lines[:position]


def headerEnd(message: bytes) -> int:
    """
    Find the end of the header section at the start of a stored message: the blank line (LF
    or CRLF) that ends it.

    @return: the offset of the line end before the blank line (0 when the message starts with
        one), or -1 when the header section does not end in C{message}.
    """
    if message.startswith((b"\n", b"\r\n")):
        return 0
    end = message.find(b"\n\n")
    # Only a CRLF blank line that starts before that one matters.
    crlfEnd = message.find(b"\n\r\n", 0, len(message) if end < 0 else end + 2)
    return end if crlfEnd < 0 else crlfEnd


def parseNumber(argument: bytes) -> int | None:
    """
    Parse a decimal argument strictly (rule R5): ASCII digits only, no sign, no white space,
    at most 10 digits so that no overflowing value reaches the store.

    @return: the number, or L{None} when C{argument} is not one.
    """
    if not (0 < len(argument) <= 10 and argument.isdigit()):
        return None
    return int(argument)
