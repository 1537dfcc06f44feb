"""
A Maildir store: the L{IMaildrop} of a Maildir on local or NFS disk, and a realm that opens one
per user.

A Maildir is shared with other agents: the MTA delivers into C{new/} while a session is open, and
IMAP servers rename files to add flags or move them from C{new/} to C{cur/}.  A message is
therefore identified by its I{base name}, the file name before the first C{:}, which no agent
changes for the life of the message.  popd itself renames a message it retrieved, as Dovecot does:
it moves it to C{cur/} and adds the C{S} (seen) flag.

A message's UIDL is derived from its base name (see L{popd._index.ownUidl}), unless the Maildir
was migrated from Dovecot or Courier with the option to keep the UIDLs they handed out (see
L{Maildir}): those are read once from C{dovecot-uidlist} or C{courierpop3dsizelist} and kept in
popd's own index.

What popd learns of a Maildir is kept in two files in its root (see L{popd._index}): the index
C{popd-index}, and the listing cache C{popd-listing}, which lets a session whose C{new/} and
C{cur/} have not changed since the last listing reuse it without reading either directory.
"""

from __future__ import annotations

import errno
import fcntl
import math
import operator
import os
import re
import stat
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from hashlib import sha256
from itertools import filterfalse, islice, repeat
from operator import itemgetter, methodcaller
from typing import TypeVar, cast
from urllib.parse import unquote

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger, LogLevel
from zope.interface import Interface, implementer

from popd import uidlmigration
from popd._filememo import FileMemo, fileStamp
from popd._forkmap import ForkedMap, forkMap
from popd._index import (
    INDEX_FILE,
    LISTING_FILE,
    NO_STAMP,
    SIZE_SAVED,
    UIDL_SAVED,
    Entry,
    ListingCache,
    Rows,
    Stamp,
    formatIndex,
    formatIndexColumns,
    formatListing,
    listingDigest,
    ownUidls,
    parseIndex,
    readListing,
)
from popd._sizing import READ_FLAGS as _READ_FLAGS
from popd._sizing import UNREAD, measure, measureMany
from popd.errors import MaildropInUse, MessageGone, TemporaryFailure
from popd.interfaces import IMaildrop, IMessage, Listing, MessageInfo

__all__ = [
    "Maildir",
    "MaildirRealm",
    "expandTemplate",
    "openMaildir",
    "validUsername",
]

_log = Logger()

_T = TypeVar("_T")

# A placeholder and the character after its %, empty when the % ends the template.
_PLACEHOLDER = re.compile(r"%(.?)", re.DOTALL)
_PLACEHOLDERS = frozenset("%und")

_SUBDIRECTORIES = ("new", "cur", "tmp")
_LOCK_FILE = "popd.lock"
_INDEX_TEMPORARY = INDEX_FILE + ".tmp"
_LISTING_TEMPORARY = LISTING_FILE + ".tmp"
# Retrieval times are saved as whole seconds of at most 20 digits, as sizes are.
_MAX_TIME = 10**20
_CHUNK = 65536
# The listing cache is only written for listings of this many messages or more: reading the
# directories of a smaller Maildir costs less than writing the cache at every session that finds
# new mail.
_CACHE_MINIMUM = 500

# Messages to size at once from which a child process sizes half of them on another core.
_FORK_MINIMUM = 4096
# The part of the messages of a first listing that the child sizes (see Maildir._prefetch): the
# larger, since this process has the rest of the listing to make meanwhile.
_CHILD_SHARE = 0.6

# What this process last read from or wrote to the indexes and listing caches, while they are
# unchanged: a session that finds them as the last one left them reads neither.  The digests of
# the indexes, by Maildir; and the listings of the largest Maildirs used last, by message count
# (about 100 octets a message).
_INDEX_DIGESTS: FileMemo[bytes] = FileMemo(10_000)
_LISTINGS: FileMemo[tuple[ListingCache, bytes]] = FileMemo(200_000)
# A directory whose modification or change time is less than this before the file system's
# clock when it is read may change again within the same tick of that clock without its times
# changing: a listing of it is not reused.  Dovecot's Maildir code waits the same second.
_SAME_TICK_NS = 1_000_000_000

_DOVECOT_SIZE = re.compile(r",W=([0-9]{1,20})(?:,|$)")
_DIGEST_LENGTH = 40
# The information part of a Maildir name that popd can add the seen flag to: version 2 and
# single-letter flags, as Maildir, Courier and Dovecot write them.
_FLAGS = re.compile(r"2,([A-Za-z]*)")
_SEEN = "S"
# Whether a file name is a dot-file's; a file name's base name, separator and information.
_HIDDEN = methodcaller("startswith", ".")
_PARTITION = methodcaller("partition", ":")
# A base name's delivery time, if conventional, the dot and the rest.
_PARTITION_DOT = methodcaller("partition", ".")
# The delivery time that starts a conventional name, in names joined by line feeds.
_DELIVERY_TIMES = re.compile(r"^([0-9]+)\.", re.MULTILINE)
_NEW = ord("n")
_CUR = ord("c")
_PLACES = {"new": _NEW, "cur": _CUR}
_NO_ROWS = Rows([], [], b"", [], [], [], [], b"")
# The flags of messages whose UIDL is not saved.
_WITHOUT_UIDL = bytes((0, SIZE_SAVED))

# O_NONBLOCK: opening a FIFO put in place of a file to write fails (ENXIO) instead of blocking.
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

# UIDL migration (R22): the files in the Maildir root where the POP3 servers popd replaces kept
# the UIDLs they handed out.  popd only ever reads them, and at most this much of one: far more
# than the file of any real maildrop needs (some 100 octets a message).
_LEGACY_MAX_SIZE = 64 * 1024 * 1024


def _checkTemplate(template: str) -> None:
    """
    @raise ValueError: C{template} has a placeholder other than C{%u}, C{%n}, C{%d} and C{%%}.
    """
    for match in _PLACEHOLDER.finditer(template):
        if match.group(1) not in _PLACEHOLDERS:
            raise ValueError(
                f"Unknown placeholder {match.group(0)!r} in Maildir template {template!r}:"
                " use %u, %n, %d or %%"
            )


def _fixedPrefix(template: str) -> str:
    """
    @return: the path that C{template} names before its first user placeholder, C{%%} expanded.
    """
    for match in _PLACEHOLDER.finditer(template):
        if match.group(1) != "%":
            return template[: match.start()].replace("%%", "%")
    return template.replace("%%", "%")


def expandTemplate(template: str, user: str) -> str:
    """
    Fill a Maildir path template for one user.

    C{%u} is the full user name, C{%n} its local part (before the last C{@}; the whole name when
    there is none), C{%d} its domain (after the last C{@}; empty when there is none) and C{%%} a
    literal C{%}.  The expansion is a single pass: a C{%} in the user name is copied, never
    interpreted.  The user name is not checked here: see L{validUsername}.

    @raise ValueError: C{template} has any other placeholder.
    """
    _checkTemplate(template)
    local, at, domain = user.rpartition("@")
    if not at:
        local, domain = user, ""
    values = {"%": "%", "u": user, "n": local, "d": domain}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _forbiddenCharacter(character: str) -> bool:
    """
    Path separators, and every Unicode control, format, surrogate, private-use, unassigned,
    separator or space character: none has a place in a user name, several can forge log lines
    or hide what a name really is.
    """
    return character in "/\\" or unicodedata.category(character)[0] in "CZ"


def validUsername(name: str) -> bool:
    """
    Whether C{name} may become part of a Maildir path.

    A valid name is 1 to 255 octets of UTF-8 (a file name's limit), has at most one C{@}, no
    path separator, control, format or white space character, and neither its local part nor
    its domain is empty or starts with C{.} (which also excludes C{.} and C{..}).  Such a name
    can fill any path component without naming a directory outside the Maildir root or a
    hidden file.
    """
    try:
        octets = name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if not 0 < len(octets) <= 255 or name.count("@") > 1:
        return False
    if any(_forbiddenCharacter(character) for character in name):
        return False
    local, at, domain = name.rpartition("@")
    parts = (local, domain) if at else (name,)
    if not all(part and not part.startswith(".") for part in parts):
        return False
    # Nor may a program that percent-decodes or NFKC-normalises the name find a path in it.
    return all(
        variant == name or validUsername(variant)
        for variant in (unquote(name, errors="replace"), unicodedata.normalize("NFKC", name))
    )


def _confined(path: str, prefix: str) -> bool:
    """
    Whether C{path}, normalised, names something strictly below the directory that C{prefix}
    names or begins a name in, and, in that directory, an entry that starts as C{prefix} does.
    """
    root = os.path.abspath(os.path.dirname(prefix))
    normal = os.path.abspath(path)
    return (
        normal != root
        and os.path.commonpath([root, normal]) == root
        and os.path.relpath(normal, root).startswith(os.path.basename(prefix))
    )


