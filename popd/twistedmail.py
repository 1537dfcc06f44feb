"""
Existing C{twisted.mail.pop3} realms, served by popd unchanged.

A realm written for Twisted's own POP3 server hands out L{twisted.mail.pop3.IMailbox} avatars.
popd asks portals for either interface, and wraps such a mailbox in L{MailboxMaildrop}, which
gives it what popd promises of every store and Twisted's server does not: sizes counted as
transmitted, valid UIDLs, one session at a time, and deletion only at UPDATE.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Hashable, Sequence
from functools import partial
from typing import IO

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

# twisted.mail.pop3 would import the reactor; its IMailbox lives here, importable on its own.
from twisted.mail.interfaces import IMailboxPOP3 as IMailbox
from twisted.python.failure import Failure
from zope.interface import implementer

from popd._wire import transmittedSize
from popd.errors import MaildropInUse, MessageGone, TemporaryFailure
from popd.interfaces import IMaildrop, IMessage, MessageInfo

__all__ = ["IMailbox", "MailboxMaildrop"]

_log = Logger()

# What RFC 1939 allows in a unique-id listing: 1 to 70 octets in 0x21-0x7E.
_UIDL_OCTETS = frozenset(range(0x21, 0x7F))


def _validUidl(uidl: bytes | str) -> bytes:
    """
    A mailbox's UIDL, or a digest of it when it does not fit RFC 1939 (Twisted does not check):
    still unique and stable, since it depends on the original alone.
    """
    raw = uidl.encode("utf-8") if isinstance(uidl, str) else bytes(uidl)
    if 1 <= len(raw) <= 70 and _UIDL_OCTETS.issuperset(raw):
        return raw
    return hashlib.sha256(raw).hexdigest()[:40].encode("ascii")


def _read(file: IO[bytes] | IO[str], size: int) -> bytes:
    """
    Read from a file an L{IMailbox} gave: some, such as Twisted's own Maildir mailbox, open
    messages in text mode.
    """
    chunk = file.read(size)
    return chunk.encode("utf-8", "surrogateescape") if isinstance(chunk, str) else chunk


@implementer(IMessage)
class _FileMessage:
    """
    A message read from the file-like object an L{IMailbox} gives.
    """

    def __init__(self, file: IO[bytes] | IO[str]) -> None:
        self._file = file

    def read(self, size: int) -> Deferred[bytes]:
        return succeed(_read(self._file, size))

    def close(self) -> None:
        self._file.close()


@implementer(IMaildrop)
class MailboxMaildrop:
    """
    An L{IMailbox} as popd's L{IMaildrop}, for one session.

    L{IMailbox} has no lock, so this keeps one per process, by the key the caller gives (the
    portal and the user name): two popd sessions never hold one mailbox.
    """

    _locked: set[Hashable] = set()

    def __init__(self, mailbox: IMailbox, lockKey: Hashable) -> None:
        """
        @raise MaildropInUse: another session holds the mailbox.
        """
        if lockKey in self._locked:
            raise MaildropInUse()
        self._locked.add(lockKey)
        self._lockKey: Hashable | None = lockKey
        self._mailbox = mailbox

    def listing(self) -> Deferred[Sequence[MessageInfo]]:
        return Deferred.fromCoroutine(self._listing())

    async def _listing(self) -> Sequence[MessageInfo]:
        count = len(await maybeDeferred(self._mailbox.listMessages))
        listing = []
        for index in range(count):
            uidl = await maybeDeferred(self._mailbox.getUidl, index)
            # Twisted's mailboxes count what they store, often LF line ends: popd measures
            # what it will send (rule R19).
            file = await maybeDeferred(self._mailbox.getMessage, index)
            try:
                size = transmittedSize(iter(partial(_read, file, 65536), b""))
            finally:
                file.close()
            listing.append(MessageInfo(size, _validUidl(uidl)))
        return listing

    def open(self, index: int) -> Deferred[IMessage]:
        return maybeDeferred(self._mailbox.getMessage, index).addCallbacks(
            _FileMessage, self._openFailed
        )

    @staticmethod
    def _openFailed(reason: Failure) -> IMessage:
        if isinstance(reason.value, (ValueError, IndexError, KeyError)):
            raise MessageGone()
        _log.failure("An IMailbox could not open a message", failure=reason)
        raise TemporaryFailure()

    def commit(
        self, deleted: Collection[int], retrieved: Collection[int]
    ) -> Deferred[Collection[int]]:
        return Deferred.fromCoroutine(self._commit(deleted))

    async def _commit(self, deleted: Collection[int]) -> Collection[int]:
        notRemoved = []
        for index in deleted:
            try:
                await maybeDeferred(self._mailbox.deleteMessage, index)
            except Exception:
                _log.failure("An IMailbox could not delete message {index}", index=index)
                notRemoved.append(index)
        try:
            await maybeDeferred(self._mailbox.sync)
        except Exception:
            _log.failure("An IMailbox could not sync its deletions")
            # Whether anything was removed is unknown: report every mark.
            return sorted(deleted)
        return notRemoved

    def close(self) -> Deferred[None]:
        if self._lockKey is not None:
            self._locked.discard(self._lockKey)
            self._lockKey = None
        return succeed(None)
