"""
Checks of the TRANSACTION state (rules R16-R22): numbering, STAT, LIST, sizes, deletion marks,
TOP and UIDL.  Expectations come from what the server itself sent: a message's size must match
what C{RETR} delivered, C{TOP} must agree with C{RETR}, unique-ids with each other.
"""

from __future__ import annotations

import re

from popd.conformance._client import show, splitLines, unstuff
from popd.conformance._context import (
    Context,
    Fail,
    Maildrop,
    Session,
    Skip,
    Verdict,
    check,
    failed,
    parseScanListing,
    parseStat,
    parseUniqueIds,
    passed,
)

_UNIQUE_ID = re.compile(rb"[\x21-\x7e]{1,70}\Z")


def _maildrop(context: Context) -> Maildrop:
    """
    @raise Skip: the main maildrop is empty.
    """
    maildrop = context.maildrop()
    if not maildrop.sizes:
        raise Skip("the main maildrop is empty; it needs at least one message")
    return maildrop


def _uids(context: Context) -> dict[int, bytes]:
    """
    @raise Skip: UIDL is not offered.
    """
    uids = context.maildrop().uids
    if uids is None:
        raise Skip("UIDL is not offered")
    if not uids:
        raise Skip("the main maildrop is empty; it needs at least one message")
    return uids


def _smallest(session: Session) -> tuple[int, int, int]:
    """
    Read C{STAT} and C{LIST} in C{session}.

    @return: the message count, and the number and size of the smallest message.
    @raise Skip: the maildrop is empty.
    """
    count, _ = session.stat()
    reply, body = session.multiline(b"LIST")
    if body is None:
        raise Fail(f"LIST -> {reply}")
    sizes, _ = parseScanListing(body)
    if not count or not sizes:
        raise Skip("the maildrop is empty; it needs at least one message")
    number = min(sizes, key=lambda n: sizes[n])
    return count, number, sizes[number]


def _expect(session: Session, line: bytes, ok: bool) -> None:
    """
    Send a command and require C{+OK} or C{-ERR}, reading a multi-line answer in full.

    @raise Fail: the answer is the other one.
    """
    keyword = line.split(b" ", 1)[0].upper()
    multiline = keyword in (b"RETR", b"TOP") or (keyword in (b"LIST", b"UIDL") and b" " not in line)
    if multiline:
        reply, _ = session.multiline(line)
    else:
        reply = session.command(line)
    if reply.ok != ok:
        raise Fail(f"{show(line)} -> {reply}")


@check(16, "numbering")
def numbering(context: Context) -> Verdict:
    """
    Messages are numbered 1 to n in decimal, in the scan listing and in C{LIST n} (RFC 1939
    sections 4 and 5).
    """
    maildrop = _maildrop(context)
    if maildrop.malformed:
        return failed(f"LIST line {show(maildrop.malformed[0])!r} is not 'number size'")
    numbers = list(maildrop.sizes)
    if numbers != list(range(1, len(numbers) + 1)):
        return failed(f"LIST numbers are {numbers[:10]}, not 1 to {len(numbers)}")
    with context.session() as session:
        for number in numbers[:3]:
            reply = session.command(b"LIST %d" % (number,))
            expected = b"%d %d" % (number, maildrop.sizes[number])
            if not reply.ok or reply.text.split(b" ")[:2] != expected.split(b" "):
                return failed(f"LIST {number} -> {reply}; the scan listing says {show(expected)}")
    return passed(f"{len(numbers)} messages numbered 1 to {len(numbers)}; LIST n agrees")


@check(17, "statFormat")
def statFormat(context: Context) -> Verdict:
    """
    C{STAT} answers C{+OK nn mm}, nn being the number of messages in the scan listing
    (RFC 1939 section 5).
    """
    maildrop = context.maildrop()
    count, _ = parseStat(maildrop.stat)
    if count != len(maildrop.sizes):
        return failed(f"STAT says {count} messages, LIST lists {len(maildrop.sizes)}")
    return passed(f"{maildrop.stat}")


@check(17, "statAfterDele")
def statAfterDele(context: Context) -> Verdict:
    """
    Messages marked with C{DELE} count in neither of C{STAT}'s totals (RFC 1939 section 5).
    """
    with context.markingSession() as session:
        count, number, size = _smallest(session)
        _, total = session.stat()
        _expect(session, b"DELE %d" % (number,), True)
        after = session.stat()
    if after != (count - 1, total - size):
        return failed(
            f"STAT went from {count} {total} to {after[0]} {after[1]} after DELE of a "
            f"{size}-octet message"
        )
    return passed(f"STAT {count} {total}, then {after[0]} {after[1]} after DELE {number}")


