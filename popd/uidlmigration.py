"""
The UIDLs that Dovecot and Courier handed out, read from the files they keep in a Maildir, so
that clients of a server popd replaces do not download every message again (rule R22).

Parsing only: L{popd.maildir} decides when to read the files, and saves what it chose.

A migration source is C{"courier"}, C{"dovecot"}, or C{"dovecot:FORMAT"} for a Dovecot whose
C{pop3_uidl_format} was not its default, C{%08Xu%08Xv}.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

DOVECOT = "dovecot"
COURIER = "courier"

#: The file each server keeps in the Maildir root, by the name of the server.
FILES = {DOVECOT: "dovecot-uidlist", COURIER: "courierpop3dsizelist"}

_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()
_VALID_UIDL = re.compile(rb"[!-~]{1,70}")

_MAX_UINT32 = 2**32 - 1
_MAX_ULONG = 2**64 - 1
_DECIMAL = re.compile(rb"[0-9]{1,20}")
_DOVECOT_V1_HEADER = re.compile(rb"1 ([0-9]{1,20}) ([0-9]{1,20})")
# Dovecot's extension keys: a capital letter, then the value.
_DOVECOT_KEYS = re.compile(rb"[A-Z]")
_COURIER_HEADER = re.compile(rb"/([0-9]{1,20}) ([0-9]{1,20})(?: ([0-9]{1,20}))?")
# As Courier reads it: the file name is all before the last two spaces; the UTF-8 flag of
# version 3 is optional in both versions.
_COURIER_RECORD = re.compile(
    rb"(.+) ([0-9]{1,20}) ([0-9]{1,20}):([0-9]{1,20})(?::[0-9]{1,10})?", re.DOTALL
)
_COURIER_VERSIONS = frozenset({b"2", b"3"})


# Dovecot's default pop3_uidl_format.
_DOVECOT_DEFAULT_FORMAT = "%08Xu%08Xv"
# A variable of a pop3_uidl_format, of the forms popd reads: an optional width (the value is
# padded with zeros to it when it starts with 0, else cut to it), modifiers, and a key.
_FORMAT_VARIABLE = re.compile(r"%(?:(0?)([1-9][0-9]*))?([LUX]*)([uvfg])")


@dataclass(frozen=True)
class _Variable:
    """
    A variable of a C{pop3_uidl_format}: see L{compileFormat}.
    """

    key: str
    modifiers: str
    width: int | None
    zeroPadded: bool


_Format = tuple["bytes | _Variable", ...]


def compileFormat(format: str) -> _Format:
    """
    Read a Dovecot C{pop3_uidl_format}, of the variables that a Maildir's C{dovecot-uidlist}
    tells: C{%u} (the IMAP UID), C{%v} (the UIDVALIDITY), C{%f} (the base file name) and C{%g}
    (the message's GUID, which is its base file name unless the record has a C{G} field), and
    C{%%}; each with the modifiers C{L} (lower case), C{U} (upper case) and C{X} (hex, of C{%u}
    and C{%v}), after a width: C{%08Xu} is padded with zeros to 8, C{%3f} cut to 3.  Checked
    against Dovecot 2.3.

    @raise ValueError: C{format} has anything else, such as C{%m} (a digest of the headers).
    """
    pieces: list[bytes | _Variable] = []
    position = 0
    while (start := format.find("%", position)) != -1:
        if start > position:
            pieces.append(format[position:start].encode("ascii"))
        if format.startswith("%%", start):
            pieces.append(b"%")
            position = start + 2
            continue
        match = _FORMAT_VARIABLE.match(format, start)
        if match is None or ("X" in match.group(3) and match.group(4) in "fg"):
            raise ValueError(
                f"pop3_uidl_format {format!r}: popd reads %u, %v, %f, %g and %%, with a width "
                f"and the modifiers L, U and X (X of %u and %v), not {format[start:]!r}"
            )
        zero, width, modifiers, key = match.groups()
        pieces.append(_Variable(key, modifiers, int(width) if width else None, bool(zero)))
        position = match.end()
    if position < len(format):
        pieces.append(format[position:].encode("ascii"))
    return tuple(pieces)


def _expand(format: _Format, uid: int, uidValidity: int, baseName: bytes, guid: bytes) -> bytes:
    """
    @return: the UIDL that Dovecot's C{pop3_uidl_format} C{format} gives a message.
    """
    values = {"u": b"%d" % (uid,), "v": b"%d" % (uidValidity,), "f": baseName, "g": guid}
    expanded = []
    for piece in format:
        if isinstance(piece, bytes):
            expanded.append(piece)
            continue
        value = values[piece.key]
        for modifier in piece.modifiers:
            if modifier == "X":
                value = b"%x" % (int(value),)
            elif modifier == "L":
                value = value.lower()
            else:
                value = value.upper()
        if piece.width is not None:
            value = value.rjust(piece.width, b"0") if piece.zeroPadded else value[: piece.width]
        expanded.append(value)
    return b"".join(expanded)


class LegacyFormatError(Exception):
    """
    A legacy UIDL file that is not as its server writes it.

    @ivar line: the number of the first line found wrong, from 1.
    @ivar reason: what is wrong with it.
    """

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(line, reason)
        self.line = line
        self.reason = reason


def _completeLines(data: bytes) -> list[bytes]:
    """
    @return: the lines of C{data} that end with a newline, without it.  A last line without
        one may be a record that its server is still appending: it is left out, as Courier
        leaves it out, rather than read cut.
    """
    return data.split(b"\n")[:-1]


def _decodeName(name: bytes) -> str:
    """
    @return: the file name C{name} as L{os.scandir} gives it.
    """
    return name.decode(_FS_ENCODING, _FS_ERRORS)


def _validUidls(uidls: dict[str, bytes]) -> tuple[dict[str, bytes], int]:
    """
    @return: the UIDLs of C{uidls} that POP3 allows (1 to 70 octets in 0x21-0x7E), and how
        many others were left out.
    """
    valid = {name: uidl for name, uidl in uidls.items() if _VALID_UIDL.fullmatch(uidl)}
    return valid, len(uidls) - len(valid)


def _parseDovecot(data: bytes, format: _Format) -> tuple[dict[str, bytes], int]:
    """
    Parse a C{dovecot-uidlist} and compute the POP3 UIDL that Dovecot gave each message (R22).

    Version 1 (Dovecot 1.0) has the header C{1 <uidvalidity> <nextuid>} and the records
    C{<uid> <file name>}.  Version 3 (Dovecot 1.1 and later) has the header C{3} then fields of
    a key letter and a value in any order, of which C{V<uidvalidity>} and C{N<nextuid>} are
    required, and the records C{<uid> [<key><value> ...] :<file name>}, whose keys are capital
    letters.  UIDs increase from line to line.  The file name may carry flags, old ones or none:
    its base name identifies the message.  When two records name one base name, the later one
    counts, as for Dovecot.

    The UIDL is the record's C{P} extension when it has one (written by C{pop3_save_uidl}; when
    empty it means the base name), else what C{format} gives (see L{compileFormat}).  Dovecot's
    default, C{%08Xu%08Xv}, gives the UID then the UIDVALIDITY, each as at least 8 lower-case
    hex digits (Dovecot's C{X} prints hex in lower case: C{000000016b02839d}).

    @return: the UIDL of each base name, leaving out those POP3 does not allow, and how many
        were left out.
    @raise LegacyFormatError: a line is not as Dovecot writes it: the whole file is suspect.
    """
    lines = _completeLines(data)
    if not lines:
        raise LegacyFormatError(1, "no header")
    header = lines[0]
    if header.startswith(b"1 "):
        version = 1
        match = _DOVECOT_V1_HEADER.fullmatch(header)
        if match is None:
            raise LegacyFormatError(1, "not a header of version 1")
        values = [match.group(1), match.group(2)]
    elif header.startswith(b"3 "):
        version = 3
        fields = {field[:1]: field[1:] for field in header[2:].split(b" ") if field}
        values = [fields.get(b"V", b""), fields.get(b"N", b"")]
        if not all(_DECIMAL.fullmatch(value) for value in values):
            raise LegacyFormatError(1, "no UIDVALIDITY or next UID in the header")
    else:
        raise LegacyFormatError(1, "not version 1 or 3")
    uidValidity, nextUid = (int(value) for value in values)
    if not (0 < uidValidity <= _MAX_UINT32 and 0 < nextUid <= _MAX_UINT32):
        raise LegacyFormatError(1, "UIDVALIDITY or next UID out of range")
    uidls: dict[str, bytes] = {}
    previous = 0
    for number, line in enumerate(lines[1:], 2):
        text, space, rest = line.partition(b" ")
        if not space or not _DECIMAL.fullmatch(text):
            raise LegacyFormatError(number, "no UID")
        uid = int(text)
        if not previous < uid < _MAX_UINT32 or (version == 1 and uid >= nextUid):
            raise LegacyFormatError(number, "UID out of order or range")
        previous = uid
        rest = rest.lstrip(b" ")
        pop3: bytes | None = None
        guid: bytes | None = None
        if version == 3:
            while rest and not rest.startswith(b":"):
                field, _, rest = rest.partition(b" ")
                rest = rest.lstrip(b" ")
                if not _DOVECOT_KEYS.fullmatch(field[:1]):
                    raise LegacyFormatError(number, "bad extension field")
                if field[:1] == b"P" and pop3 is None:
                    pop3 = field[1:]
                elif field[:1] == b"G" and guid is None:
                    guid = field[1:]
            if not rest:
                raise LegacyFormatError(number, "no file name")
            rest = rest[1:]
        baseName = rest.partition(b":")[0]
        if not baseName or b"/" in rest:
            raise LegacyFormatError(number, "bad file name")
        if pop3 is None:
            uidl = _expand(format, uid, uidValidity, baseName, guid or baseName)
        else:
            uidl = pop3 or baseName
        uidls[_decodeName(baseName)] = uidl
    return _validUidls(uidls)


def _parseCourier(data: bytes) -> tuple[dict[str, bytes], int]:
    """
    Parse a C{courierpop3dsizelist} and compute the POP3 UIDL that Courier gave each message
    (R22), as Courier's C{pop3dserver.c} reads it.

    The header is C{/<version> <nextuid> <uidv>}, of version 2 or 3.  A record is C{<file name>
    <size> <uid>:<uidv>}, followed by C{:<UTF-8 flag>} in version 3.  The file name carries
    flags: its base name identifies the message.  The UIDL is C{UID<uid>-<uidv>}, or
    C{UID<uid>} when C{uidv} is 0.  Records in another form, or with the UID 0, are skipped as
    Courier skips them.  When two records name one base name, which one Courier used depends on
    its sort: neither is used.

    @return: the UIDL of each base name, and how many records were skipped or left out.
    @raise LegacyFormatError: the header is not as Courier writes it, or of another version
        (Courier rewrites files of versions 0 and 1 with new UIDLs when it reads them).
    """
    lines = _completeLines(data)
    header = _COURIER_HEADER.fullmatch(lines[0]) if lines else None
    if header is None or header.group(1) not in _COURIER_VERSIONS:
        raise LegacyFormatError(1, "not a header of version 2 or 3")
    uidls: dict[str, bytes] = {}
    duplicates: set[str] = set()
    skipped = 0
    for line in lines[1:]:
        record = _COURIER_RECORD.fullmatch(line)
        if record is None:
            skipped += 1
            continue
        fileName, _, uidText, uidvText = record.groups()
        baseName = fileName.partition(b":")[0]
        uid, uidv = int(uidText), int(uidvText)
        if not baseName or b"/" in fileName or not 0 < uid <= _MAX_ULONG or uidv > _MAX_ULONG:
            skipped += 1
            continue
        name = _decodeName(baseName)
        if name in duplicates:
            skipped += 1
        elif name in uidls:
            del uidls[name]
            duplicates.add(name)
            skipped += 2
        else:
            uidls[name] = b"UID%d-%d" % (uid, uidv) if uidv else b"UID%d" % (uid,)
    valid, invalid = _validUidls(uidls)
    return valid, skipped + invalid


def _server(source: str) -> tuple[str, _Format | None]:
    """
    @return: the server of the migration source C{source}, and the C{pop3_uidl_format} it
        gives for Dovecot.
    @raise ValueError: C{source} is none of those of this module's docstring.
    """
    server, colon, format = source.partition(":")
    if server == COURIER and not colon:
        return server, None
    if server == DOVECOT:
        return server, compileFormat(format if colon else _DOVECOT_DEFAULT_FORMAT)
    raise ValueError(
        f"Unknown UIDL migration {source!r}: use {DOVECOT!r}, {DOVECOT + ':FORMAT'!r} "
        f"(its pop3_uidl_format) or {COURIER!r}"
    )


def checkSource(source: str | None) -> None:
    """
    @raise ValueError: C{source} is not L{None} nor a migration source (see this module).
    """
    if source is not None:
        _server(source)


def fileOf(source: str) -> str:
    """
    @return: the name of the file that the server of C{source} keeps in the Maildir root.
    """
    return FILES[_server(source)[0]]


def parse(source: str, data: bytes) -> tuple[dict[str, bytes], int]:
    """
    Parse the content of the file of the server of C{source}.

    @return: the UIDL of each base name, and how many records were left out.
    @raise LegacyFormatError: the file is not as its server writes it.
    """
    server, format = _server(source)
    if format is None:
        return _parseCourier(data)
    return _parseDovecot(data, format)