@implementer(IRealm)
class MaildirRealm:
    """
    A realm whose avatars are the users' Maildirs, opened and locked for one session.

    Users are found with a path template (see L{expandTemplate}), as in
    C{/var/mail/%d/%n/Maildir}.  A Maildir that does not exist yet is created empty, as Dovecot
    does, so that a user who never received mail can log in.
    """

    def __init__(self, template: str, uidlMigration: str | None = None) -> None:
        """
        @param template: the path of a user's Maildir, with placeholders.
        @param uidlMigration: C{"dovecot"}, C{"dovecot:FORMAT"} or C{"courier"} to keep the
            UIDLs that this server gave out on the same Maildirs (R22; see L{Maildir} and
            L{popd.uidlmigration}), or L{None}.
        @raise ValueError: C{template} has an unknown placeholder, or C{uidlMigration} is not
            one of those values; raised here so that a bad configuration is reported before the
            server listens.
        """
        _checkTemplate(template)
        uidlmigration.checkSource(uidlMigration)
        self._template = template
        self._prefix = _fixedPrefix(template)
        self._uidlMigration = uidlMigration

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: type[Interface]
    ) -> Deferred[tuple[type[Interface], object, Callable[[], None]]]:
        """
        Open and lock the Maildir of C{avatarId}.

        @param avatarId: the user name, UTF-8 encoded.
        @return: a L{Deferred} firing with C{(IMaildrop, maildrop, logout)}; C{logout} releases
            the lock.  It fails with L{NotImplementedError} when C{IMaildrop} is not asked for,
            L{UnauthorizedLogin} when the user name is not valid (see L{validUsername}),
            L{MaildropInUse} when another session holds the lock and L{TemporaryFailure} when
            the Maildir cannot be created or locked.
        """
        if IMaildrop not in interfaces:
            return fail(NotImplementedError("MaildirRealm only provides IMaildrop"))
        return maybeDeferred(self._login, avatarId)

    def _login(
        self, avatarId: bytes | tuple[()]
    ) -> tuple[type[Interface], object, Callable[[], None]]:
        """
        Find, open and lock a user's Maildir; see L{requestAvatar}.
        """
        maildrop = openMaildir(self._pathFor(avatarId), uidlMigration=self._uidlMigration)
        return (IMaildrop, maildrop, maildrop.logout)

    def _pathFor(self, avatarId: bytes | tuple[()]) -> str:
        """
        @return: the path of the Maildir of C{avatarId}.
        @raise UnauthorizedLogin: C{avatarId} is anonymous or not a valid user name.
        """
        if not isinstance(avatarId, bytes):
            raise UnauthorizedLogin()
        try:
            user = avatarId.decode("utf-8")
        except UnicodeDecodeError:
            raise UnauthorizedLogin() from None
        if not validUsername(user):
            raise UnauthorizedLogin()
        path = expandTemplate(self._template, user)
        # validUsername makes this impossible; it is checked anyway because a mistake there
        # would hand out other users' mail.
        if not _confined(path, self._prefix):
            _log.error(
                "Refused {user!r}: its Maildir {path!r} is outside {prefix!r}",
                user=user,
                path=path,
                prefix=self._prefix,
            )
            raise UnauthorizedLogin()
        return path


# The real paths of the Maildirs this process has locked.  POSIX locks belong to the process and
# are all released when it closes any descriptor of the locked file, so a second session of this
# process must be refused before it opens the lock file, not by the kernel.
_lockedMaildirs: set[str] = set()


def openMaildir(
    path: str, clock: Callable[[], float] = time.time, uidlMigration: str | None = None
) -> Maildir:
    """
    Open a Maildir for one session, creating it when it does not exist, and lock it.

    The lock is an exclusive C{lockf} lock on the file C{popd.lock} in the Maildir: it excludes
    other popd sessions of this process, of other processes and, over NFS, of other hosts, and
    the kernel releases it when the process dies.

    @param clock: gives the current POSIX time, recorded when messages are first retrieved.
    @param uidlMigration: C{"dovecot"}, C{"dovecot:FORMAT"} or C{"courier"} to keep the UIDLs
        that this server gave out (see L{Maildir}), or L{None}.
    @raise ValueError: C{uidlMigration} is not one of those values.
    @raise MaildropInUse: another session holds the lock.
    @raise TemporaryFailure: the Maildir could not be created or the lock file opened (the
        cause is logged).
    """
    uidlmigration.checkSource(uidlMigration)
    try:
        _create(path)
        realPath = os.path.realpath(path)
        if realPath in _lockedMaildirs:
            raise MaildropInUse()
        lockFD = _lock(realPath)
    except OSError:
        _log.failure("Could not open the Maildir {path!r}", path=path, level=LogLevel.error)
        raise TemporaryFailure() from None
    _lockedMaildirs.add(realPath)
    return Maildir(realPath, lockFD, clock, uidlMigration)


def _create(path: str) -> None:
    """
    Create the Maildir C{path} and its C{new}, C{cur} and C{tmp} directories when they do not
    exist, private to their owner.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    for subdirectory in _SUBDIRECTORIES:
        try:
            os.mkdir(os.path.join(path, subdirectory), 0o700)
        except FileExistsError:
            pass


def _lock(path: str) -> int:
    """
    Lock the Maildir C{path}.

    @return: the descriptor of its lock file, whose closing releases the lock.
    @raise MaildropInUse: another process holds the lock.
    """
    lockFD = os.open(
        os.path.join(path, _LOCK_FILE),
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        fcntl.lockf(lockFD, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        # Closing is safe: no other session of this process has this file open.
        os.close(lockFD)
        if e.errno in (errno.EACCES, errno.EAGAIN):
            raise MaildropInUse() from None
        raise
    return lockFD


def _dovecotSize(baseName: str) -> int | None:
    """
    @return: the CRLF size that Dovecot records in a file name as C{,W=<size>}, or L{None}.
    """
    if ",W=" not in baseName:
        return None
    match = _DOVECOT_SIZE.search(baseName)
    return None if match is None else int(match.group(1))


def _alternativeUidl(baseName: str, attempt: int) -> bytes:
    """
    A replacement for the UIDL derived from a base name, for the rare message whose UIDL
    another message already has (R22): 160 bits of the SHA-256 of the base name and
    C{attempt}, in hex.  Deterministic; it is saved in the index anyway, to stay stable.
    """
    digest = sha256(os.fsencode(baseName) + b"\0%d" % (attempt,)).hexdigest()
    return digest[:_DIGEST_LENGTH].encode("ascii")


# What a listing leaves to save, the arguments of Maildir._saveListing: the listing cache to
# save, the digest of the cache file read, the digest of the index read, whether the index is
# to be written.  Sessions keep it until they end: most keep this one, or nothing.
_Unsaved = tuple[ListingCache | None, bytes | None, bytes | None, bool]
_INDEX_ONLY: _Unsaved = (None, None, None, True)


def _toSave(
    saved: ListingCache,
    cache: ListingCache | None,
    cached: bytes | None,
    digest: bytes | None,
    indexChanged: bool,
) -> _Unsaved | None:
    """
    @param saved: a listing, as the listing cache saves it.
    @param cache: the cache that was read, if any; C{cached}, the digest of its file.
    @param digest: the digest of the index that was read.
    @param indexChanged: whether the listing computed sizes or chose UIDLs.
    @return: what the listing leaves to save, or L{None} when nothing.
    """
    if len(saved.rows) < _CACHE_MINIMUM:
        # Too few messages to be worth a listing cache: one left from before is removed.
        if cached is None:
            return _INDEX_ONLY if indexChanged else None
        return (None, cached, digest, indexChanged)
    if saved is cache and not indexChanged:
        return None
    return (saved, cached, digest, indexChanged)


def _measureWith(
    prefetched: tuple[ForkedMap[str], list[str], int], names: list[str], directoryFD: int
) -> list[int]:
    """
    L{measureMany} of the messages C{names} in C{directoryFD}: those that a child process is
    sizing (see L{Maildir._prefetch}) by it, the others here first.
    """
    forked, share, theirFD = prefetched
    theirs = set(share)
    try:
        mine = [name for name in names if name not in theirs]
        try:
            sizes = dict(zip(mine, measureMany(mine, directoryFD), strict=True))
        except BaseException:
            forked.cancel()
            raise
        sizes.update(zip(share, forked.results(), strict=True))
    finally:
        os.close(theirFD)
    return [sizes[name] for name in names]


def _readFile(path: str) -> bytes:
    """
    @return: the content of the regular file C{path}, never following a symbolic link.
    @raise OSError: it cannot be read, or is not a regular file (C{EINVAL}).
    """
    fd = os.open(path, _READ_FLAGS)
    try:
        return _readOpened(fd, path)
    finally:
        os.close(fd)


def _readOpened(fd: int, path: str) -> bytes:
    """
    @return: the content of the file open as C{fd}, which must be the regular file C{path}.
    @raise OSError: it cannot be read, or is not a regular file (C{EINVAL}).
    """
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", path)
    # One read gets all of a file that did not grow; the next one confirms the end.
    wanted = max(info.st_size + 1, _CHUNK)
    return b"".join(iter(lambda: os.read(fd, wanted), b""))


def _pread(fd: int, length: int, offset: int) -> bytes:
    """
    @return: the C{length} octets at C{offset} in the file C{fd}, fewer only at its end.
    """
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    chunks = [data]
    while length > len(data):
        length -= len(data)
        offset += len(data)
        data = os.pread(fd, length, offset)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _directoryStamp(path: str) -> Stamp:
    """
    @return: the stamp of the directory C{path}, or L{NO_STAMP} when it cannot be had.  It is
        read from a descriptor opened for the purpose: on NFS, opening revalidates the
        attributes (close-to-open consistency), as the opening that a scan starts with does,
        where C{stat} may answer from the attribute cache.
    """
    try:
        fd = os.open(path, _DIRECTORY_FLAGS)
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
    except OSError:
        return NO_STAMP
    return Stamp(info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


def _fileSystemTime(lockFD: int) -> int | None:
    """
    Read the clock that stamps the Maildir's directories, by setting the modification time of
    the Maildir's lock file to now: its new change time.  This is the server's clock on NFS, so
    comparing it with the directories' times is immune to a skew between the clocks of client
    and server.

    @param lockFD: a descriptor of the lock file, open for writing.
    @return: the time in nanoseconds, or L{None} when the time cannot be set.
    """
    try:
        os.utime(lockFD)
        return os.fstat(lockFD).st_ctime_ns
    except OSError:
        return None


def _hostTime() -> int:
    """
    @return: the time of this host's clock, in nanoseconds.
    """
    return time.time_ns()


def _seenName(fileName: str) -> str | None:
    """
    @return: the name of C{fileName} in C{cur/} with the C{S} flag added to its flags, which
        are kept and sorted; L{None} when its information part is not one this can extend.
    """
    baseName, colon, information = fileName.partition(":")
    flags = ""
    if colon:
        match = _FLAGS.fullmatch(information)
        if match is None:
            return None
        flags = match.group(1)
    return f"{baseName}:2,{''.join(sorted(set(flags) | {_SEEN}))}"


def _wholeSeconds(now: float) -> int | None:
    """
    @return: C{now} rounded down to whole seconds, or L{None} when it is not a time an index
        can save.
    """
    if not math.isfinite(now) or not 0 <= now < _MAX_TIME:
        return None
    return math.floor(now)


def _fsyncDirectory(path: str) -> None:
    """
    Make the renames and removals done in the directory C{path} durable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _concatenate(first: Rows, second: Rows) -> Rows:
    """
    @return: the rows of C{first} then those of C{second}.
    """
    if not len(first):
        return second
    if not len(second):
        return first
    return Rows(
        first.bases + second.bases,
        first.infos + second.infos,
        first.places + second.places,
        first.delivered + second.delivered,
        first.sizes + second.sizes,
        first.retrieved + second.retrieved,
        first.uidls + second.uidls,
        first.flags + second.flags,
    )


