"""
The two files in which L{popd.maildir} keeps what it learned of a Maildir, and their formats.

The index, C{popd-index}, saves for good what must survive: the sizes that had to be computed, when
messages were first retrieved, and the UIDLs chosen once and for all (R22).  The listing cache,
C{popd-listing}, saves a whole listing (order, names, sizes, UIDLs, retrieval times) together with
what C{new/} and C{cur/} looked like when it was taken, so that a session that finds them
unchanged reuses it without reading either directory.  The cache only repeats what the index and
the directories say: losing it costs one directory scan.

Both formats are self-checking: a file that is truncated, torn, foreign or wrong in any way is
rejected whole, never trusted in part.  Nothing here does I/O.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from itertools import compress
from operator import itemgetter
from typing import NamedTuple, TypeVar
from urllib.parse import quote_from_bytes, unquote_to_bytes

__all__ = [
    "INDEX_FILE",
    "LISTING_FILE",
    "NO_STAMP",
    "SIZE_SAVED",
    "UIDL_SAVED",
    "Entry",
    "ListingCache",
    "Rows",
    "Stamp",
    "formatIndex",
    "formatIndexColumns",
    "formatListing",
    "listingDigest",
    "ownUidl",
    "ownUidls",
    "parseIndex",
    "parseListing",
    "readListing",
]

_T = TypeVar("_T")

# What os.fsdecode and os.fsencode do, without their cost per call: a file has a name per message.
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

_PRINTABLE_UIDL = re.compile(r"[!-~]{1,70}")
_PRINTABLE = bytes(range(0x21, 0x7F))
_PRINTABLE_LINES = _PRINTABLE + b"\n"
_DIGEST_LENGTH = 40


def ownUidl(baseName: str) -> bytes:
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
    digest = sha256(baseName.encode(_FS_ENCODING, _FS_ERRORS)).hexdigest()
    return digest[:_DIGEST_LENGTH].encode("ascii")


def ownUidls(baseNames: Sequence[str]) -> list[bytes]:
    """
    @return: the L{ownUidl} of each base name, computed in bulk when all are usable as they are
        (the usual case: conventional Maildir names).
    """
    if not baseNames:
        return []
    joined = "\n".join(baseNames)
    if joined.isascii():
        encoded = joined.encode("ascii")
        uidls = encoded.split(b"\n")
        # A name with a line feed shows up as a disagreement of the count.
        if (
            len(uidls) == len(baseNames)
            and not encoded.translate(None, _PRINTABLE_LINES)
            and 1 <= min(map(len, uidls))
            and max(map(len, uidls)) <= 70
        ):
            return uidls
    return [ownUidl(name) for name in baseNames]


# The index.
#
# The versions written: 3 when an entry saves a UIDL, else 2, which older popds read too.  Each
# version read, with its entry format: a size, a base name, a retrieval time, a saved UIDL.

INDEX_FILE = "popd-index"
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
# Bytes written as-is in index entries; everything else is percent-encoded.
_INDEX_SAFE = ",="
# What quote_from_bytes leaves as it is, and the line feeds that separate names checked at once.
_UNQUOTED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~,=\n"
# Not in a base name: a leading dot (hidden files), a path separator, the flags separator, NUL.
_NOT_BASE_NAME = re.compile(rb"^\.|[/:\0]")


class Entry(NamedTuple):
    """
    What the index saves of one message.

    @ivar size: the size as transmitted, when it had to be computed; L{None} when the base name
        carries it (Dovecot's C{,W=}).
    @ivar retrievedAt: when a committed session first retrieved the message, in whole POSIX
        seconds, or L{None}.
    @ivar uidl: the UIDL the message keeps for life, once chosen by a listing that could have
        given it another (a migration from a legacy file, or a clash); L{None} while its UIDL
        is simply derived from its base name (see L{ownUidl}).
    """

    size: int | None
    retrievedAt: int | None = None
    uidl: bytes | None = None


def parseIndex(data: bytes) -> dict[str, Entry] | None:
    """
    Parse the content of an index.

    The format is a version line, one line per message, then C{end <count> <sha256>} where the
    hash covers all that precedes it.  In version 3 a message's line is C{<size> <base name>
    [<retrieved>] [<uidl>]}, with C{-} as size when the base name carries it, and at least one
    of the size, the retrieval time and the UIDL; the base name is percent-encoded, the time is
    in whole POSIX seconds, and the UIDL the message keeps (R22) is C{own} when it is the one
    derived from the base name (see L{ownUidl}), else C{uidl=} followed by it.  Version 2 is
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
    entries: dict[str, Entry] = {}
    uidls: set[bytes] = set()
    fullmatch = entryFormat.fullmatch
    for line in lines:
        entry = fullmatch(line)
        if entry is None:
            return None
        # Versions 1 and 2 have fewer groups: the missing ones are absent fields.
        size, name, retrieved, saved = (entry.groups() + (None, None))[:4]
        if size == b"-" and retrieved is None and saved is None:
            return None
        if b"%" in name:
            name = unquote_to_bytes(name)
            if _NOT_BASE_NAME.search(name):
                return None
        elif name.startswith(b"."):
            # [!-~] has no NUL; / and : are always encoded.
            return None
        elif b"/" in name or b":" in name:
            return None
        baseName = name.decode(_FS_ENCODING, _FS_ERRORS)
        if baseName in entries:
            return None
        uidl = None
        if saved is not None:
            uidl = ownUidl(baseName) if saved == _OWN_UIDL else saved[len(_SAVED_UIDL) :]
            if uidl in uidls:
                return None
            uidls.add(uidl)
        entries[baseName] = Entry(
            None if size == b"-" else int(size),
            None if retrieved is None else int(retrieved),
            uidl,
        )
    return entries


