"""
A Maildir store: the L{IMaildrop} of a Maildir on local or NFS disk, and a realm that opens one
per user.

A Maildir is shared with other agents: the MTA delivers into C{new/} while a session is open, and
IMAP servers rename files to add flags or move them from C{new/} to C{cur/}.  A message is
therefore identified by its I{base name}, the file name before the first C{:}, which no agent
changes for the life of the message.  popd itself renames a message it retrieved, as Dovecot does:
it moves it to C{cur/} and adds the C{S} (seen) flag.

A message's UIDL is derived from its base name (see L{_uidl}), unless the Maildir was migrated from
Dovecot or Courier with the option to keep the UIDLs they handed out (see L{Maildir}): those are
read once from C{dovecot-uidlist} or C{courierpop3dsizelist} and kept in popd's own index.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
import stat
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from hashlib import sha256
from operator import itemgetter
from typing import NamedTuple, TypeVar
from urllib.parse import quote_from_bytes, unquote, unquote_to_bytes

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger, LogLevel
from zope.interface import Interface, implementer

from popd import uidlmigration
from popd._wire import transmittedSize
from popd.errors import MaildropInUse, MessageGone, TemporaryFailure
from popd.interfaces import IMaildrop, IMessage, MessageInfo

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
_INDEX_FILE = "popd-index"
_INDEX_TEMPORARY = "popd-index.tmp"
# The versions written: 3 when an entry saves a UIDL, else 2, which older popds read too.  Each
# version read, with its entry format: a size, a base name, a retrieval time, a saved UIDL.
_INDEX_HEADER = b"popd-index 3\n"
_INDEX_HEADER_2 = b"popd-index 2\n"
_INDEX_ENTRIES = {
    b"popd-index 1\n": re.compile(rb"([0-9]{1,20}) ([!-~]+)"),
    _INDEX_HEADER_2: re.compile(rb"([0-9]{1,20}|-) ([!-~]+)(?: ([0-9]{1,20}))?"),
    _INDEX_HEADER: re.compile(
        rb"([0-9]{1,20}|-) ([!-~]+)(?: ([0-9]{1,20}))?(?: (own|uidl=[!-~]{1,70}))?"
    ),
}
# How version 3 saves a UIDL derived from the base name; any other is saved as uidl=<UIDL>.
_OWN_UIDL = b"own"
_SAVED_UIDL = b"uidl="
_INDEX_TRAILER = re.compile(rb"end ([0-9]{1,10}) ([0-9a-f]{64})")
# Retrieval times are saved as whole seconds of at most 20 digits, as sizes are.
_MAX_TIME = 10**20
# Bytes written as-is in index entries; everything else is percent-encoded.
_INDEX_SAFE = ",="
_CHUNK = 65536
# What os.fsdecode does, without its cost per call: an index has an entry per message.
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

_DOVECOT_SIZE = re.compile(r",W=([0-9]{1,20})(?:,|$)")
_PRINTABLE_UIDL = re.compile(r"[!-~]{1,70}")
# Not in a base name: a leading dot (hidden files), a path separator, the flags separator, NUL.
_NOT_BASE_NAME = re.compile(rb"^\.|[/:\0]")
_DIGEST_LENGTH = 40
# The information part of a Maildir name that popd can add the seen flag to: version 2 and
# single-letter flags, as Maildir, Courier and Dovecot write them.
_FLAGS = re.compile(r"2,([A-Za-z]*)")
_SEEN = "S"

# O_NOFOLLOW: a symbolic link placed in a Maildir must not make popd read (or write over) a file
# the Maildir's owner could not read, when popd runs with more privileges than that owner.
# O_NONBLOCK: a FIFO put in place of a file must not block the server (files ignore the flag).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

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
        @param uidlMigration: C{"dovecot"} or C{"courier"} to keep the UIDLs that this server
            gave out on the same Maildirs (R22; see L{Maildir}), or L{None}.
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

        def logout() -> None:
            maildrop.close()

        return (IMaildrop, maildrop, logout)

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
    @param uidlMigration: C{"dovecot"} or C{"courier"} to keep the UIDLs that this server gave
        out (see L{Maildir}), or L{None}.
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


def _baseName(fileName: str) -> str:
    """
    @return: the part of a Maildir file name that no agent changes: flags follow the C{:}.
    """
    return fileName.partition(":")[0]


def _deliveryTime(baseName: str) -> int | None:
    """
    @return: the delivery time that starts a conventional Maildir name (C{time.unique.host}),
        or L{None} when the name does not start with one.
    """
    seconds, dot, _ = baseName.partition(".")
    if dot and seconds.isascii() and seconds.isdigit():
        return int(seconds)
    return None


def _dovecotSize(baseName: str) -> int | None:
    """
    @return: the CRLF size that Dovecot records in a file name as C{,W=<size>}, or L{None}.
    """
    match = _DOVECOT_SIZE.search(baseName)
    return None if match is None else int(match.group(1))


def _uidl(baseName: str) -> bytes:
    """
    The unique-id of a message, derived from its base name alone.

    Base names are unique in a Maildir and never change while the message exists, so the UIDL
    needs no stored state: it survives restarts, lost or corrupt indexes and other agents'
    renames.  The base name is used as it is when POP3 allows it (1 to 70 octets in 0x21-0x7E),
    which keeps the UIDLs that Courier, which does the same, handed out.  Other names are
    replaced by 160 bits of their SHA-256 in hex: as deterministic, and a collision is
    practically impossible.
    """
    if _PRINTABLE_UIDL.fullmatch(baseName):
        return baseName.encode("ascii")
    return sha256(os.fsencode(baseName)).hexdigest()[:_DIGEST_LENGTH].encode("ascii")


def _alternativeUidl(baseName: str, attempt: int) -> bytes:
    """
    A replacement for the UIDL derived from a base name, for the rare message whose UIDL
    another message already has (R22): 160 bits of the SHA-256 of the base name and
    C{attempt}, in hex.  Deterministic; it is saved in the index anyway, to stay stable.
    """
    digest = sha256(os.fsencode(baseName) + b"\0%d" % (attempt,)).hexdigest()
    return digest[:_DIGEST_LENGTH].encode("ascii")


def _measure(path: str) -> int:
    """
    @return: the size that the message in C{path} has as transmitted: see L{transmittedSize}.
    """
    fd = os.open(path, _READ_FLAGS)
    try:
        return transmittedSize(iter(lambda: os.read(fd, _CHUNK), b""))
    finally:
        os.close(fd)


class _Entry(NamedTuple):
    """
    What the index saves of one message.

    @ivar size: the size as transmitted, when it had to be computed; L{None} when the base name
        carries it (Dovecot's C{,W=}).
    @ivar retrievedAt: when a committed session first retrieved the message, in whole POSIX
        seconds, or L{None}.
    @ivar uidl: the UIDL the message keeps for life, once chosen by a listing that could have
        given it another (a migration from a legacy file, or a clash); L{None} while its UIDL
        is simply derived from its base name (see L{_uidl}).
    """

    size: int | None
    retrievedAt: int | None = None
    uidl: bytes | None = None


def _parseIndex(data: bytes) -> dict[str, _Entry] | None:
    """
    Parse the content of an index.

    The format is a version line, one line per message, then C{end <count> <sha256>} where the
    hash covers all that precedes it.  In version 3 a message's line is C{<size> <base name>
    [<retrieved>] [<uidl>]}, with C{-} as size when the base name carries it, and at least one
    of the size, the retrieval time and the UIDL; the base name is percent-encoded, the time is
    in whole POSIX seconds, and the UIDL the message keeps (R22) is C{own} when it is the one
    derived from the base name (see L{_uidl}), else C{uidl=} followed by it.  Version 2 is
    version 3 without UIDLs, and version 1, which only saved sizes, has C{<size> <base name>}
    lines only.  Any disagreement (truncation, a torn or foreign write, a bad entry, two
    messages with one UIDL) rejects the whole file: an index is mostly a cache, and a wrong
    size breaks every client that trusts C{LIST}.  What the UIDLs saved in a rejected index
    were is found again in the legacy files they came from, as long as these are left there.

    @return: the entry of each base name, or L{None} when C{data} is not a valid index.
    """
    content, newline, trailer = data.removesuffix(b"\n").rpartition(b"\n")
    content += newline
    match = _INDEX_TRAILER.fullmatch(trailer)
    header, _, body = content.partition(b"\n")
    entryFormat = _INDEX_ENTRIES.get(header + b"\n")
    if (
        not data.endswith(b"\n")
        or match is None
        or entryFormat is None
        or sha256(content).hexdigest().encode("ascii") != match.group(2)
    ):
        return None
    lines = body.split(b"\n")[:-1]
    if len(lines) != int(match.group(1)):
        return None
    entries: dict[str, _Entry] = {}
    uidls: set[bytes] = set()
    for line in lines:
        entry = entryFormat.fullmatch(line)
        if entry is None:
            return None
        # Versions 1 and 2 have fewer groups: the missing ones are absent fields.
        size, encoded, retrieved, saved = (entry.groups() + (None, None))[:4]
        if size == b"-" and retrieved is None and saved is None:
            return None
        name = unquote_to_bytes(encoded)
        if _NOT_BASE_NAME.search(name):
            return None
        baseName = name.decode(_FS_ENCODING, _FS_ERRORS)
        if baseName in entries:
            return None
        uidl = None
        if saved is not None:
            uidl = _uidl(baseName) if saved == _OWN_UIDL else saved[len(_SAVED_UIDL) :]
            if uidl in uidls:
                return None
            uidls.add(uidl)
        entries[baseName] = _Entry(
            None if size == b"-" else int(size),
            None if retrieved is None else int(retrieved),
            uidl,
        )
    return entries


def _formatIndex(entries: dict[str, _Entry]) -> bytes:
    """
    @return: the content of an index of C{entries}: see L{_parseIndex}.  It is of version 2
        when no entry saves a UIDL, so that a Maildir never migrated stays readable by older
        popds, else of version 3.  Entries that save nothing are left out.
    """
    lines = []
    header = _INDEX_HEADER_2
    for name, (size, retrievedAt, uidl) in sorted(entries.items()):
        if size is None and retrievedAt is None and uidl is None:
            continue
        line = b"%s %s" % (
            b"-" if size is None else b"%d" % (size,),
            quote_from_bytes(os.fsencode(name), _INDEX_SAFE).encode("ascii"),
        )
        if retrievedAt is not None:
            line += b" %d" % (retrievedAt,)
        if uidl is not None:
            header = _INDEX_HEADER
            line += b" " + (_OWN_UIDL if uidl == _uidl(name) else _SAVED_UIDL + uidl)
        lines.append(line + b"\n")
    content = header + b"".join(lines)
    digest = sha256(content).hexdigest().encode("ascii")
    return content + b"end %d %s\n" % (len(lines), digest)


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
    once: mail delivered later waits for the next session.

    Sizes come from Dovecot's C{,W=} in the file name when it is there; otherwise they are
    computed once by reading the message and kept in the file C{popd-index} of the Maildir, so
    that a session only reads the bodies of the messages delivered since the last one.  The
    same index keeps when each message was first retrieved by a session that committed, for the
    EXPIRE policy (RFC 2449 section 6.7); it is keyed by base name, so it survives other agents'
    renames, and its loss only makes messages look never retrieved.

    A message's UIDL is derived from its base name (see L{_uidl}), except in a Maildir migrated
    from Dovecot or Courier (R22).  With C{uidlMigration}, a listing that finds messages the
    index has no UIDL for reads the legacy file of that server in the Maildir root,
    C{dovecot-uidlist} (see L{_parseDovecot}) or C{courierpop3dsizelist} (see
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

    @ivar path: the real path of the Maildir.
    """

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
        @param uidlMigration: C{"dovecot"} or C{"courier"}: the server whose UIDLs to keep; or
            L{None}.
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
        self._listing: list[MessageInfo] | None = None
        self._messages: list[_Message] = []
        # What the index should hold for the listed messages, by base name.
        self._entries: dict[str, _Entry] = {}

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

    def _takeListing(self) -> list[MessageInfo]:
        """
        Read the Maildir, remember where each message is in L{_messages} and what the index
        should hold in L{_entries}, and save the sizes that had to be computed and the UIDLs
        that were chosen.

        @return: the listing.

        @raise OSError: the Maildir cannot be read.
        """
        known = self._readIndex()
        entries: dict[str, _Entry] = {}
        computed = False
        found: list[tuple[int, str, _Message, int, int | None]] = []
        for baseName, (subdirectory, fileName) in self._scan().items():
            message = _Message(baseName, subdirectory, fileName)
            entry = known.get(baseName, _Entry(None))
            try:
                delivered = _deliveryTime(baseName)
                if delivered is None:
                    delivered = int(self._onFile(message, os.lstat).st_mtime)
                size = _dovecotSize(baseName)
                if size is not None:
                    # The name is the authority; an index never overrides it.
                    entry = entry._replace(size=None)
                else:
                    size = entry.size
                    if size is None:
                        size = self._onFile(message, _measure)
                        computed = True
                        entry = entry._replace(size=size)
            except MessageGone:
                # Removed by another agent: it is not part of this session.
                continue
            entries[baseName] = entry
            found.append((delivered, baseName, message, size, entry.retrievedAt))
        found.sort(key=itemgetter(0, 1))
        self._messages = [message for _, _, message, _, _ in found]
        uidls, chosen = self._chooseUidls([baseName for _, baseName, _, _, _ in found], entries)
        self._entries = entries
        if computed or chosen:
            self._writeIndex(entries)
        return [
            MessageInfo(size, uidl, None if retrievedAt is None else float(retrievedAt))
            for (_, _, _, size, retrievedAt), uidl in zip(found, uidls, strict=True)
        ]

    def _chooseUidls(
        self, names: list[str], entries: dict[str, _Entry]
    ) -> tuple[list[bytes], bool]:
        """
        Find the UIDL of each listed message, choosing it for those that have none saved, and
        save in C{entries} those chosen from the legacy file, or as replacements, or by a
        migration: see L{Maildir}.

        @param names: the base names of the listed messages, in listing order.
        @param entries: their index entries, by base name; their saved UIDLs are unique.
        @return: the UIDLs, in listing order, and whether any was saved in C{entries}.
        """
        served = {name: entries[name].uidl for name in names}
        taken = {uidl for uidl in served.values() if uidl is not None}
        if not taken and self._uidlMigration is None:
            # Never migrated: UIDLs are derived from base names, as always.
            return [_uidl(name) for name in names], False
        undecided = [name for name, uidl in served.items() if uidl is None]
        if not undecided:
            # Everything was chosen before: the legacy file is not read again.
            return [uidl or b"" for uidl in served.values()], False
        legacy: dict[str, bytes] | None = {}
        if self._uidlMigration is not None:
            legacy = self._legacyUidls(self._uidlMigration)
        # A migration chooses for good, unless the legacy file could not be used: the choices
        # are then left for a later session, which may find it repaired.
        choosing = self._uidlMigration is not None and legacy is not None
        legacy = legacy or {}
        own = {name: _uidl(name) for name in names}
        ownCounts = Counter(own.values())
        saved = False
        for name in undecided:
            uidl = legacy.get(name)
            # Another message has it if it is taken or if it is another's own.
            if uidl is not None and (uidl in taken or ownCounts[uidl] - (own[name] == uidl)):
                _log.warn(
                    "Not keeping the UIDL {uidl!r} of {name!r} in {path!r}: another message has it",
                    uidl=uidl,
                    name=name,
                    path=self.path,
                )
                uidl = None
            if uidl is None:
                uidl = own[name]
                attempt = 0
                while uidl in taken:
                    attempt += 1
                    uidl = _alternativeUidl(name, attempt)
            taken.add(uidl)
            served[name] = uidl
            if choosing or uidl != own[name]:
                entries[name] = entries[name]._replace(uidl=uidl)
                saved = True
        return [uidl or b"" for uidl in served.values()], saved

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
                os.path.join(self.path, uidlmigration.FILES[kind]), kind
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

    def _scan(self) -> dict[str, tuple[str, str]]:
        """
        Find the messages, with one directory scan each of C{new/} and C{cur/}.

        C{new/} is scanned first: a message that another agent moves to C{cur/} meanwhile is
        found in C{cur/}, or twice, and is kept once; scanning in the other order could miss it.

        @return: the subdirectory and file name of each base name.
        """
        found: dict[str, tuple[str, str]] = {}
        for subdirectory in ("new", "cur"):
            with os.scandir(os.path.join(self.path, subdirectory)) as entries:
                for entry in entries:
                    if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                        found[_baseName(entry.name)] = (subdirectory, entry.name)
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
        message.subdirectory, message.fileName = location
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
        @raise IndexError: C{index} is not in the listing.
        """
        if not 0 <= index < len(self._messages):
            raise IndexError(index)
        return self._messages[index]

    def _readIndex(self) -> dict[str, _Entry]:
        """
        @return: the entries saved in the index, of either version; none when it is missing,
            unreadable or invalid.
        """
        path = os.path.join(self.path, _INDEX_FILE)
        try:
            fd = os.open(path, _READ_FLAGS)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(errno.EINVAL, "not a regular file", path)
                data = b"".join(iter(lambda: os.read(fd, _CHUNK), b""))
            finally:
                os.close(fd)
        except FileNotFoundError:
            return {}
        except OSError:
            _log.failure("Ignoring the unreadable index {path!r}", path=path, level=LogLevel.warn)
            return {}
        entries = _parseIndex(data)
        if entries is None:
            _log.warn("Ignoring the invalid index {path!r}", path=path)
            return {}
        return entries

    def _writeIndex(self, entries: dict[str, _Entry]) -> None:
        """
        Replace the index atomically and durably with C{entries}.  Failure is logged and
        otherwise ignored: the sizes are right for this session, and the next one will compute
        them again; retrievals not saved are recorded again when next retrieved.
        """
        temporary = os.path.join(self.path, _INDEX_TEMPORARY)
        try:
            fd = os.open(
                temporary,
                # O_NONBLOCK: opening a FIFO put here fails (ENXIO) instead of blocking.
                os.O_WRONLY
                | os.O_CREAT
                | os.O_TRUNC
                | os.O_NOFOLLOW
                | os.O_CLOEXEC
                | os.O_NONBLOCK,
                0o600,
            )
            with open(fd, "wb") as index:
                index.write(_formatIndex(entries))
                index.flush()
                os.fsync(fd)
            os.replace(temporary, os.path.join(self.path, _INDEX_FILE))
            _fsyncDirectory(self.path)
        except OSError:
            _log.failure(
                "Could not save the index of {path!r}", path=self.path, level=LogLevel.warn
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
        new = [
            name for name in retrieved if self._entries.get(name, _Entry(None)).retrievedAt is None
        ]
        if not new:
            return
        now = _wholeSeconds(self._clock())
        if now is None:
            _log.warn("Not recording retrievals in {path!r}: bad clock", path=self.path)
            return
        entries = dict(self._entries)
        for name in removed:
            entries.pop(name, None)
        for name in new:
            entries[name] = entries.get(name, _Entry(None))._replace(retrievedAt=now)
        self._entries = entries
        self._writeIndex(entries)

    def close(self) -> Deferred[None]:
        """
        Release the lock.  Idempotent; never removes anything.

        @return: a L{Deferred} that has fired.
        """
        if self._lockFD is not None:
            lockFD, self._lockFD = self._lockFD, None
            _lockedMaildirs.discard(self.path)
            try:
                os.close(lockFD)
            except OSError:
                _log.failure(
                    "Could not close the lock of {path!r}", path=self.path, level=LogLevel.warn
                )
        return succeed(None)