def _sortedRows(rows: Rows) -> Rows:
    """
    @return: C{rows} in listing order: by delivery time, then base name.
    """
    order = sorted(range(len(rows)), key=rows.bases.__getitem__)
    order.sort(key=rows.delivered.__getitem__)
    return rows.take(order)


def _cached(cache: ListingCache, subdirectory: str) -> tuple[Stamp, bool]:
    """
    @return: the stamp and cleanliness that C{cache} saved for C{subdirectory}.
    """
    if subdirectory == "new":
        return cache.new, cache.newClean
    return cache.cur, cache.curClean


def _settled(stamp: Stamp, now: int | None) -> bool:
    """
    @return: whether a directory with C{stamp}, read after the file system's clock said
        C{now}, has a listing that may be reused while it keeps that stamp: it had last
        changed at least L{_SAME_TICK_NS} before.
    """
    return (
        now is not None
        and stamp != NO_STAMP
        and max(stamp.modified, stamp.changed) < now - _SAME_TICK_NS
    )


def _baseName(fileName: str) -> str:
    """
    @return: the part of a Maildir file name that no agent changes: flags follow the C{:}.
    """
    return fileName.partition(":")[0]


def _located(names: Iterable[str], subdirectory: str) -> dict[str, tuple[str, str]]:
    """
    @return: the messages of C{subdirectory} whose file names are C{names}, by base name: the
        subdirectory, and what follows the base name in the file name.
    """
    names = list(names)
    if ":" not in "".join(names):
        # No flags (as in new/): each name is a base name.
        return dict.fromkeys(names, (subdirectory, ""))
    parts = list(map(_PARTITION, names))
    return dict(
        zip(
            map(itemgetter(0), parts),
            zip(
                repeat(subdirectory),
                map(operator.add, map(itemgetter(1), parts), map(itemgetter(2), parts)),
            ),
            strict=True,
        )
    )


def _moved(rows: Rows, moved: dict[int, tuple[str, str]]) -> Rows:
    """
    @return: C{rows}, with the messages at the positions of C{moved} where it says.
    """
    if not moved:
        return rows
    places = bytearray(rows.places)
    infos = list(rows.infos)
    for position, (subdirectory, info) in moved.items():
        places[position] = _PLACES[subdirectory]
        infos[position] = info
    return Rows(
        rows.bases,
        infos,
        bytes(places),
        rows.delivered,
        rows.sizes,
        rows.retrieved,
        rows.uidls,
        rows.flags,
    )


def _picked(positions: Sequence[int], *columns: Sequence[_T]) -> list[list[_T]]:
    """
    @return: the items at C{positions} of each of C{columns}.
    """
    if len(positions) == 1:
        return [[column[positions[0]]] for column in columns]
    if not positions:
        return [[] for _ in columns]
    pick = itemgetter(*positions)
    return [list(pick(column)) for column in columns]


def _entriesOf(rows: Rows) -> dict[str, Entry]:
    """
    @return: what the index holds of C{rows}, by base name.
    """
    return {
        baseName: Entry(
            size if flags & SIZE_SAVED else None, retrievedAt, uidl if flags & UIDL_SAVED else None
        )
        for baseName, size, retrievedAt, uidl, flags in zip(
            rows.bases, rows.sizes, rows.retrieved, rows.uidls, rows.flags, strict=True
        )
        if flags or retrievedAt is not None
    }


def _indexOf(rows: Rows) -> bytes:
    """
    @return: the content of the index that holds what C{rows} save: see L{_entriesOf}.
    """
    count = len(rows)
    flags = rows.flags
    sizes: list[int | None] = list(rows.sizes)
    uidls: list[bytes | None] = [None] * count
    if flags.count(SIZE_SAVED) != count:
        sizes = [
            size if flag & SIZE_SAVED else None for size, flag in zip(sizes, flags, strict=True)
        ]
        if flags.translate(None, _WITHOUT_UIDL):
            uidls = [
                uidl if flag & UIDL_SAVED else None
                for uidl, flag in zip(rows.uidls, flags, strict=True)
            ]
    bases = rows.bases
    if all(map(operator.lt, bases, bases[1:])):
        # Already in order (as when all were delivered in the same second).
        return formatIndexColumns(bases, sizes, rows.retrieved, uidls)
    order = sorted(range(count), key=bases.__getitem__)
    pick = itemgetter(*order)
    return formatIndexColumns(pick(rows.bases), pick(sizes), pick(rows.retrieved), pick(uidls))


class _ScanFailed(Exception):
    """
    A scan to find messages again failed.

    @ivar indices: the messages that were to be found.
    """

    def __init__(self, indices: list[int]) -> None:
        super().__init__(indices)
        self.indices = indices


@dataclass(slots=True)
class _Message:
    """
    Where a listed message was last seen.

    @ivar baseName: the file name before the first C{:}; it never changes.
    @ivar subdirectory: C{"new"} or C{"cur"}.
    @ivar fileName: the whole file name, flags included.
    """

    baseName: str
    subdirectory: str
    fileName: str


@implementer(IMessage)
class _MaildirMessage:
    """
    A message file opened for reading.
    """

    def __init__(self, fd: int) -> None:
        """
        @param fd: a descriptor of the file, owned by this object from now on.
        """
        self._fd: int | None = fd

    def read(self, size: int) -> Deferred[bytes]:
        """
        Read up to C{size} octets of the file.

        @return: a L{Deferred} firing with them (C{b""} at the end), or failing with
            L{TemporaryFailure} when the disk fails (the cause is logged).
        @raise ValueError: the message was closed.
        """
        if self._fd is None:
            raise ValueError("read from a closed message")
        try:
            return succeed(os.read(self._fd, size))
        except OSError:
            _log.failure("Could not read a message", level=LogLevel.error)
            return fail(TemporaryFailure())

    def close(self) -> None:
        """
        Close the file.  Idempotent.
        """
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                _log.failure("Could not close a message", level=LogLevel.warn)