def formatIndex(entries: dict[str, Entry]) -> bytes:
    """
    @return: the content of an index of C{entries}: see L{parseIndex}.  It is of version 2
        when no entry saves a UIDL, so that a Maildir never migrated stays readable by older
        popds, else of version 3.  Entries that save nothing are left out.
    """
    names = sorted(entries)
    values = list(map(entries.__getitem__, names))
    return formatIndexColumns(
        names,
        list(map(itemgetter(0), values)),
        list(map(itemgetter(1), values)),
        list(map(itemgetter(2), values)),
    )


def formatIndexColumns(
    names: Sequence[str],
    sizes: Sequence[int | None],
    retrieved: Sequence[int | None],
    uidls: Sequence[bytes | None],
) -> bytes:
    """
    L{formatIndex}, of entries given as columns.

    @param names: the base names, sorted.
    @param sizes: the L{Entry.size} of each.
    @param retrieved: the L{Entry.retrievedAt} of each.
    @param uidls: the L{Entry.uidl} of each.
    """
    if None in sizes:
        keep = [
            position
            for position, (size, retrievedAt, uidl) in enumerate(
                zip(sizes, retrieved, uidls, strict=True)
            )
            if size is not None or retrievedAt is not None or uidl is not None
        ]
        if len(keep) != len(names):
            names = [names[position] for position in keep]
            sizes = [sizes[position] for position in keep]
            retrieved = [retrieved[position] for position in keep]
            uidls = [uidls[position] for position in keep]
    joined = "\n".join(names).encode(_FS_ENCODING, _FS_ERRORS)
    encoded = joined.split(b"\n")
    if len(encoded) != len(names) or joined.translate(None, _UNQUOTED):
        encoded = [
            quote_from_bytes(name.encode(_FS_ENCODING, _FS_ERRORS), _INDEX_SAFE).encode("ascii")
            for name in names
        ]
    header = _INDEX_HEADER_2
    if retrieved.count(None) == len(names) and uidls.count(None) == len(names):
        # Sizes only (each one there, from the check above), as most indexes have.
        body = b"".join(map(b"%d %s\n".__mod__, zip(sizes, encoded, strict=True)))
    else:
        lines = []
        for name, size, retrievedAt, uidl, quoted in zip(
            names, sizes, retrieved, uidls, encoded, strict=True
        ):
            line = b"%s %s" % (b"-" if size is None else b"%d" % (size,), quoted)
            if retrievedAt is not None:
                line += b" %d" % (retrievedAt,)
            if uidl is not None:
                header = _INDEX_HEADER
                line += b" " + (_OWN_UIDL if uidl == ownUidl(name) else _SAVED_UIDL + uidl)
            lines.append(line + b"\n")
        body = b"".join(lines)
    content = header + body
    digest = sha256(content).hexdigest().encode("ascii")
    return content + b"end %d %s\n" % (len(names), digest)


