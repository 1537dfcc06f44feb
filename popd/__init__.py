"""
popd: a POP3 server for Twisted.

Serve Maildirs with C{twistd popd}, or embed L{POP3ServerFactory} in an application with a
C{twisted.cred} portal whose realm hands out L{popd.interfaces.IMaildrop} avatars.
"""

from popd.interfaces import IMaildrop, IMessage, MessageInfo
from popd.protocol import POP3ServerFactory, POP3ServerProtocol

__all__ = ["IMaildrop", "IMessage", "MessageInfo", "POP3ServerFactory", "POP3ServerProtocol"]