@implementer(IMaildrop)
class Maildir:
    """
    A Maildir opened and locked for one POP3 session: see L{openMaildir}.

    Messages are those in C{new/} and C{cur/}, in order of delivery time, then of base name;
    C{tmp/}, dot-files, directories and symbolic links are not messages.  The listing is taken
    once: mail delivered later waits for the next session.  The delivery time is the number
    that starts a conventional name, else the modification time of the file when a listing
    first found it.

    Sizes come from Dovecot's C{,W=} in the file name when it is there; otherwise they are
    computed once by reading the message and kept in the file C{popd-index} of the Maildir, so
    that a session only reads the bodies of the messages delivered since the last one.  Many
    messages are sized a batch at a time (see L{popd._sizing}), by this process and a forked
    child together (see L{_prefetch}), and sizes computed at login are saved when the session
    ends, at its commit or its close, not while the client waits for its answer (see
    L{_takeListing}).  The same index keeps when each message was first retrieved by a session
    that committed, for the EXPIRE policy (RFC 2449 section 6.7); it is keyed by base name, so it
    survives other agents' renames, and its loss only makes messages look never retrieved.

    A message's UIDL is derived from its base name (see L{popd._index.ownUidl}), except in a
    Maildir migrated from Dovecot or Courier (R22).  With C{uidlMigration}, a listing that
    finds messages the index has no UIDL for reads the legacy file of that server in the
    Maildir root, C{dovecot-uidlist} (see L{_parseDovecot}) or C{courierpop3dsizelist} (see
    L{_parseCourier}), matching messages by base name.  A message found there keeps the UIDL
    that server gave it; the others (delivered since) get popd's own.  Either choice is saved
    in the index at once, and from then on the index alone decides: the legacy file is not read
    again for that message, and may be removed or rewritten.  UIDLs saved in the index are
    served with or without C{uidlMigration}.  The legacy file is only read, never written.  A
    missing one lists nothing: the messages get popd's own UIDLs, saved as any choice.  One that
    cannot be used (unreadable, not a regular file, over 64 MiB or malformed) is ignored with a
    warning, once a session: a login never fails because of it, the messages get popd's own
    UIDLs in that session, and nothing is saved, so that a later session can still use the file
    once repaired.

    UIDLs stay unique.  A legacy UIDL is not used, and the message gets popd's own, when it is
    already saved in the index for another message, when it is popd's own UIDL of another
    listed message, or when an earlier-listed message (in listing order) got it first.  A
    message whose own UIDL another message already has in the index gets a replacement (see
    L{_alternativeUidl}), saved too.

    Each listing is also saved whole in the listing cache C{popd-listing} (see
    L{popd._index.parseListing}), with the digest of the index it agrees with and the stamps
    of C{new/} and C{cur/} taken before they were read (inode, modification and change times:
    creating, renaming or removing a file in a directory changes them).  A session whose index
    is unchanged takes the messages of a directory whose stamp is unchanged from the cache
    instead of reading the directory; when neither directory changed, it reads neither and the
    saved listing is its listing.  Only a directory whose times were at least a second before
    the file system's clock (see L{_fileSystemTime}) when it was read is ever taken from the
    cache: a change in the same tick of a coarse clock would not have changed them.  The cache
    is rewritten when the listing changes, and not synced: it is checked when read, and a
    damaged or missing one only costs reading the directories.  What this process last read
    from or wrote to the index and the cache is remembered while their files keep their stamps
    (see L{popd._filememo}): the next session of the same Maildir reads neither.

    @ivar path: the real path of the Maildir.
    """

    # A Maildir lives as long as its session: slots keep an idle one small.
    __slots__ = (
        "path",
        "_lockFD",
        "_clock",
        "_uidlMigration",
        "_legacyRead",
        "_legacy",
        "_listing",
        "_rows",
        "_located",
        "_entries",
        "_unsaved",
        "_prefetched",
    )

    def __init__(
        self,
        path: str,
        lockFD: int,
        clock: Callable[[], float] = time.time,
        uidlMigration: str | None = None,
    ) -> None:
        """
        @param path: the real path of the Maildir, locked by this process.
        @param lockFD: the descriptor of its lock file, owned by this object from now on.
        @param clock: gives the current POSIX time, recorded when messages are first retrieved.
        @param uidlMigration: C{"dovecot"}, C{"dovecot:FORMAT"} or C{"courier"}: the server
            whose UIDLs to keep (see L{popd.uidlmigration}); or L{None}.
        @raise ValueError: C{uidlMigration} is not one of those values.
        """
        uidlmigration.checkSource(uidlMigration)
        self.path = path
        self._lockFD: int | None = lockFD
        self._clock = clock
        self._uidlMigration = uidlMigration
        # The UIDLs of the legacy file by base name, once read; None when it cannot be used.
        self._legacyRead = False
        self._legacy: dict[str, bytes] | None = None
        self._listing: Listing | None = None
        # The listed messages, and where each one looked for since was found.
        self._rows = _NO_ROWS
        self._located: dict[int, _Message] = {}
        # What the index should hold for the listed messages, by base name, once needed.
        self._entries: dict[str, Entry] | None = None
        # What the listing learned and is not saved yet: see _toSave.
        self._unsaved: _Unsaved | None = None
        # Sizes of messages in new/ that a child process is computing, while a first listing
        # is made: the map, its file names, and the descriptor of new/ it uses.
        self._prefetched: tuple[ForkedMap[str], list[str], int] | None = None

    def listing(self) -> Deferred[Sequence[MessageInfo]]:
        """
        List the Maildir; only the first call reads it, later ones return the same listing.

        @return: a L{Deferred} firing with the size and UIDL of each message, or failing with
            L{TemporaryFailure} when the Maildir cannot be read (the cause is logged).
        """
        if self._listing is None:
            try:
                self._listing = self._takeListing()
            except OSError:
                _log.failure("Could not list {path!r}", path=self.path, level=LogLevel.error)
                return fail(TemporaryFailure())
        return succeed(self._listing)

    def _takeListing(self) -> Listing:
        """
        Take the listing, from the listing cache or by reading what changed since it was saved,
        remember the messages in L{_rows}, and save the sizes that had to be computed, the
        UIDLs that were chosen and the listing.

        @return: the listing.

        @raise OSError: the Maildir cannot be read.
        """
        index, digest = self._readIndex()
        cache, cached = self._readCache() if digest is not None else (None, None)
        if cache is not None and cache.index != digest:
            # Saved with another index: its sizes, times and UIDLs may not be the index's.
            cache = None
        stamps = (
            _directoryStamp(os.path.join(self.path, "new")),
            _directoryStamp(os.path.join(self.path, "cur")),
        )
        saved: ListingCache
        if (
            cache is not None
            and cache.newClean
            and cache.curClean
            and (cache.new, cache.cur) == stamps
            and NO_STAMP not in stamps
        ):
            # Neither directory changed: the saved listing is the listing.
            saved, computed = cache, False
        else:
            try:
                saved, computed = self._scanListing(
                    cache, partial(self._indexContent, index, digest), digest or b"", stamps
                )
            finally:
                self._dropPrefetched()
        rows = saved.rows
        chosen = self._chooseUidls(rows)
        self._rows = rows
        # Sizes are the same when computed again: they are saved when the session ends (at the
        # commit, or at the close without one), not while the client waits to begin.
        self._unsaved = _toSave(saved, cache, cached, digest, computed or chosen)
        if chosen:
            # UIDLs chosen are saved before they are served (R22).
            self._saveUnsaved()
        retrieved = rows.retrieved
        return Listing(
            rows.sizes, rows.uidls, None if retrieved.count(None) == len(rows) else retrieved
        )

    def _saveListing(
        self,
        saved: ListingCache | None,
        cached: bytes | None,
        digest: bytes | None,
        indexChanged: bool,
    ) -> None:
        """
        Save what the listing learned (see L{_toSave}): the index when it computed sizes or
        chose UIDLs; then, unless the index could not be read or written, the listing cache
        C{saved}, or with L{None} the removal of the cache whose file has the digest C{cached}
        if there is one.

        @param digest: the digest of the index that was read.
        """
        if indexChanged:
            digest = self._writeIndex(_indexOf(self._rows))
            if saved is not None:
                # The index written has exactly the entries of the listed messages.
                saved = replace(saved, index=digest or b"", orphans=frozenset())
        if digest is None:
            return
        if saved is not None:
            self._saveCache(saved, cached)
        elif cached is not None:
            self._removeCache()

    def _scanListing(
        self,
        cache: ListingCache | None,
        index: Callable[[], bytes | None],
        digest: bytes,
        initial: tuple[Stamp, Stamp] = (NO_STAMP, NO_STAMP),
    ) -> tuple[ListingCache, bool]:
        """
        Take the listing by reading the directories that changed since C{cache} was saved (all
        of them without a cache), and the index when the cache does not say enough.

        What a directory read holds is compared with what the cache has of it, by file name:
        only the names that appeared are looked at one by one (new messages, and messages
        another agent renamed, to add flags or to move them from C{new/} to C{cur/}).

        C{new/} is read first: a message that another agent moves to C{cur/} meanwhile is found
        in C{cur/}, or twice, and is kept once, in C{cur/}; reading in the other order could
        miss it.  For the same reason, C{cur/} is stamped, to decide whether to read it, only
        once C{new/} was read.

        @param cache: a cache saved with the current index, or L{None}.
        @param index: reads the content of the index; L{None} when there is none.
        @param digest: the digest of the index, as the cache saves it.
        @param initial: the stamps of C{new/} and C{cur/} a moment ago.
        @return: the listing, as the listing cache will save it (C{cache} itself when nothing
            changed), and whether sizes were computed.
        @raise OSError: a directory cannot be read.
        """
        rows = _NO_ROWS if cache is None else cache.rows
        # Without a cache or an index, every message found is to be sized.
        first = cache is None and not digest
        now = None
        if any(
            _settled(stamp, _hostTime())
            and (cache is None or _cached(cache, subdirectory) != (stamp, True))
            for subdirectory, stamp in zip(("new", "cur"), initial, strict=True)
        ):
            # A directory to read may have last changed long enough ago.  (The file system
            # stamps with a coarser reading of this host's clock, never ahead of it; on NFS,
            # the server's may be, and then a directory is only wrongly found too recent: not
            # reused, which is never wrong.)  Reading the file system's clock costs a write.
            now = self._fileSystemTime()
        stamps: list[Stamp] = []
        cleans: list[bool] = []
        # The file names in each directory read, and those the cache has of it.
        scanned: dict[str, set[str]] = {}
        cached: dict[str, set[str]] = {}
        for subdirectory in ("new", "cur"):
            stamp = _directoryStamp(os.path.join(self.path, subdirectory))
            if (
                cache is not None
                and stamp != NO_STAMP
                and _cached(cache, subdirectory) == (stamp, True)
            ):
                clean = True
            else:
                fileNames = self._scanNames(subdirectory)
                if first and subdirectory == "new":
                    self._prefetch(fileNames)
                scanned[subdirectory] = set(fileNames)
                bases, infos = rows.of(subdirectory[0])
                cached[subdirectory] = set(map(operator.add, bases, infos))
                clean = _settled(stamp, now)
            stamps.append(stamp)
            cleans.append(clean)
        # Where the messages whose files appeared (or were renamed) are, C{cur/} winning.
        appeared: dict[str, tuple[str, str]] = {}
        # The files of the listing that are gone.
        gone: set[str] = set()
        for subdirectory, names in scanned.items():
            appeared.update(_located(names - cached[subdirectory], subdirectory))
            gone.update(cached[subdirectory] - names)
        # Each cached message found elsewhere; those not found anywhere.
        moved: dict[int, tuple[str, str]] = {}
        removed: set[int] = set()
        if len(rows) and (gone or appeared):
            bases, infos, places = rows.bases, rows.infos, rows.places
            positions = dict(zip(bases, range(len(rows)), strict=True))
            if len(positions) != len(rows):
                _log.warn(
                    "Ignoring the invalid listing cache {path!r}: a name is listed twice",
                    path=os.path.join(self.path, LISTING_FILE),
                )
                return self._scanListing(None, index, digest, initial)
            for baseName, location in list(appeared.items()):
                position = positions.get(baseName)
                if position is None:
                    continue
                del appeared[baseName]
                if bases[position] + infos[position] in gone or (
                    location[0] == "cur" and places[position] == _NEW
                ):
                    moved[position] = location
            for position in map(positions.__getitem__, map(_baseName, gone)):
                if position not in moved:
                    removed.add(position)
        known: dict[str, Entry] = {}
        orphans = set() if cache is None else set(cache.orphans)
        content = None if cache is not None else index()
        if content is not None:
            known = self._parseIndex(content)
            orphans = set(known.keys() - appeared.keys())
        elif removed:
            # The index keeps the entries of the messages gone since it was written.
            orphans.update(
                rows.bases[position]
                for position in removed
                if rows.flags[position] or rows.retrieved[position] is not None
            )
        if cache is not None and not orphans.isdisjoint(appeared):
            # A message is back: what the index says of it.
            content = index()
            if content is not None:
                known = self._parseIndex(content)
        orphans.difference_update(appeared)
        kept = _moved(rows, moved)
        if removed:
            kept = kept.take([i for i in range(len(rows)) if i not in removed])
        added, computed = self._freshRows(appeared, known)
        if (
            len(kept)
            and len(added)
            and (added.delivered[0], added.bases[0]) < (kept.delivered[-1], kept.bases[-1])
        ):
            listed = _sortedRows(_concatenate(kept, added))
        else:
            listed = _concatenate(kept, added)
        for position, subdirectory in enumerate(("new", "cur")):
            place = subdirectory[0].encode("ascii")
            read = scanned.get(subdirectory)
            if listed.places.count(place) != (
                rows.places.count(place) if read is None else len(read)
            ):
                # A file of the directory stands for no message of its own: another file has
                # its base name (in cur/, or in the same directory).  Only a reading finds it.
                cleans[position] = False
            elif read is not None and not cleans[position]:
                stamps[position], cleans[position] = self._confirm(
                    subdirectory, stamps[position], read
                )
        saved = ListingCache(
            digest, stamps[0], cleans[0], stamps[1], cleans[1], listed, frozenset(orphans)
        )
        if cache is not None and listed is cache.rows and saved == cache:
            # Nothing changed: the cache is not written again.
            return cache, computed
        return saved, computed

    def _fileSystemTime(self) -> int | None:
        """
        @return: the time of the file system's clock: see L{_fileSystemTime}.
        """
        return None if self._lockFD is None else _fileSystemTime(self._lockFD)

    def _confirm(self, subdirectory: str, stamp: Stamp, scanned: set[str]) -> tuple[Stamp, bool]:
        """
        Make the listing of a directory that had changed too recently to be reused, reusable
        if the file system's clock has moved on since: a second reading that finds the same
        messages then stands for it.  (Listing many new messages takes that long.)

        @param scanned: what the listing read in C{subdirectory}, whose stamp was C{stamp}.
        @return: the stamp and cleanliness to save for the directory.
        """
        if not _settled(stamp, _hostTime()):
            # Too recent by this host's clock, so by the file system's: see _scanListing.
            return stamp, False
        now = self._fileSystemTime()
        if not _settled(stamp, now):
            return stamp, False
        again = _directoryStamp(os.path.join(self.path, subdirectory))
        if not _settled(again, now) or set(self._scanNames(subdirectory)) != scanned:
            return stamp, False
        return again, True

    def _freshRows(
        self, found: dict[str, tuple[str, str]], known: dict[str, Entry]
    ) -> tuple[Rows, bool]:
        """
        Make the rows of messages that the listing cache does not have, with what the index
        says of them, and sorted.  Done in passes over all of them, so that the many messages
        of a first listing cost little more than reading them.

        @param found: where they are, by base name.
        @param known: the entries of the index, or of the part of it needed.
        @return: the rows, and whether sizes were computed; messages removed meanwhile by
            another agent are left out.
        @raise OSError: a message cannot be read.
        """
        if not found:
            return _NO_ROWS, False
        # In order of base names from the start: the listing order is by delivery time, then
        # base name, and most messages were delivered in order.
        bases = sorted(found)
        count = len(bases)
        locations = list(map(found.__getitem__, bases))
        subdirectories: list[str] = list(map(itemgetter(0), locations))
        infos: list[str] = list(map(itemgetter(1), locations))
        # Delivery times: the number that starts a conventional name; found in all the names at
        # once when each one has one (and none has a line feed, which would split it in two).
        delivered: list[int | None]
        joined = "\n".join(bases)
        seconds = _DELIVERY_TIMES.findall(joined)
        if len(seconds) == count and joined.count("\n") == count - 1:
            delivered = list(map(int, seconds))
        else:
            delivered = [
                int(number) if dot and number.isdigit() and number.isascii() else None
                for number, dot, _ in map(_PARTITION_DOT, bases)
            ]
        # What the index says; the sizes names carry, which it does not override.
        sizes: list[int | None] = [None] * count
        retrieved: list[int | None] = [None] * count
        saved: list[bytes | None] = [None] * count
        if known:
            entries = list(map(known.get, bases, repeat(Entry(None))))
            sizes = list(map(itemgetter(0), entries))
            retrieved = list(map(itemgetter(1), entries))
            saved = list(map(itemgetter(2), entries))
        flags = bytearray([SIZE_SAVED]) * count
        if ",W=" in "\0".join(bases):
            for position, baseName in enumerate(bases):
                size = _dovecotSize(baseName)
                if size is not None:
                    sizes[position] = size
                    flags[position] = 0
        if saved.count(None) != count:
            for position, uidl in enumerate(saved):
                if uidl is not None:
                    flags[position] |= UIDL_SAVED
        gone: set[int] = set()
        for position in [i for i, moment in enumerate(delivered) if moment is None]:
            message = self._locate(position, bases, subdirectories, infos)
            try:
                delivered[position] = int(self._onFile(message, os.lstat).st_mtime)
            except MessageGone:
                gone.add(position)
            self._relocated(message, position, subdirectories, infos)
        if gone or sizes.count(None) != count:
            unknown = [i for i, size in enumerate(sizes) if size is None and i not in gone]
        else:
            unknown = list(range(count))
        for subdirectory in ("new", "cur"):
            there = subdirectories.count(subdirectory)
            if not there:
                continue
            if there == len(unknown) == count and sizes.count(None) == count:
                positions = unknown
            else:
                # (A message another agent moved to cur/ was measured with those of new/.)
                positions = [
                    i for i in unknown if subdirectories[i] == subdirectory and sizes[i] is None
                ]
            if len(positions) == count:
                sizes = list(self._measureAll(positions, bases, subdirectories, infos, gone))
            elif positions:
                measured = self._measureAll(positions, bases, subdirectories, infos, gone)
                for position, size in zip(positions, measured, strict=True):
                    sizes[position] = size
        if gone:
            # Removed by another agent: they are not part of this session.
            kept = [i for i in range(count) if i not in gone]
            bases, subdirectories, infos = _picked(kept, bases, subdirectories, infos)
            delivered, sizes, retrieved = _picked(kept, delivered, sizes, retrieved)
            (saved,) = _picked(kept, saved)
            flags = bytearray(_picked(kept, flags)[0])
            count = len(kept)
            if not count:
                return _NO_ROWS, bool(unknown)
        # Every message left has its delivery time and size.
        times = cast("list[int]", delivered)
        order = list(range(count))
        if not all(map(operator.le, times, islice(times, 1, None))):
            order.sort(key=times.__getitem__)
        uidls = ownUidls(bases)
        if saved.count(None) != count:
            uidls = [own if uidl is None else uidl for own, uidl in zip(uidls, saved, strict=True)]
        rows = Rows(
            bases,
            infos,
            "".join(map(itemgetter(0), subdirectories)).encode("ascii"),
            times,
            cast("list[int]", sizes),
            retrieved,
            uidls,
            bytes(flags),
        )
        return rows.take(order), bool(unknown)

    def _locate(
        self, position: int, bases: list[str], subdirectories: list[str], infos: list[str]
    ) -> _Message:
        """
        @return: where the message at C{position} of the columns was found.
        """
        return _Message(
            bases[position], subdirectories[position], bases[position] + infos[position]
        )

    def _relocated(
        self, message: _Message, position: int, subdirectories: list[str], infos: list[str]
    ) -> None:
        """
        Save where C{message}, at C{position} in the columns, was found again.
        """
        subdirectories[position] = message.subdirectory
        infos[position] = message.fileName[len(message.baseName) :]

    def _measureAll(
        self,
        positions: list[int],
        bases: list[str],
        subdirectories: list[str],
        infos: list[str],
        gone: set[int],
    ) -> Sequence[int | None]:
        """
        Measure the messages at C{positions} in the columns, all in one subdirectory, opened by
        name in it; those that could not be read so are measured again one at a time, by path:
        one that another agent moved is looked for by base name, and its new place saved in
        the columns, and one that it removed is added to C{gone}.

        @return: their sizes; L{None} for those gone.
        @raise OSError: a message cannot be read.
        """
        subdirectory = subdirectories[positions[0]]
        names = list(map(operator.add, _picked(positions, bases)[0], _picked(positions, infos)[0]))
        sizes: list[int | None] = [UNREAD] * len(names)
        directoryFD = self._openDirectory(subdirectory)
        if directoryFD is not None:
            try:
                prefetched = self._prefetched
                if prefetched is not None and subdirectory == "new":
                    self._prefetched = None
                    sizes = list(_measureWith(prefetched, names, directoryFD))
                else:
                    sizes = list(
                        forkMap(partial(measureMany, directoryFD=directoryFD), names, _FORK_MINIMUM)
                    )
            finally:
                os.close(directoryFD)
        for number in [number for number, size in enumerate(sizes) if size == UNREAD]:
            position = positions[number]
            message = self._locate(position, bases, subdirectories, infos)
            try:
                sizes[number] = self._onFile(message, measure)
            except MessageGone:
                gone.add(position)
                sizes[number] = None
            self._relocated(message, position, subdirectories, infos)
        return sizes

    def _prefetch(self, names: list[str]) -> None:
        """
        Have a child process size most of the messages C{names} of C{new/} (see L{ForkedMap}),
        while this one makes the rest of a first listing; it sizes the others itself when it
        gets to them (see L{_measureAll}).
        """
        if ",W=" in "\0".join(names):
            names = [name for name in names if _dovecotSize(name) is None]
        if len(names) < _FORK_MINIMUM or self._prefetched is not None:
            return
        directoryFD = self._openDirectory("new")
        if directoryFD is None:
            return
        share = names[int(len(names) * (1 - _CHILD_SHARE)) :]
        forked = ForkedMap.start(partial(measureMany, directoryFD=directoryFD), share)
        if forked is None:
            os.close(directoryFD)
        else:
            self._prefetched = (forked, share, directoryFD)

    def _dropPrefetched(self) -> None:
        """
        Stop the child process that L{_prefetch} started, if its sizes were not used.
        """
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None:
            forked, _, directoryFD = prefetched
            try:
                forked.cancel()
            finally:
                os.close(directoryFD)

    def _openDirectory(self, subdirectory: str) -> int | None:
        """
        @return: a descriptor of C{subdirectory} to open its messages by name in it, or L{None}
            when it cannot be opened (they are opened by path).
        """
        try:
            return os.open(os.path.join(self.path, subdirectory), _DIRECTORY_FLAGS)
        except OSError:
            return None

    def _chooseUidls(self, rows: Rows) -> bool:
        """
        Find the UIDL of each listed message, choosing it for those that have none saved, and
        save those chosen from the legacy file, or as replacements, or by a migration: see
        L{Maildir}.

        @param rows: the listed messages, with their saved UIDLs (unique), and the others' own
            (see L{popd._index.ownUidl}), which are replaced by those chosen.
        @return: whether any UIDL was saved.
        """
        if not rows.flags.translate(None, _WITHOUT_UIDL) and self._uidlMigration is None:
            # Never migrated: UIDLs are derived from base names, as always.
            return False
        undecided = [i for i, flags in enumerate(rows.flags) if not flags & UIDL_SAVED]
        if not undecided:
            # Everything was chosen before: the legacy file is not read again.
            return False
        legacy: dict[str, bytes] | None = {}
        if self._uidlMigration is not None:
            legacy = self._legacyUidls(self._uidlMigration)
        # A migration chooses for good, unless the legacy file could not be used: the choices
        # are then left for a later session, which may find it repaired.
        choosing = self._uidlMigration is not None and legacy is not None
        legacy = legacy or {}
        names, uidls = rows.bases, rows.uidls
        own = ownUidls(names)
        taken = {uidl for uidl, flags in zip(uidls, rows.flags, strict=True) if flags & UIDL_SAVED}
        ownCounts = Counter(own)
        flags = bytearray(rows.flags)
        saved = False
        for i in undecided:
            name = names[i]
            uidl = legacy.get(name)
            # Another message has it if it is taken or if it is another's own.
            if uidl is not None and (uidl in taken or ownCounts[uidl] - (own[i] == uidl)):
                _log.warn(
                    "Not keeping the UIDL {uidl!r} of {name!r} in {path!r}: another message has it",
                    uidl=uidl,
                    name=name,
                    path=self.path,
                )
                uidl = None
            if uidl is None:
                uidl = own[i]
                attempt = 0
                while uidl in taken:
                    attempt += 1
                    uidl = _alternativeUidl(name, attempt)
            taken.add(uidl)
            uidls[i] = uidl
            if choosing or uidl != own[i]:
                flags[i] |= UIDL_SAVED
                saved = True
        rows.flags = bytes(flags)
        return saved

    def _legacyUidls(self, kind: str) -> dict[str, bytes] | None:
        """
        Read the legacy file of the server C{kind}, at most once a session: see L{Maildir}.

        @return: the UIDL of each base name it lists, none when it is missing, or L{None} when
            it cannot be used: unreadable, not a regular file, too large or malformed (each
            logged as a warning).
        """
        if not self._legacyRead:
            self._legacyRead = True
            self._legacy = self._readLegacy(
                os.path.join(self.path, uidlmigration.fileOf(kind)), kind
            )
        return self._legacy

    def _readLegacy(self, path: str, kind: str) -> dict[str, bytes] | None:
        """
        Read and parse the legacy file C{path} of the server C{kind}: see L{_legacyUidls}.
        """
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            return {}
        except OSError as e:
            _log.warn("Ignoring the unreadable {path!r}: {error}", path=path, error=e.strerror)
            return None
        chunks: list[bytes] = []
        size = 0
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                _log.warn("Ignoring {path!r}: not a regular file", path=path)
                return None
            while size <= _LEGACY_MAX_SIZE:
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as e:
            _log.warn("Ignoring the unreadable {path!r}: {error}", path=path, error=e.strerror)
            return None
        finally:
            os.close(fd)
        if size > _LEGACY_MAX_SIZE:
            _log.warn(
                "Ignoring {path!r}: larger than {limit} octets", path=path, limit=_LEGACY_MAX_SIZE
            )
            return None
        try:
            uidls, ignored = uidlmigration.parse(kind, b"".join(chunks))
        except uidlmigration.LegacyFormatError as e:
            _log.warn(
                "Ignoring the malformed {path!r}: line {line}: {reason}",
                path=path,
                line=e.line,
                reason=e.reason,
            )
            return None
        if ignored:
            _log.warn(
                "Ignoring {count} records of {path!r} that give no usable UIDL",
                count=ignored,
                path=path,
            )
        return uidls

    def _scanNames(self, subdirectory: str) -> list[str]:
        """
        @return: the file names of the messages in C{subdirectory}.
        """
        with os.scandir(os.path.join(self.path, subdirectory)) as entries:
            names = [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]
        joined = "\0".join(names)
        if joined.startswith(".") or "\0." in joined:
            names = list(filterfalse(_HIDDEN, names))
        return names

    def _scan(self) -> dict[str, tuple[str, str]]:
        """
        Find the messages, with one directory scan each of C{new/} and C{cur/}.

        C{new/} is scanned first: a message that another agent moves to C{cur/} meanwhile is
        found in C{cur/}, or twice, and is kept once; scanning in the other order could miss it.

        @return: the subdirectory of each base name, and what follows it in the file name.
        """
        found: dict[str, tuple[str, str]] = {}
        for subdirectory in ("new", "cur"):
            found.update(_located(self._scanNames(subdirectory), subdirectory))
        return found

    def _pathOf(self, message: _Message) -> str:
        """
        @return: where C{message} was last seen.
        """
        return os.path.join(self.path, message.subdirectory, message.fileName)

    def _relocate(self, message: _Message, found: dict[str, tuple[str, str]]) -> bool:
        """
        Update where C{message} is from the result of a L{_scan}.

        @return: whether the scan found it.
        """
        location = found.get(message.baseName)
        if location is None:
            return False
        message.subdirectory, message.fileName = location[0], message.baseName + location[1]
        return True

    def _onFile(self, message: _Message, action: Callable[[str], _T]) -> _T:
        """
        Apply C{action} to the file of C{message}, looking for it again by base name when
        another agent renamed it (to add flags, or to move it to C{cur/}).

        @raise MessageGone: the message no longer exists.
        @raise OSError: C{action} or the scan failed otherwise.
        """
        try:
            return action(self._pathOf(message))
        except FileNotFoundError:
            pass
        if self._relocate(message, self._scan()):
            try:
                return action(self._pathOf(message))
            except FileNotFoundError:
                pass
        raise MessageGone()

    def _message(self, index: int) -> _Message:
        """
        @return: where the message at C{index} in the listing was last seen.
        @raise IndexError: C{index} is not in the listing.
        """
        if not 0 <= index < len(self._rows):
            raise IndexError(index)
        message = self._located.get(index)
        if message is None:
            rows = self._rows
            baseName = rows.bases[index]
            message = _Message(
                baseName,
                "new" if rows.places[index] == _NEW else "cur",
                baseName + rows.infos[index],
            )
            self._located[index] = message
        return message

    def _readIndex(self) -> tuple[bytes | None, bytes | None]:
        """
        @return: the content of the index, or L{None} when it is missing or unreadable, or was
            not read: its digest is known from a listing of this process (see L{_indexContent});
            and its SHA-256, C{b""} when it is missing, L{None} when it is unreadable.
        """
        path = os.path.join(self.path, INDEX_FILE)
        try:
            fd = os.open(path, _READ_FLAGS)
            try:
                stamp = fileStamp(os.fstat(fd))
                digest = _INDEX_DIGESTS.get(path, stamp)
                if digest is not None:
                    return None, digest
                data = _readOpened(fd, path)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None, b""
        except OSError:
            _log.failure("Ignoring the unreadable index {path!r}", path=path, level=LogLevel.warn)
            return None, None
        digest = sha256(data).digest()
        _INDEX_DIGESTS.remember(path, stamp, digest)
        return data, digest

    def _indexContent(self, read: bytes | None, digest: bytes | None) -> bytes | None:
        """
        @param read: the content of the index that L{_readIndex} read, if it did.
        @param digest: the digest that L{_readIndex} found.
        @return: the content of the index; L{None} when there is none, or it cannot be read.
        """
        if read is not None or not digest:
            return read
        path = os.path.join(self.path, INDEX_FILE)
        try:
            return _readFile(path)
        except OSError:
            _log.failure("Ignoring the unreadable index {path!r}", path=path, level=LogLevel.warn)
            return None

    def _parseIndex(self, data: bytes) -> dict[str, Entry]:
        """
        @return: the entries saved in the index C{data}, of any version; none when it is
            invalid.
        """
        entries = parseIndex(data)
        if entries is None:
            path = os.path.join(self.path, INDEX_FILE)
            _log.warn("Ignoring the invalid index {path!r}", path=path)
            return {}
        return entries

    def _readCache(self) -> tuple[ListingCache | None, bytes | None]:
        """
        @return: the listing cache, or L{None} when it is missing, unreadable or invalid; and
            the SHA-256 of its file, C{b""} when it is there but unreadable or invalid, L{None}
            when it is missing.
        """
        path = os.path.join(self.path, LISTING_FILE)
        try:
            fd = os.open(path, _READ_FLAGS)
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise OSError(errno.EINVAL, "not a regular file", path)
                stamp = fileStamp(info)
                remembered = _LISTINGS.get(path, stamp)
                if remembered is not None:
                    return remembered
                # Block by block: no copy of the whole file, read or cut in pieces.
                read = readListing(lambda offset, length: _pread(fd, length, offset), info.st_size)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None, None
        except OSError as e:
            _log.warn(
                "Ignoring the unreadable listing cache {path!r}: {error}",
                path=path,
                error=e.strerror,
            )
            return None, b""
        if read is None:
            _log.warn("Ignoring the invalid listing cache {path!r}", path=path)
            return None, b""
        _LISTINGS.remember(path, stamp, read, len(read[0].rows))
        return read

    def _saveCache(self, cache: ListingCache, old: bytes | None) -> None:
        """
        Save C{cache} as the listing cache (see L{_writeCache}) when it lists enough messages
        to be worth it (L{_CACHE_MINIMUM}); else remove the cache, if there is one (C{old} is
        not L{None}), which no longer says enough to save anything and would be read by every
        session.
        """
        if len(cache.rows) >= _CACHE_MINIMUM:
            self._writeCache(cache, old)
        elif old is not None:
            self._removeCache()

    def _removeCache(self) -> None:
        """
        Remove the listing cache.  Failure is logged as a warning, and otherwise ignored.
        """
        try:
            os.unlink(os.path.join(self.path, LISTING_FILE))
        except FileNotFoundError:
            pass
        except OSError as e:
            _log.warn(
                "Could not remove the listing cache of {path!r}: {error}",
                path=self.path,
                error=e.strerror,
            )

    def _writeIndex(self, content: bytes) -> bytes | None:
        """
        Replace the index atomically and durably with C{content}.  Failure is logged and
        otherwise ignored: the sizes are right for this session, and the next one will compute
        them again; retrievals not saved are recorded again when next retrieved.

        @return: the SHA-256 of C{content}, or L{None} when the index was not replaced.
        """
        temporary = os.path.join(self.path, _INDEX_TEMPORARY)
        digest = sha256(content).digest()
        replaced = False
        try:
            fd = os.open(temporary, _WRITE_FLAGS, 0o600)
            with open(fd, "wb") as index:
                index.write(content)
                index.flush()
                os.fsync(fd)
            path = os.path.join(self.path, INDEX_FILE)
            os.replace(temporary, path)
            replaced = True
            _INDEX_DIGESTS.remember(path, fileStamp(os.stat(path)), digest)
            _fsyncDirectory(self.path)
        except OSError:
            _log.failure(
                "Could not save the index of {path!r}", path=self.path, level=LogLevel.warn
            )
            if not replaced:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass
        return digest if replaced else None

    def _writeCache(self, cache: ListingCache, old: bytes | None) -> None:
        """
        Replace the listing cache atomically with C{cache}, unless it has that content already
        (that of SHA-256 C{old}).  It is not synced: after a crash it may be missing or damaged,
        which is seen, or be the one before, saved with another index or other directories.
        Failure is logged as a warning, and otherwise ignored.
        """
        try:
            content = formatListing(cache)
        except OverflowError:
            # A size of 2**63 octets or more, from a hand-made index.
            return
        if old is not None and content.endswith(b"end %s\n" % (old.hex().encode("ascii"),)):
            return
        temporary = os.path.join(self.path, _LISTING_TEMPORARY)
        try:
            fd = os.open(temporary, _WRITE_FLAGS, 0o600)
            with open(fd, "wb") as file:
                file.write(content)
            path = os.path.join(self.path, LISTING_FILE)
            os.replace(temporary, path)
            _LISTINGS.remember(path, fileStamp(os.stat(path)), (cache, listingDigest(content)))
        except OSError as e:
            _log.warn(
                "Could not save the listing cache of {path!r}: {error}",
                path=self.path,
                error=e.strerror,
            )
            try:
                os.unlink(temporary)
            except OSError:
                pass

    def open(self, index: int) -> Deferred[IMessage]:
        """
        Open the message at C{index} in the listing, wherever another agent moved it.

        @return: a L{Deferred} firing with the message, or failing with L{MessageGone} when
            another agent removed it and L{TemporaryFailure} when it cannot be opened (the
            cause is logged).
        @raise IndexError: C{index} is not in the listing.
        """
        message = self._message(index)
        try:
            fd = self._onFile(message, lambda path: os.open(path, _READ_FLAGS))
        except MessageGone as e:
            return fail(e)
        except OSError:
            _log.failure(
                "Could not open {path!r}", path=self._pathOf(message), level=LogLevel.error
            )
            return fail(TemporaryFailure())
        return succeed(_MaildirMessage(fd))

    def commit(
        self, deleted: Collection[int], retrieved: Collection[int]
    ) -> Deferred[Collection[int]]:
        """
        Remove the messages at the indices C{deleted}, wherever another agent moved them; mark
        those at C{retrieved} (except any also in C{deleted}) as retrieved; then make the
        removals durable and save the retrieval times.

        A message already gone counts as removed.  A failure to remove one message does not
        stop the others.  A message renamed again between the rescan and the second attempt is
        counted as removed: it stays, and is listed again next session.

        A retrieved message gets a retrieval time in the index unless it has one already, and,
        as Dovecot does, is moved from C{new/} to C{cur/} with the C{S} flag added to its
        flags.  Both are best effort: failures are logged, never reported, and neither changes
        the base name (so the UIDL) nor the content of the message.

        @return: a L{Deferred} firing with the indices of the messages that could not be
            removed, or not durably (the causes are logged).
        @raise IndexError: an index is not in the listing; nothing was changed.
        """
        messages = {index: self._message(index) for index in deleted}
        seen = {index: self._message(index) for index in retrieved if index not in messages}
        if len(messages) == len(self._rows):
            # Every listed message goes: what the listing learned is of no more use.
            self._unsaved = None
        else:
            self._saveUnsaved()
        failed: set[int] = set()
        removed: dict[str, list[int]] = {"new": [], "cur": []}

        def remove(index: int, message: _Message) -> bool:
            """
            @return: C{False} when the file is not where C{message} says.
            """
            try:
                os.unlink(self._pathOf(message))
            except FileNotFoundError:
                return False
            except OSError:
                _log.failure(
                    "Could not remove {path!r}", path=self._pathOf(message), level=LogLevel.error
                )
                failed.add(index)
            else:
                removed[message.subdirectory].append(index)
            return True

        try:
            self._retryMissing(messages, remove)
        except _ScanFailed as e:
            failed.update(e.indices)
        try:
            # Before the directories are synced: that makes the renames durable too.
            self._retryMissing(seen, lambda index, message: self._markSeen(message))
        except _ScanFailed:
            pass
        for subdirectory, indices in removed.items():
            try:
                _fsyncDirectory(os.path.join(self.path, subdirectory))
            except OSError:
                _log.failure(
                    "Could not make removals durable in {path!r}",
                    path=os.path.join(self.path, subdirectory),
                    level=LogLevel.error,
                )
                failed.update(indices)
        self._recordRetrievals(
            [message.baseName for message in seen.values()],
            [messages[index].baseName for index in messages if index not in failed],
        )
        return succeed(sorted(failed))

    def _retryMissing(
        self, messages: dict[int, _Message], attempt: Callable[[int, _Message], bool]
    ) -> None:
        """
        Apply C{attempt} to each message, then, after a single scan, once more to each that
        was not where it was last seen (C{attempt} returned C{False}) but was found again.

        @raise _ScanFailed: the scan failed (it is logged); C{attempt} was not retried.
        """
        missing = [index for index, message in messages.items() if not attempt(index, message)]
        if missing:
            try:
                found = self._scan()
            except OSError:
                _log.failure("Could not list {path!r}", path=self.path, level=LogLevel.error)
                raise _ScanFailed(missing) from None
            for index in missing:
                if self._relocate(messages[index], found):
                    attempt(index, messages[index])

    def _markSeen(self, message: _Message) -> bool:
        """
        Move C{message} to C{cur/} with the C{S} flag, keeping its other flags, as Dovecot does
        when a message is retrieved.  A message already there with the flag, one whose name has
        information this does not understand, and one whose new name is taken (a duplicate of
        its base name) are left alone.  The rename is atomic: the message is never lost, and
        only its name after the base name changes.  Failures are logged.

        @return: C{False} when the file is not where C{message} says.
        """
        target = _seenName(message.fileName)
        if target is None or (message.subdirectory, message.fileName) == ("cur", target):
            return True
        source = self._pathOf(message)
        destination = os.path.join(self.path, "cur", target)
        try:
            try:
                os.lstat(destination)
            except FileNotFoundError:
                pass
            else:
                _log.warn(
                    "Not marking {path!r} as seen: {other!r} exists",
                    path=source,
                    other=destination,
                )
                return True
            # rename replaces an existing destination; it was just checked not to exist, and
            # no other agent creates a name with this base name but by renaming this message.
            os.rename(source, destination)
        except FileNotFoundError:
            return False
        except OSError:
            _log.failure("Could not mark {path!r} as seen", path=source, level=LogLevel.warn)
        else:
            message.subdirectory, message.fileName = "cur", target
        return True

    def _recordRetrievals(self, retrieved: list[str], removed: list[str]) -> None:
        """
        Save a retrieval time for the messages with the base names C{retrieved} that have none
        yet, dropping the entries of the messages C{removed}.  The index is written only when
        a time was added.
        """
        if not retrieved:
            return
        if self._entries is None:
            times = dict(zip(self._rows.bases, self._rows.retrieved, strict=True))
            new = [name for name in retrieved if times.get(name) is None]
        else:
            entries = self._entries
            new = [name for name in retrieved if entries.get(name, Entry(None)).retrievedAt is None]
        if not new:
            return
        now = _wholeSeconds(self._clock())
        if now is None:
            _log.warn("Not recording retrievals in {path!r}: bad clock", path=self.path)
            return
        if self._entries is None:
            self._entries = _entriesOf(self._rows)
        entries = dict(self._entries)
        for name in removed:
            entries.pop(name, None)
        for name in new:
            entries[name] = entries.get(name, Entry(None))._replace(retrievedAt=now)
        self._entries = entries
        digest = self._writeIndex(formatIndex(entries))
        if digest is not None:
            self._saveCommitted(digest, set(removed), set(new), now)

    def _saveCommitted(
        self, digest: bytes, removed: set[str], retrieved: set[str], now: int
    ) -> None:
        """
        Save in the listing cache what the index written by a commit says: the listed messages
        but those C{removed}, where they were last seen, those C{retrieved} with the time
        C{now}.  The directories changed (or may have): the next listing reads them, taking
        what it knows of the messages it finds from the cache instead of the whole index.
        """
        rows = self._rows
        bases = rows.bases
        places = bytearray(rows.places)
        infos = list(rows.infos)
        for index, message in self._located.items():
            places[index] = ord(message.subdirectory[0])
            infos[index] = message.fileName[len(message.baseName) :]
        updated = Rows(
            bases,
            infos,
            bytes(places),
            rows.delivered,
            rows.sizes,
            [
                now if baseName in retrieved else retrievedAt
                for baseName, retrievedAt in zip(bases, rows.retrieved, strict=True)
            ],
            rows.uidls,
            rows.flags,
        )
        kept = updated.take([i for i, baseName in enumerate(bases) if baseName not in removed])
        cache = ListingCache(digest, NO_STAMP, False, NO_STAMP, False, kept, frozenset())
        # The listing left a cache (saved with the index this replaced) when it listed enough
        # messages: it is replaced, or removed if too few are left.
        self._saveCache(cache, b"" if len(rows) >= _CACHE_MINIMUM else None)

    def _saveUnsaved(self) -> None:
        """
        Save what the listing learned, if it is not saved yet (see L{_takeListing}).
        """
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is not None:
            try:
                self._saveListing(*unsaved)
            except Exception:
                _log.failure("Could not save the listing of {path!r}", path=self.path)

    def close(self) -> Deferred[None]:
        """
        Save what the listing learned if no commit did (see L{_takeListing}), and release the
        lock.  Idempotent; never removes anything.

        @return: a L{Deferred} that has fired.
        """
        if self._lockFD is not None:
            self._saveUnsaved()
            lockFD, self._lockFD = self._lockFD, None
            _lockedMaildirs.discard(self.path)
            try:
                os.close(lockFD)
            except OSError:
                _log.failure(
                    "Could not close the lock of {path!r}", path=self.path, level=LogLevel.warn
                )
        return succeed(None)

    def logout(self) -> None:
        """
        Release the lock, as the logout that L{MaildirRealm} hands out with the Maildir.
        """
        self.close()