# The listing cache.

LISTING_FILE = "popd-listing"

#: The flags of a row: its size is saved in the index (it had to be computed), its UIDL is.
SIZE_SAVED = 1
UIDL_SAVED = 2


class Stamp(NamedTuple):
    """
    What changes when a directory does: creating, removing or renaming an entry in it sets its
    modification and change times, and a directory put in its place has another inode.  The
    change time cannot be set back, even by the directory's owner.

    @ivar inode: C{st_ino}.
    @ivar modified: C{st_mtime_ns}.
    @ivar changed: C{st_ctime_ns}.
    """

    inode: int
    modified: int
    changed: int


#: The stamp of a directory that could not be read: a listing with it is never reused.
NO_STAMP = Stamp(0, 0, 0)


class Rows:
    """
    The messages of a listing, in listing order, one column per field.

    The columns that a listing reused as it is does not need (base names, infos, delivery
    times) can be given encoded, as L{formatListing} writes them, and are decoded when first
    used.

    @ivar places: C{n} or C{c} for each message: in C{new/} or C{cur/}.
    @ivar sizes: each message's size as transmitted.
    @ivar retrieved: when each message was first retrieved (whole POSIX seconds), or L{None}.
    @ivar uidls: each message's UIDL, as listed.
    @ivar flags: each message's L{SIZE_SAVED} and L{UIDL_SAVED} flags, one octet each: what the
        index holds of it.  The index also holds the retrieval times that are not L{None}.
    """

    __slots__ = (
        "_bases",
        "_infos",
        "_delivered",
        "_encoded",
        "places",
        "sizes",
        "retrieved",
        "uidls",
        "flags",
    )

    def __init__(
        self,
        bases: list[str] | bytes,
        infos: list[str] | bytes,
        places: bytes,
        delivered: list[int] | bytes,
        sizes: list[int],
        retrieved: list[int | None],
        uidls: list[bytes],
        flags: bytes,
    ) -> None:
        """
        @param bases: each message's base name.
        @param infos: what follows each base name in its file name (C{:2,S}, or C{""}).
        @param delivered: each message's delivery time, the first key of the listing order.
        """
        self._bases = bases
        self._infos = infos
        self._delivered = delivered
        # The columns given encoded, kept to be written again as they are: never changed.
        self._encoded = (
            bases if isinstance(bases, bytes) else None,
            infos if isinstance(infos, bytes) else None,
            delivered if isinstance(delivered, bytes) else None,
        )
        self.places = places
        self.sizes = sizes
        self.retrieved = retrieved
        self.uidls = uidls
        self.flags = flags

    @property
    def bases(self) -> list[str]:
        """
        Each message's base name.
        """
        if isinstance(self._bases, bytes):
            self._bases = _decodeNames(self._bases)
        return self._bases

    @property
    def infos(self) -> list[str]:
        """
        What follows each message's base name in its file name: C{""}, or C{:} and flags.
        """
        if isinstance(self._infos, bytes):
            self._infos = _decodeNames(self._infos)
        return self._infos

    @property
    def delivered(self) -> list[int]:
        """
        Each message's delivery time: see L{popd.maildir.Maildir}.
        """
        if isinstance(self._delivered, bytes):
            self._delivered = list(map(int, self._delivered.split())) if self.sizes else []
        return self._delivered

    def __len__(self) -> int:
        return len(self.sizes)

    def encoded(self) -> tuple[bytes, bytes, bytes]:
        """
        @return: the base names, infos and delivery times, encoded as L{formatListing} writes
            them.
        """
        bases, infos, delivered = self._encoded
        return (
            _encodeNames(self.bases) if bases is None else bases,
            _encodeNames(self.infos) if infos is None else infos,
            " ".join(map(str, self.delivered)).encode("ascii") if delivered is None else delivered,
        )

    def take(self, indices: Sequence[int]) -> Rows:
        """
        @return: the rows at C{indices}, in that order.
        """
        if len(indices) == len(self) and all(map(int.__eq__, indices, range(len(self)))):
            return self
        if not indices:
            return Rows([], [], b"", [], [], [], [], b"")

        def pick(column: Sequence[_T]) -> list[_T]:
            if len(indices) == 1:
                return [column[indices[0]]]
            return list(itemgetter(*indices)(column))

        return Rows(
            pick(self.bases),
            pick(self.infos),
            bytes(pick(self.places)),
            pick(self.delivered),
            pick(self.sizes),
            pick(self.retrieved),
            pick(self.uidls),
            bytes(pick(self.flags)),
        )

    def of(self, place: str) -> tuple[list[str], list[str]]:
        """
        @return: the base names and infos of the rows in C{new/} (C{place} C{"n"}) or C{cur/}
            (C{"c"}).
        """
        selector = self.places.translate(_SELECTORS[place])
        return list(compress(self.bases, selector)), list(compress(self.infos, selector))


