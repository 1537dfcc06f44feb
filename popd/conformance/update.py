"""
Checks of the UPDATE state (rules R23-R24), on the scratch user only: C{QUIT} removes exactly
the marked messages, any other end removes nothing.

R24 runs before R23, so that a server that gets UPDATE wrong leaves R24 a maildrop as it was.
"""

from __future__ import annotations

from popd.conformance._context import (
    Context,
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

_Snapshot = tuple[int, int, dict[int, int], dict[int, bytes] | None]


def _snapshot(context: Context, session: Session) -> _Snapshot:
    """
    Read a maildrop's C{STAT}, scan listing and, when offered, unique-id listing.

    @raise Skip: the maildrop is empty.
    """
    count, total = parseStat(session.command(b"STAT"))
    _, listBody = session.multiline(b"LIST")
    sizes = parseScanListing(listBody or b"")[0]
    uids = None
    if context.offers(b"UIDL"):
        _, uidlBody = session.multiline(b"UIDL")
        uids = parseUniqueIds(uidlBody or b"")
    if not count:
        raise Skip("the scratch maildrop is empty; it needs at least one message")
    return count, total, sizes, uids


@check(24, "dropKeepsMessages")
def dropKeepsMessages(context: Context) -> Verdict:
    """
    A session that ends other than by C{QUIT} removes nothing (RFC 1939 section 6): C{DELE 1},
    then the connection is dropped; a new session finds the same messages with the same
    unique-ids.  Uses the scratch user.
    """
    context.scratch()
    with context.session(scratch=True) as session:
        before = _snapshot(context, session)
        reply = session.command(b"DELE 1")
        session.drop()
    if not reply.ok:
        return failed(f"DELE 1 -> {reply}")
    with context.session(scratch=True) as session:
        after = _snapshot(context, session)
    if after != before:
        return failed(
            f"before: STAT {before[0]} {before[1]}; after DELE 1 and a dropped "
            f"connection: STAT {after[0]} {after[1]}"
            + ("" if after[3] == before[3] else ", unique-ids changed")
        )
    return passed(
        f"{before[0]} messages, unique-ids unchanged after DELE 1 and a dropped connection"
    )


@check(23, "quitRemovesMarked")
def quitRemovesMarked(context: Context) -> Verdict:
    """
    C{QUIT} in the TRANSACTION state removes exactly the marked messages, answers C{+OK} and
    closes (RFC 1939 section 6): after C{DELE 1} and C{QUIT}, a new session has one message
    fewer, the others keep their sizes and unique-ids.  Removes one message of the scratch
    user.
    """
    context.scratch()
    with context.session(scratch=True) as session:
        count, total, sizes, uids = _snapshot(context, session)
        reply = session.command(b"DELE 1")
        if not reply.ok:
            return failed(f"DELE 1 -> {reply}")
        reply = session.quit()
    if not reply.ok:
        return failed(f"QUIT after DELE 1 -> {reply}")
    with context.session(scratch=True) as session:
        afterCount, afterTotal = parseStat(session.command(b"STAT"))
        if (afterCount, afterTotal) != (count - 1, total - sizes[1]):
            return failed(
                f"STAT {count} {total} before; after DELE 1 ({sizes[1]} octets) and "
                f"QUIT: STAT {afterCount} {afterTotal}"
            )
        if uids is not None:
            _, body = session.multiline(b"UIDL")
            remaining = list(parseUniqueIds(body or b"").values())
            if remaining != [uids[n] for n in sorted(uids) if n != 1]:
                return failed(
                    "after QUIT, the unique-ids left are not those of the messages "
                    "that were not deleted"
                )
    return passed(f"QUIT -> {reply}; {count} messages became {afterCount}, the others unchanged")
