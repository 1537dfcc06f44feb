"""
A horizontal bar chart written as a PNG with the standard library only (C{zlib} and C{struct}),
so that the benchmark draws its chart without matplotlib or any other package.

Text is drawn with a built-in 5x7 pixel font of capitals, digits and a little punctuation
(lower-case letters are drawn as capitals), scaled up twice.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

Colour = tuple[int, int, int]

# Each glyph: seven rows, top first, of five pixels (bit 4 is the leftmost).
_FONT: dict[str, tuple[int, ...]] = {
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11),
    "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E),
    "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F),
    "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F),
    "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11),
    "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11),
    "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D),
    "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E),
    "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A),
    "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04),
    "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    " ": (0, 0, 0, 0, 0, 0, 0),
    ".": (0, 0, 0, 0, 0, 0x0C, 0x0C),
    ",": (0, 0, 0, 0, 0x0C, 0x04, 0x08),
    ":": (0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0),
    ";": (0, 0x0C, 0x0C, 0, 0x0C, 0x04, 0x08),
    "/": (0, 0x01, 0x02, 0x04, 0x08, 0x10, 0),
    "-": (0, 0, 0, 0x1F, 0, 0, 0),
    "+": (0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0),
    "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02),
    ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08),
    "%": (0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03),
    "=": (0, 0, 0x1F, 0, 0x1F, 0, 0),
    "<": (0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02),
    ">": (0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08),
    "_": (0, 0, 0, 0, 0, 0, 0x1F),
    "?": (0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04),
}
_SCALE = 2
_ADVANCE = 6 * _SCALE
_LINE = 9 * _SCALE

_WHITE: Colour = (255, 255, 255)
_BLACK: Colour = (0, 0, 0)
_GREY: Colour = (120, 120, 120)
_LIGHT: Colour = (225, 225, 225)


class Canvas:
    """
    An RGB image in memory, to draw rectangles and text on and save as a PNG.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self._pixels = bytearray(_WHITE * (width * height))

    def rectangle(self, x: int, y: int, width: int, height: int, colour: Colour) -> None:
        """
        Fill a rectangle (clipped to the canvas).
        """
        x0, x1 = max(0, x), min(self.width, x + width)
        if x1 <= x0:
            return
        row = bytes(colour) * (x1 - x0)
        for line in range(max(0, y), min(self.height, y + height)):
            start = (line * self.width + x0) * 3
            self._pixels[start : start + len(row)] = row

    def text(self, x: int, y: int, text: str, colour: Colour = _BLACK) -> int:
        """
        Draw C{text} with its top-left corner at C{(x, y)}.

        @return: the x just after the text.
        """
        for character in text.upper():
            rows = _FONT.get(character, _FONT["?"])
            for number, bits in enumerate(rows):
                for column in range(5):
                    if bits & (0x10 >> column):
                        self.rectangle(
                            x + column * _SCALE, y + number * _SCALE, _SCALE, _SCALE, colour
                        )
            x += _ADVANCE
        return x

    def png(self) -> bytes:
        """
        The image as a PNG file: 8-bit RGB, no filtering, one compressed IDAT chunk.
        """
        stride = self.width * 3
        raw = b"".join(
            b"\0" + bytes(self._pixels[line * stride : (line + 1) * stride])
            for line in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
            )

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


@dataclass(frozen=True)
class Panel:
    """
    One metric: a bar per server.

    @ivar title: what is measured, with its unit.
    @ivar note: shown after the title: which way is better, the target.
    @ivar bars: a label, a value (L{None} when not measured) and its text, per server.
    """

    title: str
    note: str
    bars: Sequence[tuple[str, float | None, str]]


def barChart(
    title: str, subtitle: str, panels: Sequence[Panel], colours: dict[str, Colour]
) -> bytes:
    """
    Draw panels of horizontal bars, each scaled to its own largest value, one under another.

    @param colours: the colour of each bar label's bars.
    @return: the PNG file.
    """
    width, labelWidth, barWidth = 1200, 170, 600
    barHeight, gap = 18, 6
    heights = [_LINE + len(panel.bars) * (barHeight + gap) + 14 for panel in panels]
    canvas = Canvas(width, 2 * _LINE + 20 + sum(heights))
    canvas.text(10, 8, title)
    canvas.text(10, 8 + _LINE, subtitle, _GREY)
    y = 2 * _LINE + 20
    for panel, height in zip(panels, heights, strict=True):
        canvas.rectangle(0, y - 6, width, 1, _LIGHT)
        after = canvas.text(10, y, panel.title)
        canvas.text(after + _ADVANCE, y, panel.note, _GREY)
        top = max((value for _, value, _ in panel.bars if value), default=0.0)
        barY = y + _LINE
        for label, value, shown in panel.bars:
            canvas.text(10, barY + 2, label, colours.get(label, _BLACK))
            length = int(barWidth * value / top) if value and top else 0
            canvas.rectangle(labelWidth, barY, max(length, 1), barHeight, colours.get(label, _GREY))
            canvas.text(labelWidth + max(length, 1) + 8, barY + 2, shown)
            barY += barHeight + gap
        y += height
    return canvas.png()
