"""
What a process read from, or wrote to, files it keeps, remembered for as long as each file is
unchanged: so that a session does not read and check again what the last one left.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Generic, NamedTuple, TypeVar

__all__ = ["FileMemo", "FileStamp", "fileStamp"]

_V = TypeVar("_V")


class FileStamp(NamedTuple):
    """
    What tells one version of a file from another: a file replaced by renaming another over it
    has another inode (and change time: an inode number may be used again), and a file changed
    in place has other modification and change times.
    """

    device: int
    inode: int
    size: int
    modified: int
    changed: int


def fileStamp(info: os.stat_result) -> FileStamp:
    """
    @return: the stamp of the file that C{info} describes.
    """
    return FileStamp(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class FileMemo(Generic[_V]):
    """
    Values by file path, each one valid while the file has the stamp it had when the value was
    read from it or written to it.  The least recently used are forgotten when the values weigh
    more than the capacity in all.

    A change made in place within the same tick of a coarse file system clock, and leaving the
    size as it was, is not seen: only use this for files that the process replaces whole, and
    for values that stay right for the file they were taken from whatever happens to it later.
    """

    def __init__(self, capacity: int) -> None:
        """
        @param capacity: the most that the values remembered may weigh in all.
        """
        self._capacity = capacity
        self._weight = 0
        self._entries: OrderedDict[str, tuple[FileStamp, _V, int]] = OrderedDict()

    def get(self, path: str, stamp: FileStamp) -> _V | None:
        """
        @return: the value remembered for the file at C{path}, if it still has C{stamp}; else
            L{None}, and the value is forgotten.
        """
        entry = self._entries.get(path)
        if entry is None:
            return None
        if entry[0] != stamp:
            self.forget(path)
            return None
        self._entries.move_to_end(path)
        return entry[1]

    def remember(self, path: str, stamp: FileStamp, value: _V, weight: int = 1) -> None:
        """
        Remember C{value} for the file at C{path}, which has C{stamp}, unless it weighs more
        than the capacity; forget the least recently used values that no longer fit.
        """
        self.forget(path)
        if weight > self._capacity:
            return
        self._entries[path] = (stamp, value, weight)
        self._weight += weight
        while self._weight > self._capacity:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self._weight -= dropped

    def forget(self, path: str) -> None:
        """
        Forget the value remembered for C{path}, if any.
        """
        entry = self._entries.pop(path, None)
        if entry is not None:
            self._weight -= entry[2]

    def clear(self) -> None:
        """
        Forget everything.
        """
        self._entries.clear()
        self._weight = 0