_SELECTORS = {
    place: bytes(int(octet == ord(place)) for octet in range(256)) for place in ("n", "c")
}


def _encodeNames(names: Sequence[str]) -> bytes:
    """
    @return: C{names}, encoded as the file system encodes them, each followed by a NUL.
    """
    if not names:
        return b""
    return "\0".join(names).encode(_FS_ENCODING, _FS_ERRORS) + b"\0"


def _decodeNames(block: bytes) -> list[str]:
    """
    @return: the names that L{_encodeNames} encoded in C{block}.
    """
    if not block:
        return []
    return block[:-1].decode(_FS_ENCODING, _FS_ERRORS).split("\0")


@dataclass(frozen=True)
class ListingCache:
    """
    A listing as a session took it, and what it agrees with.

    @ivar index: the SHA-256 of the content of the index when the listing was taken, or
        C{b""} when there was no index: the listing's saved sizes, retrieval times and UIDLs
        are the index's.
    @ivar new: the stamp of C{new/} before it was read.
    @ivar newClean: whether the listing may be reused for C{new/} while it has that stamp:
        C{new/} had last changed long enough before it was read (see L{popd.maildir}).
    @ivar cur: the stamp of C{cur/} before it was read.
    @ivar curClean: as C{newClean}, for C{cur/}.
    @ivar rows: the listed messages.
    @ivar orphans: base names the index has entries for that are not listed.
    """

    index: bytes
    new: Stamp
    newClean: bool
    cur: Stamp
    curClean: bool
    rows: Rows
    orphans: frozenset[str]


_LISTING_HEADER = b"popd-listing 1\n"
_TIME = rb"(-?[0-9]{1,20})"
# The count of rows and of orphans, the index digest, the stamp and cleanliness of new/ and of
# cur/, and the length of each block.
_LISTING_FIELDS = re.compile(
    rb"([0-9]{1,10}) ([0-9]{1,10}) (-|[0-9a-f]{64})"
    rb" ([0-9]{1,20}) %s %s ([01]) ([0-9]{1,20}) %s %s ([01])"
    rb" ([0-9]{1,12}(?: [0-9]{1,12}){8})\n" % (_TIME, _TIME, _TIME, _TIME)
)
_LISTING_TRAILER = re.compile(rb"end ([0-9a-f]{64})\n")
_TRAILER_LENGTH = len(b"end \n") + 64
# Enough for the version and field lines.
_HEAD_LENGTH = 4096
_DIGITS = b"0123456789"
_FLAGS = bytes((0, SIZE_SAVED, UIDL_SAVED, SIZE_SAVED | UIDL_SAVED))
_INTEGERS = re.compile(rb"-?[0-9]+(?: -?[0-9]+)*")
_BAD_INFO = re.compile(rb"\0[^:\0]")
# Sizes are 64-bit signed integers, little-endian.
_SIZE_TYPE = "q"
_SIZE_OCTETS = array(_SIZE_TYPE).itemsize
_SWAP = sys.byteorder != "little"


