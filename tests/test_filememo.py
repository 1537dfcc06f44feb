"""
Tests for L{popd._filememo}: values remembered while a file keeps its stamp.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from popd._filememo import FileMemo, FileStamp, fileStamp


def _stamp(inode: int, changed: int = 0) -> FileStamp:
    return FileStamp(1, inode, 10, changed, changed)


class FileStampTests(SynchronousTestCase):
    """
    L{fileStamp} tells apart the versions of a file that replacing or changing it makes.
    """

    def test_versions(self) -> None:
        """
        A file renamed over another, and a file written in place, have new stamps; a file
        untouched keeps its own.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"one")
        first = fileStamp(os.stat(path))
        self.assertEqual(fileStamp(os.stat(path)), first)
        with open(path, "ab") as f:
            f.write(b"two")
        grown = fileStamp(os.stat(path))
        self.assertNotEqual(grown, first)
        other = path + ".new"
        with open(other, "wb") as f:
            f.write(b"onetwo")
        os.replace(other, path)
        replaced = fileStamp(os.stat(path))
        self.assertNotEqual(replaced.inode, grown.inode)


class FileMemoTests(SynchronousTestCase):
    """
    L{FileMemo} gives back a value only for the stamp it was remembered with, and keeps the
    most recently used values that fit its capacity.
    """

    def test_sameStamp(self) -> None:
        """
        A value is given back for its path and stamp, and for nothing else.
        """
        memo: FileMemo[str] = FileMemo(10)
        memo.remember("/a", _stamp(1), "one")
        self.assertEqual(memo.get("/a", _stamp(1)), "one")
        self.assertIsNone(memo.get("/b", _stamp(1)))
        self.assertIsNone(memo.get("/a", _stamp(1, changed=5)))

    def test_otherStampForgets(self) -> None:
        """
        A value asked for with another stamp is forgotten: the file it came from is gone.
        """
        memo: FileMemo[str] = FileMemo(10)
        memo.remember("/a", _stamp(1), "one")
        self.assertIsNone(memo.get("/a", _stamp(2)))
        self.assertIsNone(memo.get("/a", _stamp(1)))

    def test_rememberReplaces(self) -> None:
        """
        Remembering a path again replaces its value and its weight.
        """
        memo: FileMemo[str] = FileMemo(10)
        memo.remember("/a", _stamp(1), "one", 8)
        memo.remember("/a", _stamp(2), "two", 8)
        self.assertEqual(memo.get("/a", _stamp(2)), "two")
        memo.remember("/b", _stamp(3), "three", 2)
        self.assertEqual(memo.get("/a", _stamp(2)), "two")
        self.assertEqual(memo.get("/b", _stamp(3)), "three")

    def test_leastRecentlyUsedDropped(self) -> None:
        """
        Values that no longer fit the capacity are forgotten, least recently used first.
        """
        memo: FileMemo[str] = FileMemo(10)
        memo.remember("/a", _stamp(1), "a", 4)
        memo.remember("/b", _stamp(2), "b", 4)
        self.assertEqual(memo.get("/a", _stamp(1)), "a")
        memo.remember("/c", _stamp(3), "c", 4)
        self.assertIsNone(memo.get("/b", _stamp(2)))
        self.assertEqual(memo.get("/a", _stamp(1)), "a")
        self.assertEqual(memo.get("/c", _stamp(3)), "c")

    def test_tooHeavy(self) -> None:
        """
        A value heavier than the capacity is not remembered, and costs no other value.
        """
        memo: FileMemo[str] = FileMemo(10)
        memo.remember("/a", _stamp(1), "a", 10)
        memo.remember("/b", _stamp(2), "b", 11)
        self.assertIsNone(memo.get("/b", _stamp(2)))
        self.assertEqual(memo.get("/a", _stamp(1)), "a")

    def test_forgetAndClear(self) -> None:
        """
        L{FileMemo.forget} forgets one path, L{FileMemo.clear} all, and their weight with them.
        """
        memo: FileMemo[str] = FileMemo(10)
        memo.remember("/a", _stamp(1), "a", 5)
        memo.remember("/b", _stamp(2), "b", 5)
        memo.forget("/a")
        memo.forget("/missing")
        self.assertIsNone(memo.get("/a", _stamp(1)))
        memo.remember("/c", _stamp(3), "c", 5)
        self.assertEqual(memo.get("/b", _stamp(2)), "b")
        memo.clear()
        self.assertIsNone(memo.get("/b", _stamp(2)))
        memo.remember("/d", _stamp(4), "d", 10)
        self.assertEqual(memo.get("/d", _stamp(4)), "d")
