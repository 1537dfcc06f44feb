"""
Tests for L{popd._sizing}: the sizes of message files as POP3 transmits them.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from popd import _sizing
from popd._sizing import UNREAD, measure, measureMany
from tests.support import canonical

# Line ends of every kind, no line end at the end, empty, and more than one read's worth with a
# CRLF split between two reads.
_CONTENTS = [
    b"a\nb\n",
    b"a\r\nb\r\n",
    b"a\r\nb\n\r\r\n",
    b"no line end",
    b"",
    b"\n\n\r\n",
    b"x" * 65535 + b"\r\ny\n",
    b"y\n" * 100_000,
]


def _openDescriptors() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


class SizingTests(SynchronousTestCase):
    """
    L{measure} sizes one message and L{measureMany} many, to what a client receives (R19).
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.directoryFD = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, self.directoryFD)

    def write(self, contents: list[bytes]) -> list[str]:
        """
        @return: the names of new files in the directory with C{contents}.
        """
        names = []
        for content in contents:
            name = f"{len(os.listdir(self.directory))}.m"
            with open(os.path.join(self.directory, name), "wb") as f:
                f.write(content)
            names.append(name)
        return names

    def test_sizes(self) -> None:
        """
        Both give the size of the message with CRLF line ends and a final line end, whatever
        the line ends it is stored with.
        """
        names = self.write(_CONTENTS)
        expected = [len(canonical(content)) for content in _CONTENTS]
        self.assertEqual(measureMany(names, self.directoryFD), expected)
        self.assertEqual([measure(name, self.directoryFD) for name in names], expected)
        self.assertEqual([measure(os.path.join(self.directory, name)) for name in names], expected)

    def test_batches(self) -> None:
        """
        More messages than are opened at once are sized in order, and no descriptor is left
        open.
        """
        self.patch(_sizing, "_BATCH", 3)
        contents = [b"m\n" * n for n in range(10)]
        names = self.write(contents)
        before = _openDescriptors()
        sizes = measureMany(names, self.directoryFD)
        self.assertEqual(sizes, [len(canonical(content)) for content in contents])
        self.assertEqual(_openDescriptors(), before)

    def test_unread(self) -> None:
        """
        A message that cannot be opened (gone, or a symbolic link) or read (a directory) is
        L{UNREAD}, and the others are sized; L{measure} raises why.
        """
        names = self.write([b"a\n", b"bb\n"])
        os.symlink(os.path.join(self.directory, names[0]), os.path.join(self.directory, "link"))
        os.mkdir(os.path.join(self.directory, "directory"))
        listed = [names[0], "gone", "link", "directory", names[1]]
        before = _openDescriptors()
        self.assertEqual(measureMany(listed, self.directoryFD), [3, UNREAD, UNREAD, UNREAD, 4])
        self.assertEqual(_openDescriptors(), before)
        self.assertRaises(FileNotFoundError, measure, "gone", self.directoryFD)
        self.assertRaises(OSError, measure, "link", self.directoryFD)
        self.assertRaises(IsADirectoryError, measure, "directory", self.directoryFD)

    def test_outOfDescriptors(self) -> None:
        """
        Once the process is out of descriptors, the rest of a batch is L{UNREAD} without being
        tried; the next batch is tried again.
        """
        self.patch(_sizing, "_BATCH", 4)
        names = self.write([b"a\n"] * 8)
        realOpen = os.open
        tried: list[str] = []

        def open(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
            tried.append(path)
            if len(tried) in (3, 6):
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), path)
            return realOpen(path, flags, *args, **kwargs)

        self.patch(_sizing.os, "open", open)
        before = _openDescriptors()
        sizes = measureMany(names, self.directoryFD)
        self.assertEqual(sizes, [3, 3, UNREAD, UNREAD, 3, 3, UNREAD, UNREAD])
        self.assertEqual(tried, names[:3] + names[4:7])
        self.assertEqual(_openDescriptors(), before)

    def test_fifo(self) -> None:
        """
        A FIFO in place of a message neither blocks nor stops the others from being sized,
        though the kernel takes no advice on reading one ahead.
        """
        names = self.write([b"a\n"])
        os.mkfifo(os.path.join(self.directory, "fifo"))
        sizes = measureMany(["fifo", *names], self.directoryFD)
        self.assertEqual(sizes[1:], [3])

    def test_readAhead(self) -> None:
        """
        Every message of a batch is announced to the kernel (to be read ahead, up to its first
        MiB) before the first one is read.
        """
        names = self.write([b"a\n", b"b\n", b"c\n"])
        events: list[str] = []
        realAdvise, realRead = os.posix_fadvise, os.read

        def advise(fd: int, offset: int, length: int, advice: int) -> None:
            events.append("advise")
            self.assertEqual((offset, length, advice), (0, 1 << 20, os.POSIX_FADV_WILLNEED))
            realAdvise(fd, offset, length, advice)

        def read(fd: int, size: int) -> bytes:
            events.append("read")
            return realRead(fd, size)

        self.patch(_sizing, "_advise", advise)
        self.patch(_sizing.os, "read", read)
        self.assertEqual(measureMany(names, self.directoryFD), [3, 3, 3])
        self.assertEqual(events, ["advise"] * 3 + ["read"] * 3)

    def test_closedTogether(self) -> None:
        """
        The descriptors of a batch are closed by runs of consecutive numbers, never closing one
        between them that another part of the process opened meanwhile.
        """
        names = self.write([b"a\n"] * 6)
        realOpen = os.open
        others: list[int] = []

        def open(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
            if path == names[3]:
                # Another thread opens a file now: the batch's descriptors have a gap.
                others.append(realOpen(self.directory, os.O_RDONLY))
            return realOpen(path, flags, *args, **kwargs)

        closed: list[tuple[int, int]] = []
        realCloseRange = os.closerange

        def closerange(low: int, high: int) -> None:
            closed.append((low, high))
            realCloseRange(low, high)

        self.patch(_sizing.os, "open", open)
        self.patch(_sizing.os, "closerange", closerange)
        before = _openDescriptors()
        self.assertEqual(measureMany(names, self.directoryFD), [3] * 6)
        self.assertEqual(_openDescriptors() - before, set(others))
        os.close(others[0])
        self.assertEqual(sum(high - low for low, high in closed), 6)
        self.assertFalse([(low, high) for low, high in closed if low <= others[0] < high])
