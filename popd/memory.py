"""
An in-memory store: the reference implementation of L{IMaildrop}, used by L{popd.testing} and
by applications whose mail lives in their own process.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Sequence

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import Interface, implementer

from popd._wire import transmittedSize
from popd.errors import MaildropInUse, MessageGone
from popd.interfaces import IMaildrop, IMessage, MessageInfo


class MemoryMailbox:
    """
    One user's messages, kept in memory, with the lock a POP3 session takes on them.

    @ivar messages: the messages still in the mailbox, oldest first.
    """

    def __init__(
        self, messages: Iterable[bytes] = (), clock: Callable[[], float] = time.time
    ) -> None:
        self._messages: dict[bytes, bytes] = {}
        self._retrievedAt: dict[bytes, float] = {}
        self._clock = clock
        self._serial = 0
        self.locked = False
        for message in messages:
            self.deliver(message)

    @property
    def messages(self) -> list[bytes]:
        return list(self._messages.values())

    def deliver(self, message: bytes) -> None:
        """
        Add a message.  It gets a UIDL never used before in this mailbox (rule R22).
        """
        self._serial += 1
        digest = hashlib.sha256(message).hexdigest()[:16]
        self._messages[b"%d.%s" % (self._serial, digest.encode("ascii"))] = message

    def openMaildrop(self) -> MemoryMaildrop:
        """
        Lock the mailbox for one session and return its maildrop.

        @raise MaildropInUse: when another session holds the lock (rule R10).
        """
        if self.locked:
            raise MaildropInUse()
        self.locked = True
        return MemoryMaildrop(self)


@implementer(IMessage)
class MemoryMessage:
    """
    A message read from memory.
    """

    def __init__(self, content: bytes) -> None:
        self._content = memoryview(content)
        self._position = 0

    def read(self, size: int) -> Deferred[bytes]:
        chunk = bytes(self._content[self._position : self._position + size])
        self._position += len(chunk)
        return succeed(chunk)

    def close(self) -> None:
        self._position = len(self._content)


@implementer(IMaildrop)
class MemoryMaildrop:
    """
    The maildrop of a L{MemoryMailbox}, locked for one session; its listing is a snapshot.
    """

    def __init__(self, mailbox: MemoryMailbox) -> None:
        self._mailbox = mailbox
        self._uidls = list(mailbox._messages)
        self._closed = False

    def listing(self) -> Deferred[Sequence[MessageInfo]]:
        messages = self._mailbox._messages
        retrievedAt = self._mailbox._retrievedAt
        return succeed(
            [
                MessageInfo(transmittedSize([messages[uidl]]), uidl, retrievedAt.get(uidl))
                for uidl in self._uidls
            ]
        )

    def open(self, index: int) -> Deferred[IMessage]:
        content = self._mailbox._messages.get(self._uidls[index])
        if content is None:
            return fail(MessageGone())
        return succeed(MemoryMessage(content))

    def commit(
        self, deleted: Collection[int], retrieved: Collection[int]
    ) -> Deferred[Collection[int]]:
        mailbox = self._mailbox
        for index in deleted:
            mailbox._messages.pop(self._uidls[index], None)
            mailbox._retrievedAt.pop(self._uidls[index], None)
        now = mailbox._clock()
        for index in retrieved:
            uidl = self._uidls[index]
            if uidl in mailbox._messages:
                mailbox._retrievedAt.setdefault(uidl, now)
        return succeed(())

    def close(self) -> Deferred[None]:
        if not self._closed:
            self._closed = True
            self._mailbox.locked = False
        return succeed(None)


@implementer(IRealm)
class MemoryRealm:
    """
    A realm over in-memory mailboxes, keyed by the avatar ID (the user name as C{bytes}).
    """

    def __init__(self, mailboxes: dict[bytes, MemoryMailbox]) -> None:
        self.mailboxes = mailboxes

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: type[Interface]
    ) -> Deferred[tuple[type[Interface], object, Callable[[], None]]]:
        if IMaildrop not in interfaces:
            raise NotImplementedError("MemoryRealm only provides IMaildrop")
        if not isinstance(avatarId, bytes):
            return fail(UnauthorizedLogin())
        mailbox = self.mailboxes.get(avatarId)
        if mailbox is None:
            return fail(UnauthorizedLogin())
        try:
            maildrop = mailbox.openMaildrop()
        except MaildropInUse:
            return fail()
        return succeed((IMaildrop, maildrop, lambda: None))
