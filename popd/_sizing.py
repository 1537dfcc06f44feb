"""
The sizes of message files as POP3 transmits them (see L{transmittedSize}), read one at a time
or many at once: a first listing of a large Maildir reads every message, and its time is that
of the system calls.

Many at once, the messages are opened a batch at a time: the kernel is asked to read ahead all
the messages of a batch before the first is read, so that messages that are not in the page
cache (a server just restarted, a maildrop not read for a while) are read from the disk many at
a time instead of one after another, and the batch's descriptors are closed by one system call.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from popd._wire import transmittedSize

__all__ = ["READ_FLAGS", "UNREAD", "measure", "measureMany", "openMessage"]

# O_NOFOLLOW: a symbolic link placed in a Maildir must not make popd read (or write over) a file
# the Maildir's owner could not read, when popd runs with more privileges than that owner.
# O_NONBLOCK: a FIFO put in place of a file must not block the server (files ignore the flag).
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

#: What L{measureMany} gives for a message it could not read: L{measure} tells why.
UNREAD = -1

# Reading a message to size it is not an access to it: the access time is left as it was, which
# spares a write of the file's inode at the first reading of each (much of the cost of a first
# listing).  Set to 0 when a file turns out not to be this process's to do so.
_noAccessTime = [getattr(os, "O_NOATIME", 0)]

_CHUNK = 65536
# Messages opened at once by measureMany: the more, the more disk reads under way together
# (50,000 paged-out messages: 0.64 s by 128, 0.52 s by 256, 0.44 s by 512, 3.9 s one by one),
# at the cost of as many descriptors for a moment.
_BATCH = 256
# How much of each message of a batch is read ahead: all of nearly every message, and only the
# start of a large one, whose reading then reads ahead as any sequential reading does, so that
# a batch of large messages does not ask for gigabytes of page cache at once.
_READ_AHEAD = 1 << 20
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
_advise = getattr(os, "posix_fadvise", None)
_WILL_NEED = getattr(os, "POSIX_FADV_WILLNEED", 0)


def openMessage(path: str, directoryFD: int | None = None) -> int:
    """
    Open a message to read it, leaving its access time as it was where this process may.

    @param path: a message file; relative to C{directoryFD} when it is given.
    @return: a descriptor of it.
    @raise OSError: it cannot be opened.
    """
    try:
        return os.open(path, READ_FLAGS | _noAccessTime[0], dir_fd=directoryFD)
    except PermissionError:
        if not _noAccessTime[0]:
            raise
    # O_NOATIME is only for the owner of the file, and privileged processes.
    _noAccessTime[0] = 0
    return os.open(path, READ_FLAGS, dir_fd=directoryFD)


def measure(path: str, directoryFD: int | None = None) -> int:
    """
    @param path: a message file; relative to C{directoryFD} when it is given.
    @return: the size of the message in C{path} as transmitted.
    @raise OSError: it cannot be read.
    """
    fd = openMessage(path, directoryFD)
    try:
        return _sizeOf(fd)
    finally:
        os.close(fd)


def measureMany(names: Sequence[str], directoryFD: int) -> list[int]:
    """
    @param names: message files in the directory C{directoryFD}.
    @return: the size of each message as transmitted, or L{UNREAD} for those that could not be
        opened or read, and for the rest of a batch once the process is out of descriptors.
    """
    sizes: list[int] = []
    for start in range(0, len(names), _BATCH):
        sizes.extend(_measureBatch(names[start : start + _BATCH], directoryFD))
    return sizes


def _measureBatch(names: Sequence[str], directoryFD: int) -> list[int]:
    """
    L{measureMany} for as many messages as may be open at once.
    """
    sizes = [UNREAD] * len(names)
    # The position and descriptor of each message opened.
    opened: list[tuple[int, int]] = []
    try:
        for position, name in enumerate(names):
            try:
                opened.append((position, openMessage(name, directoryFD)))
            except OSError as error:
                if error.errno in _OUT_OF_DESCRIPTORS:
                    # The others would fail the same way: they are left unread.
                    break
        if _advise is not None:
            for _, fd in opened:
                try:
                    _advise(fd, 0, _READ_AHEAD, _WILL_NEED)
                except OSError:
                    # Only a hint: not one for this kind of file.
                    pass
        for position, fd in opened:
            try:
                sizes[position] = _sizeOf(fd)
            except OSError:
                pass
    finally:
        _closeAll([fd for _, fd in opened])
    return sizes


def _sizeOf(fd: int) -> int:
    """
    @return: the size as transmitted of the message open as C{fd}, read from its start.
    @raise OSError: it cannot be read.
    """
    data = os.read(fd, _CHUNK)
    # A shorter read than asked for is the end of a regular file.
    if len(data) == _CHUNK:
        chunks = [data]
        chunks.extend(iter(lambda: os.read(fd, _CHUNK), b""))
        return transmittedSize(chunks)
    # What transmittedSize counts, for a message read in one piece (most are).
    crlf = data.count(b"\r\n") if b"\r" in data else 0
    return len(data) + data.count(b"\n") - crlf + (0 if data.endswith(b"\n") else 2)


def _closeAll(fds: list[int]) -> None:
    """
    Close the descriptors C{fds}, each run of consecutive ones by one system call.  Safe while
    other threads open and close files: no other thread can hold a number that this one holds.

    @param fds: descriptors open in this process, each once.
    """
    fds.sort()
    start = 0
    for end in range(1, len(fds) + 1):
        if end == len(fds) or fds[end] != fds[end - 1] + 1:
            os.closerange(fds[start], fds[end - 1] + 1)
            start = end