@check(18, "deletedMessage")
def deletedMessage(context: Context) -> Verdict:
    """
    A message marked deleted leaves the scan listings of C{LIST} and C{UIDL}, and C{LIST n},
    C{RETR n}, C{TOP n}, C{UIDL n} and C{DELE n} on it are answered C{-ERR} (RFC 1939 section 5).
    """
    with context.markingSession() as session:
        _, number, _ = _smallest(session)
        _expect(session, b"DELE %d" % (number,), True)
        reply, body = session.multiline(b"LIST")
        if body is None:
            return failed(f"LIST -> {reply}")
        if number in parseScanListing(body)[0]:
            return failed(f"LIST still lists message {number} after DELE {number}")
        lines = [b"LIST %d", b"RETR %d"]
        if context.offers(b"TOP"):
            lines.append(b"TOP %d 0")
        if context.offers(b"UIDL"):
            lines.append(b"UIDL %d")
            reply, body = session.multiline(b"UIDL")
            if body is None:
                return failed(f"UIDL -> {reply}")
            if number in parseUniqueIds(body):
                return failed(f"UIDL still lists message {number} after DELE {number}")
        lines.append(b"DELE %d")
        for line in lines:
            _expect(session, line % (number,), False)
    names = ", ".join(show(line.split()[0]) for line in lines)
    return passed(f"message {number} left the listings; -ERR for {names} on it")


@check(18, "nonexistentMessage")
def nonexistentMessage(context: Context) -> Verdict:
    """
    C{LIST n}, C{RETR n}, C{TOP n}, C{UIDL n} and C{DELE n} beyond the last message are
    answered C{-ERR} (RFC 1939 section 5).
    """
    with context.markingSession() as session:
        count, _ = session.stat()
        lines = [b"LIST %d", b"RETR %d"]
        if context.offers(b"TOP"):
            lines.append(b"TOP %d 0")
        if context.offers(b"UIDL"):
            lines.append(b"UIDL %d")
        lines.append(b"DELE %d")
        for line in lines:
            _expect(session, line % (count + 1,), False)
    return passed(
        f"-ERR for message {count + 1} of {count}: "
        + ", ".join(show(line.split()[0]) for line in lines)
    )


@check(19, "octetsReceived")
def octetsReceived(context: Context) -> Verdict:
    """
    A message's size in the scan listing is the number of octets C{RETR} sends for it, line
    ends counted as CRLF, byte-stuffing dots not counted (RFC 1939 sections 5 and 11).
    """
    maildrop = _maildrop(context)
    checked = refused = 0
    wrong = []
    for message in maildrop.messages.values():
        if message.problem is not None:
            wrong.append(f"message {message.number}: {message.problem}")
        elif message.content is None:
            refused += 1
        else:
            checked += 1
            if len(message.content) != message.size:
                wrong.append(
                    f"message {message.number}: LIST {message.size}, received "
                    f"{len(message.content)}"
                )
    if wrong:
        return failed(f"{len(wrong)} of {len(maildrop.messages)} messages: " + "; ".join(wrong[:3]))
    if not checked:
        raise Skip("no message could be retrieved")
    note = f" ({refused} refused, see R36)" if refused else ""
    return passed(f"{checked} messages: LIST sizes match the octets received{note}")


@check(19, "statTotal")
def statTotal(context: Context) -> Verdict:
    """
    C{STAT}'s octet total is the sum of the scan listing's sizes (RFC 1939 section 5).
    """
    maildrop = context.maildrop()
    _, total = parseStat(maildrop.stat)
    listed = sum(maildrop.sizes.values())
    if total != listed:
        return failed(f"STAT total {total}, sum of LIST sizes {listed}")
    return passed(f"STAT total {total} == sum of LIST sizes")


@check(19, "retrSizeLine")
def retrSizeLine(context: Context) -> Verdict:
    """
    When C{RETR}'s C{+OK} line starts with a number of octets, it is the message's size
    (RFC 1939 section 5 example, "+OK 120 octets").
    """
    maildrop = _maildrop(context)
    shown = 0
    for message in maildrop.messages.values():
        if message.reply is None or not message.reply.ok:
            continue
        first = message.reply.text.split(b" ", 1)[0]
        if first.isdigit():
            shown += 1
            if int(first) != message.size:
                return failed(f"RETR {message.number} -> {message.reply}; LIST says {message.size}")
    if not shown:
        raise Skip("RETR answers carry no size")
    return passed(f"{shown} RETR answers state the LIST size")


@check(20, "rsetUnmarks")
def rsetUnmarks(context: Context) -> Verdict:
    """
    C{DELE} only marks a message, which stays marked through other commands, and C{RSET}
    unmarks it (RFC 1939 section 5).
    """
    top = context.offers(b"TOP")
    read = b"TOP %d 0" if top else b"RETR %d"
    with context.markingSession() as session:
        count, number, _ = _smallest(session)
        _expect(session, b"DELE %d" % (number,), True)
        _expect(session, b"NOOP", True)
        _expect(session, read % (number,), False)
        _expect(session, b"RSET", True)
        after, _ = session.stat()
        if after != count:
            return failed(f"STAT says {after} messages after RSET, {count} before DELE")
        _expect(session, read % (number,), True)
    return passed(
        f"DELE {number}, NOOP, {show(read.split()[0])} {number} -> -ERR; RSET; "
        f"{count} messages again and message {number} readable"
    )