def formatListing(cache: ListingCache) -> bytes:
    """
    @return: the content of a listing cache: see L{parseListing}.
    @raise OverflowError: a size is not below 2**63: the listing cannot be saved.
    """
    rows = cache.rows
    sizes = array(_SIZE_TYPE, rows.sizes)
    if _SWAP:
        sizes.byteswap()
    if rows.retrieved.count(None) == len(rows):
        retrieved = (b"- " * len(rows))[:-1]
    else:
        retrieved = b" ".join(
            [b"-" if time is None else b"%d" % (time,) for time in rows.retrieved]
        )
    bases, infos, delivered = rows.encoded()
    blocks = [
        bases,
        infos,
        rows.places,
        delivered,
        sizes.tobytes(),
        retrieved,
        b"\n".join(rows.uidls),
        rows.flags,
        _encodeNames(sorted(cache.orphans)),
    ]
    fields = b"%d %d %s %d %d %d %d %d %d %d %d %s\n" % (
        len(rows),
        len(cache.orphans),
        cache.index.hex().encode("ascii") if cache.index else b"-",
        *cache.new,
        cache.newClean,
        *cache.cur,
        cache.curClean,
        b" ".join(b"%d" % (len(block),) for block in blocks),
    )
    content = _LISTING_HEADER + fields + b"".join(blocks)
    return content + b"end %s\n" % (sha256(content).hexdigest().encode("ascii"),)


def listingDigest(content: bytes) -> bytes:
    """
    @return: the digest of the content of a listing cache made by L{formatListing}, as
        L{readListing} gives it.
    """
    return bytes.fromhex(content[-_TRAILER_LENGTH + len(b"end ") : -1].decode("ascii"))


def parseListing(data: bytes) -> ListingCache | None:
    """
    Parse the content of a listing cache: see L{readListing}.

    @return: the cache, or L{None} when C{data} is not a valid one.
    """
    read = readListing(lambda offset, length: data[offset : offset + length], len(data))
    return None if read is None else read[0]


def readListing(read: Callable[[int, int], bytes], size: int) -> tuple[ListingCache, bytes] | None:
    """
    Read and parse a listing cache, block by block.

    The format is a version line; a line of fields: the number of rows and of orphans, the
    index's SHA-256 in hex (C{-} for none), the inode, modification and change times and
    cleanliness (C{0} or C{1}) of C{new/} then of C{cur/}, and the length of each block; then
    the blocks: one per column of L{Rows} (base names, infos, places, delivery times, sizes,
    retrieval times, UIDLs, flags), then one of orphans; then C{end <sha256>} where the hash
    covers all that precedes it.  Names are encoded as the file system encodes them, each
    followed by a NUL; sizes are 64-bit little-endian integers; other numbers are decimal and
    separated by spaces, C{-} for no retrieval time; UIDLs are separated by line feeds; places
    and flags are one octet each.

    Anything that does not fit rejects the whole file, including a name that no file of a
    Maildir can have (the cache names files to open and remove: a C{/} in a name must never
    reach a path), two messages with one UIDL, and a UIDL that POP3 does not allow.  The checks
    are made with operations on whole blocks, so that checking and decoding what a listing
    reused as it is needs costs milliseconds for 50,000 messages.  (Two messages with one base
    name are only seen when the names are decoded: see L{popd.maildir}.)

    @param read: gives the C{length} octets at C{offset} in the file (fewer only at its end).
    @param size: the size of the file.
    @return: the cache and the SHA-256 of the file's content, or L{None} when it is not a
        valid one.
    """
    if size < len(_LISTING_HEADER) + _TRAILER_LENGTH:
        return None
    head = read(0, min(size, _HEAD_LENGTH))
    fields = _LISTING_FIELDS.match(head, len(_LISTING_HEADER))
    if not head.startswith(_LISTING_HEADER) or fields is None:
        return None
    lengths = [int(length) for length in fields.group(12).split(b" ")]
    offset = fields.end()
    if offset + sum(lengths) + _TRAILER_LENGTH != size:
        return None
    digest = sha256(head[:offset])
    blocks = []
    for length in lengths:
        block = read(offset, length)
        if len(block) != length:
            return None
        digest.update(block)
        blocks.append(block)
        offset += length
    trailer = _LISTING_TRAILER.fullmatch(read(offset, _TRAILER_LENGTH))
    if trailer is None or digest.hexdigest().encode("ascii") != trailer.group(1):
        return None
    count, orphanCount = int(fields.group(1)), int(fields.group(2))
    rows = _parseRows(count, *blocks[:-1])
    orphans = blocks[-1]
    if rows is None or not _validNames(orphans, orphanCount):
        return None
    index = fields.group(3)
    cache = ListingCache(
        b"" if index == b"-" else bytes.fromhex(index.decode("ascii")),
        Stamp(int(fields.group(4)), int(fields.group(5)), int(fields.group(6))),
        fields.group(7) == b"1",
        Stamp(int(fields.group(8)), int(fields.group(9)), int(fields.group(10))),
        fields.group(11) == b"1",
        rows,
        frozenset(_decodeNames(orphans)),
    )
    return cache, digest.digest()


