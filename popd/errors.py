"""
Exceptions that cross the boundary between a maildrop store and the protocol.

Each maps to one fixed C{-ERR} response: the protocol never puts exception text on the wire.
"""


class MaildropInUse(Exception):
    """
    The maildrop is locked by another session (answered C{-ERR [IN-USE]}, RFC 2449 section 8.1.2).
    """


class MessageGone(Exception):
    """
    The message was removed by another agent after the session's listing was taken.
    """


class TemporaryFailure(Exception):
    """
    A storage problem that may go away by itself, such as a full disk (C{[SYS/TEMP]}, RFC 3206).
    """


class PermanentFailure(Exception):
    """
    A storage problem that needs an administrator (C{[SYS/PERM]}, RFC 3206).
    """