def _cleanLines(body: bytes) -> bool:
    """
    Whether every line of C{body} ends with CRLF and holds no other CR.
    """
    return all(line.endswith(b"\r\n") and b"\r" not in line[:-2] for line in splitLines(body))


def _expectedTop(content: bytes, lines: int) -> bytes:
    """
    What C{TOP n lines} must send of a message, from the message as C{RETR} sent it: the
    header, the blank line after it, and C{lines} lines of the body (RFC 1939 section 7).
    """
    messageLines = splitLines(content)
    for index, line in enumerate(messageLines):
        if line == b"\r\n":
            return b"".join(messageLines[: index + 1 + lines])
    return content


@check(21, "headersAndLines")
def headersAndLines(context: Context) -> Verdict:
    """
    C{TOP n k} sends the header, the blank line and the first k body lines of message n, the
    whole message when k exceeds its body (RFC 1939 section 7); compared with C{RETR}.
    """
    context.advertised(b"TOP")
    # Messages whose RETR answer has broken line ends are R7's business: they have no
    # well-defined header end to compare with.
    messages = [m for m in context.maildrop().retrieved() if _cleanLines(m.body or b"")][:4]
    if not messages:
        raise Skip("no message was retrieved with clean CRLF line ends")
    with context.session() as session:
        for message in messages:
            content = message.content
            assert content is not None
            for lines in (0, 1, 100000):
                line = b"TOP %d %d" % (message.number, lines)
                reply, body = session.retrieve(line)
                if body is None:
                    return failed(f"{show(line)} -> {reply}")
                if unstuff(body) != _expectedTop(content, lines):
                    return failed(
                        f"{show(line)} sent {len(unstuff(body))} octets, not the "
                        f"{len(_expectedTop(content, lines))} of RETR's header and "
                        f"first {lines} body lines"
                    )
    return passed(f"TOP n 0, 1 and 100000 agree with RETR for {len(messages)} messages")


@check(22, "uniqueIdFormat")
def uniqueIdFormat(context: Context) -> Verdict:
    """
    Unique-ids are 1 to 70 characters in the range 0x21-0x7E (RFC 1939 section 7).
    """
    uids = _uids(context)
    for number, uid in uids.items():
        if not _UNIQUE_ID.match(uid):
            return failed(f"message {number} has the unique-id {show(uid)!r}")
    return passed(f"{len(uids)} unique-ids, e.g. {show(next(iter(uids.values())))}")


@check(22, "uniqueIdsUnique")
def uniqueIdsUnique(context: Context) -> Verdict:
    """
    No two messages of a maildrop share a unique-id (RFC 1939 section 7), and UIDL lists
    the same messages as LIST.
    """
    uids = _uids(context)
    maildrop = context.maildrop()
    if set(uids) != set(maildrop.sizes):
        return failed(
            f"UIDL lists messages {sorted(uids)[:10]}, LIST {sorted(maildrop.sizes)[:10]}"
        )
    if len(set(uids.values())) != len(uids):
        return failed(f"{len(uids)} messages have {len(set(uids.values()))} distinct unique-ids")
    return passed(f"{len(uids)} distinct unique-ids")


@check(22, "singleLine")
def singleLine(context: Context) -> Verdict:
    """
    C{UIDL n} answers C{+OK n unique-id} on one line, as the listing has it (RFC 1939
    section 7).
    """
    uids = _uids(context)
    with context.session() as session:
        for number in list(uids)[:3]:
            reply = session.command(b"UIDL %d" % (number,))
            expected = b"%d %s" % (number, uids[number])
            if not reply.ok or reply.text.split(b" ")[:2] != expected.split(b" "):
                return failed(f"UIDL {number} -> {reply}; expected +OK {show(expected)}")
    return passed(f"UIDL n -> +OK n unique-id for messages {', '.join(map(str, list(uids)[:3]))}")


@check(22, "stable")
def stable(context: Context) -> Verdict:
    """
    Unique-ids stay the same across sessions, also after a session that ended without UPDATE
    (RFC 1939 section 7): the listing is read again in a session that is then dropped, and
    once more after it.
    """
    uids = _uids(context)
    for attempt, drop in enumerate((True, False), 1):
        with context.session() as session:
            reply, body = session.multiline(b"UIDL")
            if body is None:
                return failed(f"UIDL -> {reply}")
            if drop:
                session.drop()
        again = parseUniqueIds(body)
        if again != uids:
            changed = [n for n in uids if again.get(n) != uids[n]]
            return failed(f"session {attempt + 1}: unique-ids of messages {changed[:5]} changed")
    return passed(f"{len(uids)} unique-ids unchanged over three sessions, one of them dropped")
