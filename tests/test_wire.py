"""
Property tests for L{popd._wire}: message encoding, sizes and argument parsing.
"""

from __future__ import annotations

import re
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from popd._wire import MessageEncoder, headerEnd, parseNumber, transmittedSize
from tests.support import canonical

# Messages built from the octets that matter to line handling, so that every interesting
# combination (CR LF, bare CR, bare LF, "." at a line start) is common.
messages = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"Subject: x", b" "]),
    max_size=60,
).map(b"".join)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """
    A message and one way to cut it into pieces, as a store might hand them out.
    """
    message = draw(messages)
    cuts = sorted(draw(st.lists(st.integers(0, len(message)), max_size=8)))
    bounds = [0, *cuts, len(message)]
    return message, [message[a:b] for a, b in pairwise(bounds)]


def encode(pieces: list[bytes], bodyLines: int | None = None) -> bytes:
    encoder = MessageEncoder(bodyLines)
    return b"".join(encoder.encode(piece) for piece in pieces) + encoder.finish()


def unstuff(response: bytes) -> bytes:
    """
    Undo byte-stuffing and remove the terminator, as a client does; fail on a malformed body.
    """
    assert response.endswith(b"\r\n.\r\n"), response
    lines = response[:-3].split(b"\r\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        assert not line.startswith(b".") or line.startswith(b".."), lines
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


class MessageEncoderTests(SynchronousTestCase):
    """
    Rule R7 and R19: whatever the stored line ends and however the store cuts the message,
    the client reads back exactly the CRLF form of the message, and its size is
    L{transmittedSize}.
    """

    @settings(max_examples=500)
    @given(chunked())
    def test_roundTrip(self, case: tuple[bytes, list[bytes]]) -> None:
        """
        Un-stuffing the response gives the canonical message, for any cut into pieces.
        """
        message, pieces = case
        self.assertEqual(unstuff(encode(pieces)), canonical(message))

    @settings(max_examples=500)
    @given(chunked())
    def test_size(self, case: tuple[bytes, list[bytes]]) -> None:
        """
        L{transmittedSize} counts the octets a client reads back (R19), for any cut.
        """
        message, pieces = case
        self.assertEqual(transmittedSize(pieces), len(canonical(message)))

    @given(chunked())
    def test_noNewCarriageReturns(self, case: tuple[bytes, list[bytes]]) -> None:
        """
        A message stored with LF line ends is never sent with CR CR LF.
        """
        message, pieces = case
        if b"\r" not in message:
            self.assertNotIn(b"\r\r", encode(pieces))

    def test_dotAtChunkBoundary(self) -> None:
        """
        A "." line that begins exactly where one piece ends is stuffed.
        """
        self.assertEqual(encode([b"a\n", b".b\n"]), b"a\r\n..b\r\n.\r\n")
        self.assertEqual(encode([b"a\r", b"\n.", b"\n"]), b"a\r\n..\r\n.\r\n")

    def test_firstLineDot(self) -> None:
        """
        The message's first line is stuffed too.
        """
        self.assertEqual(encode([b".\n"]), b"..\r\n.\r\n")

    def test_noFinalNewline(self) -> None:
        """
        A message without a final line end still ends with CRLF "." CRLF.
        """
        self.assertEqual(encode([b"abc"]), b"abc\r\n.\r\n")
        self.assertEqual(transmittedSize([b"abc"]), 5)

    def test_empty(self) -> None:
        """
        An empty message is sent as one empty line, and counted so.
        """
        self.assertEqual(encode([]), b"\r\n.\r\n")
        self.assertEqual(transmittedSize([]), 2)


class TopTests(SynchronousTestCase):
    """
    Rule R21: C{TOP msg n} sends the header, the blank line and n body lines.
    """

    @settings(max_examples=500)
    @given(chunked(), st.integers(0, 12))
    def test_topIsAPrefix(self, case: tuple[bytes, list[bytes]], bodyLines: int) -> None:
        """
        The lines sent are the header, the blank line and the first C{bodyLines} body lines of
        the canonical message; a count beyond the body gives the whole message.
        """
        message, pieces = case
        lines = canonical(message).split(b"\r\n")[:-1]
        end = lines.index(b"") + 1 + bodyLines if b"" in lines else len(lines)
        expected = b"".join(line + b"\r\n" for line in lines[:end])
        self.assertEqual(unstuff(encode(pieces, bodyLines)), expected)

    def test_stopsReading(self) -> None:
        """
        Once the wanted lines are out, the encoder says it is done and ignores the rest.
        """
        encoder = MessageEncoder(1)
        self.assertEqual(encoder.encode(b"H: 1\n\nbody\nmore\n"), b"H: 1\r\n\r\nbody\r\n")
        self.assertTrue(encoder.done)
        self.assertEqual(encoder.encode(b"even more\n"), b"")
        self.assertEqual(encoder.finish(), b".\r\n")


class HeaderEndTests(SynchronousTestCase):
    """
    L{headerEnd} finds the blank line that ends a message's header section.
    """

    # The definition: a line end, or the start of the message, followed by an empty line.
    blankLine = re.compile(rb"(?:^|\n)\r?\n")

    @given(messages)
    def test_likeTheDefinition(self, message: bytes) -> None:
        found = self.blankLine.search(message)
        self.assertEqual(headerEnd(message), found.start() if found else -1)

    def test_examples(self) -> None:
        self.assertEqual(headerEnd(b"A: b\n\nbody\n"), 4)
        self.assertEqual(headerEnd(b"A: b\r\nC: d\r\n\r\nbody"), 11)
        self.assertEqual(headerEnd(b"A: b\r\n\r\nC\n\n"), 5)
        self.assertEqual(headerEnd(b"\r\nbody\n\n"), 0)
        self.assertEqual(headerEnd(b"A: b\nC: d\n"), -1)
        self.assertEqual(headerEnd(b""), -1)


class ParseNumberTests(SynchronousTestCase):
    """
    Rule R5: numbers are parsed strictly.
    """

    def test_valid(self) -> None:
        self.assertEqual(parseNumber(b"1"), 1)
        self.assertEqual(parseNumber(b"0"), 0)
        self.assertEqual(parseNumber(b"4294967297"), 4294967297)

    def test_invalid(self) -> None:
        """
        Signs, spaces, non-ASCII digits, empty strings and over-long numbers are refused.
        """
        for argument in [
            b"",
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"0x1",
            b"18446744073709551616",
            "\u0661".encode("utf-8"),
            b"1.0",
        ]:
            self.assertIsNone(parseNumber(argument), argument)

    @given(st.binary(max_size=12))
    def test_neverRaises(self, argument: bytes) -> None:
        """
        Any octets give a non-negative number or L{None}, never an exception.
        """
        result = parseNumber(argument)
        self.assertTrue(result is None or result >= 0)