def _parseRows(
    count: int,
    bases: bytes,
    infos: bytes,
    places: bytes,
    delivered: bytes,
    sizes: bytes,
    retrieved: bytes,
    uidls: bytes,
    flags: bytes,
) -> Rows | None:
    """
    Check and parse the blocks of the C{count} rows of a listing cache.  Base names, infos and
    delivery times are checked here and decoded when first used.
    """
    if (
        not _validNames(bases, count)
        or infos.count(b"\0") != count
        or (count and not infos.endswith(b"\0"))
        or b"/" in infos
        or _BAD_INFO.search(b"\0" + infos[:-1]) is not None
        or len(places) != count
        or places.translate(None, b"nc")
        or len(flags) != count
        or flags.translate(None, _FLAGS)
        or len(sizes) != count * _SIZE_OCTETS
        or not _numbers(delivered.replace(b"-", b""), count)
        or (b"-" in delivered and not _INTEGERS.fullmatch(delivered))
    ):
        return None
    sizeArray = array(_SIZE_TYPE, sizes)
    if _SWAP:
        sizeArray.byteswap()
    if count and min(sizeArray) < 0:
        return None
    retrievedList: list[int | None]
    if retrieved == (b"- " * count)[:-1]:
        retrievedList = [None] * count
    else:
        # Checked as numbers with each - as a 0, then each - must be a whole field.
        parts = retrieved.split(b" ")
        if not _numbers(retrieved.replace(b"-", b"0"), count) or retrieved.count(
            b"-"
        ) != parts.count(b"-"):
            return None
        retrievedList = [None if part == b"-" else int(part) for part in parts]
    uidlList = uidls.split(b"\n") if uidls else []
    if (
        len(uidlList) != count
        or uidls.translate(None, _PRINTABLE_LINES)
        or b"" in uidlList
        or (count and max(map(len, uidlList)) > 70)
        or len(set(uidlList)) != count
    ):
        return None
    return Rows(bases, infos, places, delivered, sizeArray.tolist(), retrievedList, uidlList, flags)


def _validNames(block: bytes, count: int) -> bool:
    """
    @return: whether C{block} is C{count} Maildir base names, each followed by a NUL: none has a
        C{/} or C{:}, and none starts with a dot.
    """
    return (
        block.count(b"\0") == count
        and (count == 0 or block.endswith(b"\0"))
        and b"/" not in block
        and b":" not in block
        and not block.startswith(b".")
        and b"\0." not in block
    )


def _numbers(block: bytes, count: int) -> bool:
    """
    @return: whether C{block} is C{count} decimal numbers separated by single spaces.
    """
    if count == 0:
        return not block
    return (
        block.count(b" ") == count - 1
        and not block.translate(None, _DIGITS + b" ")
        and b"  " not in block
        and not block.startswith(b" ")
        and not block.endswith(b" ")
    )
