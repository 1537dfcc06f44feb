"""
C{twisted.mail.pop3} serving the benchmark's Maildirs, as an application of Twisted's own would
build it: C{twisted.mail.pop3.POP3} behind a C{twisted.cred} portal whose realm hands out
C{twisted.mail.maildir.MaildirMailbox} avatars, a plain and an implicit-TLS (C{ssl:} endpoint)
listener.

Two things are not Twisted's own:

  - the password checker, which reads the same Dovecot passwd-file as popd and Dovecot and
    verifies C{{SHA512-CRYPT}} with libpass (installed with popd) or C{{PLAIN}} by comparison;
    twisted.cred has no passwd-file checker;
  - L{BinaryMaildirMailbox}, which fixes the two methods of C{MaildirMailbox} that fail on
    Python 3: C{getMessage} opens messages as text, on which C{POP3.transformChunk} fails, and
    C{deleteMessage} joins the C{bytes} path with C{str} parts.  It also creates the C{.Trash}
    folder that C{deleteMessage} moves messages to, which C{initializeMaildir} only creates
    with a new Maildir.  Behaviour is otherwise Twisted's: C{DELE} moves the message to
    C{.Trash} at once.

Run by C{run.py}; by hand: C{python twistedmail_server.py --port 2110 --tls-port 2995
--certificate cert.pem --key key.pem --maildir '/srv/mail/%u/Maildir' --passwd passwd --log
sessions.log}.
"""

from __future__ import annotations

import argparse
import hmac
import os
from typing import IO, Any

from passlib.hash import sha512_crypt
from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, endpoints, reactor
from twisted.internet.protocol import ServerFactory
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.mail import pop3
from twisted.mail.maildir import MaildirMailbox
from zope.interface import implementer


class BinaryMaildirMailbox(MaildirMailbox):
    """
    Twisted's Maildir mailbox, made to work on Python 3 (see the module docstring).
    """

    def __init__(self, path: bytes) -> None:
        super().__init__(path)
        os.makedirs(os.path.join(path, b".Trash", b"cur"), exist_ok=True)

    def getMessage(self, i: int) -> IO[bytes]:  # type: ignore[override]
        path = self.list[i]
        assert isinstance(path, bytes)
        return open(path, "rb")

    def deleteMessage(self, i: int) -> None:
        path = self.list[i]
        assert isinstance(path, bytes)
        trash = os.path.join(self.path, b".Trash", b"cur", os.path.basename(path))
        os.rename(path, trash)
        self.deleted[path] = trash
        self.list[i] = 0


@implementer(ICredentialsChecker)
class PasswdFileChecker:
    """
    Checks C{USER}/C{PASS} against a Dovecot passwd-file of C{{SHA512-CRYPT}} or C{{PLAIN}}
    entries, read once at start.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str) -> None:
        self._users: dict[bytes, str] = {}
        with open(path, encoding="ascii") as f:
            for line in f:
                user, _, stored = line.rstrip("\n").partition(":")
                self._users[user.encode("ascii")] = stored

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes | tuple[()]]:
        stored = self._users.get(credentials.username)
        password: bytes = credentials.password
        if stored is not None:
            scheme, _, value = stored[1:].partition("}")
            if scheme == "SHA512-CRYPT":
                matched = sha512_crypt.verify(password, value)
            else:
                matched = hmac.compare_digest(password, value.encode("utf-8"))
            if matched:
                return defer.succeed(credentials.username)
        return defer.fail(error.UnauthorizedLogin())


@implementer(IRealm)
class MaildirRealm:
    """
    Hands out the Maildir of each user, from a path template with C{%u}.
    """

    def __init__(self, template: str) -> None:
        self._template = template

    def requestAvatar(self, avatarId: bytes | tuple[()], mind: object, *interfaces: Any) -> Any:
        if pop3.IMailbox not in interfaces or not isinstance(avatarId, bytes):
            raise NotImplementedError("only IMailbox, for named users")
        path = self._template.replace("%u", avatarId.decode("ascii")).encode("utf-8")
        return pop3.IMailbox, BinaryMaildirMailbox(path), lambda: None


class POP3Factory(ServerFactory):
    """
    Makes a L{pop3.POP3} for each connection, with the portal.
    """

    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    def buildProtocol(self, addr: Any) -> Any:
        protocol = pop3.POP3()
        protocol.portal = self.portal  # type: ignore[assignment]
        protocol.factory = self  # type: ignore[assignment]
        return protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-port", type=int, required=True)
    parser.add_argument("--certificate", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--maildir", required=True, help="Maildir path template with %%u")
    parser.add_argument("--passwd", required=True)
    parser.add_argument("--log", required=True, help="where Twisted's log goes")
    options = parser.parse_args()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(open(options.log, "a"))])
    factory = POP3Factory(
        Portal(MaildirRealm(options.maildir), [PasswdFileChecker(options.passwd)])
    )
    for description in (
        f"tcp:{options.port}:interface=127.0.0.1",
        f"ssl:{options.tls_port}:interface=127.0.0.1"
        f":privateKey={options.key}:certKey={options.certificate}",
    ):
        endpoints.serverFromString(reactor, description).listen(factory)  # type: ignore[no-untyped-call]
    reactor.run()


if __name__ == "__main__":
    main()
