"""
The interfaces between the POP3 protocol and the stores that hold mail.

A store is anything whose realm hands out an L{IMaildrop} avatar: popd ships a Maildir store
(L{popd.maildir}) and an in-memory one (L{popd.memory}); applications bring their own (a database,
an API).  Message indices are 0-based here; the protocol alone converts them to the 1-based message
numbers of the wire.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from itertools import repeat
from typing import NamedTuple, overload

from twisted.internet.defer import Deferred
from zope.interface import Interface


class MessageInfo(NamedTuple):
    """
    What the protocol knows of one message before it is read.

    @ivar size: the size in octets as transmitted (RFC 1939 section 11): every line end a CRLF,
        a final CRLF supplied when the stored message lacks one, before byte-stuffing.
    @ivar uidl: the unique-id listing, 1 to 70 octets in 0x21-0x7E, stable for the life of the
        message and never reused (RFC 1939 section 7).
    @ivar retrievedAt: when a session that reached UPDATE first retrieved the message (POSIX
        seconds), or L{None} if none has or the store does not record it.  The EXPIRE policy
        (RFC 2449 section 6.7) removes only messages retrieved long enough ago.
    """

    size: int
    uidl: bytes
    retrievedAt: float | None = None


class Listing(Sequence[MessageInfo]):
    """
    A listing kept as columns, one entry per message: what a store with many messages returns,
    so that a login makes no object per message.  STAT, LIST and UIDL read the columns; a
    L{MessageInfo} is only made when one message is asked for.

    @ivar sizes: each message's L{MessageInfo.size}.
    @ivar uidls: each message's L{MessageInfo.uidl}.
    @ivar retrievedAt: each message's L{MessageInfo.retrievedAt}, or L{None} when none is known.
    @ivar octets: the sum of C{sizes}.
    """

    __slots__ = ("sizes", "uidls", "retrievedAt", "octets")

    def __init__(
        self,
        sizes: Sequence[int],
        uidls: Sequence[bytes],
        retrievedAt: Sequence[float | None] | None = None,
    ) -> None:
        """
        The columns are kept, not copied: they must not change.

        @raise ValueError: the columns are not of the same length.
        """
        if len(uidls) != len(sizes) or (retrievedAt is not None and len(retrievedAt) != len(sizes)):
            raise ValueError("the columns of a listing must be of the same length")
        self.sizes = sizes
        self.uidls = uidls
        self.retrievedAt = retrievedAt
        self.octets = sum(sizes)

    @classmethod
    def of(cls, listing: Sequence[MessageInfo]) -> Listing:
        """
        @return: C{listing} as a L{Listing}: itself if it is one.
        """
        if isinstance(listing, Listing):
            return listing
        retrievedAt = [info.retrievedAt for info in listing]
        return cls(
            [info.size for info in listing],
            [info.uidl for info in listing],
            None if retrievedAt.count(None) == len(retrievedAt) else retrievedAt,
        )

    def __len__(self) -> int:
        return len(self.sizes)

    @overload
    def __getitem__(self, index: int) -> MessageInfo: ...

    @overload
    def __getitem__(self, index: slice) -> Listing: ...

    def __getitem__(self, index: int | slice) -> MessageInfo | Listing:
        retrievedAt = self.retrievedAt
        if isinstance(index, slice):
            return Listing(
                self.sizes[index],
                self.uidls[index],
                None if retrievedAt is None else retrievedAt[index],
            )
        return MessageInfo(
            self.sizes[index],
            self.uidls[index],
            None if retrievedAt is None else retrievedAt[index],
        )

    def __iter__(self) -> Iterator[MessageInfo]:
        retrievedAt = repeat(None) if self.retrievedAt is None else self.retrievedAt
        return map(MessageInfo, self.sizes, self.uidls, retrievedAt)

    def __repr__(self) -> str:
        return f"Listing({list(self)!r})"


class IMessage(Interface):
    """
    One message opened for reading: a stream of its stored octets.

    The stored octets may use LF or CRLF line ends; the protocol converts and byte-stuffs them.
    """

    def read(size: int) -> Deferred[bytes]:
        """
        Read up to C{size} octets.

        @return: a L{Deferred} firing with the next octets, or C{b""} at the end of the message.
        """

    def close() -> None:
        """
        Release whatever the stream holds (a file descriptor, a cursor).  Idempotent.
        """


class IMaildrop(Interface):
    """
    One user's maildrop, opened and exclusively locked for one POP3 session.

    The realm that hands out an L{IMaildrop} has already taken its lock: it fails with
    L{popd.errors.MaildropInUse} when another session holds it.  Every method that may touch
    storage returns a L{Deferred} so that remote stores fit; local stores fire it at once.
    """

    def listing() -> Deferred[Sequence[MessageInfo]]:
        """
        List the maildrop.  The protocol calls this once per session: its order fixes the
        message numbers (RFC 1939 section 4), and mail delivered later is not part of it.

        @return: a L{Deferred} firing with one L{MessageInfo} per message, in delivery order:
            a L{Listing} when there may be many.
        """

    def open(index: int) -> Deferred[IMessage]:
        """
        Open the message at C{index} (0-based, into the listing) for reading.

        @return: a L{Deferred} firing with an L{IMessage}, or failing with
            L{popd.errors.MessageGone} when another agent removed the message.
        """

    def commit(deleted: Collection[int], retrieved: Collection[int]) -> Deferred[Collection[int]]:
        """
        Enter the UPDATE state: remove exactly the messages at the indices C{deleted}, and
        record that those at C{retrieved} (retrieved in this session and not deleted) were
        retrieved now, unless an earlier retrieval is already recorded.  A message that is
        already gone counts as removed.  Recording is best effort: a store that cannot record
        retrievals simply never reports L{MessageInfo.retrievedAt}.

        @return: a L{Deferred} firing with the indices that could not be removed (empty when all
            were), or failing with L{popd.errors.TemporaryFailure} or
            L{popd.errors.PermanentFailure} when nothing could be attempted.
        """

    def close() -> Deferred[None]:
        """
        Release the lock.  Never removes anything; called once at the end of every session,
        whether it committed or not.
        """
