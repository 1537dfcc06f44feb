"""
Tests for L{popd.sasl} and the C{AUTH} command (RFC 5034, rule R31).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from popd.memory import MemoryMailbox, MemoryRealm
from popd.protocol import POP3ServerFactory, Response
from popd.sasl import (
    Challenge,
    CramMD5,
    CramMD5Credentials,
    ISASLMechanism,
    Login,
    MalformedResponse,
    Plain,
)
from tests.test_protocol import LOOPBACK, MESSAGES, REMOTE, Session, multiline


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class MechanismTests(SynchronousTestCase):
    """
    The mechanisms on their own, with the RFCs' example exchanges.
    """

    def test_interfaces(self) -> None:
        for mechanism in [Plain(), Login(), CramMD5()]:
            self.assertTrue(verifyObject(ISASLMechanism, mechanism))

    def test_plainVector(self) -> None:
        """
        RFC 4616 section 4: C{\\0tim\\0tanstaaftanstaaf} is user tim, password tanstaaftanstaaf;
        without an initial response the server sends an empty challenge.
        """
        exchange = Plain().exchange(b"host")
        self.assertEqual(exchange.respond(None), Challenge(b""))
        credentials = exchange.respond(b"\0tim\0tanstaaftanstaaf")
        assert IUsernamePassword.providedBy(credentials)
        self.assertEqual((credentials.username, credentials.password), (b"tim", b"tanstaaftanstaaf"))

    def test_plainMalformed(self) -> None:
        """
        Missing fields, an authorization identity for someone else, and CR, LF or NUL inside a
        field are refused.
        """
        for response in [b"tim\0pw", b"\0\0pw", b"\0tim\0", b"eve\0tim\0pw", b"\0tim\0p\r\nw",
                         b"\0tim\0p\0w", b"\0t\xffim\0pw"]:
            self.assertRaises(MalformedResponse, Plain().exchange(b"h").respond, response)

    def test_login(self) -> None:
        """
        LOGIN asks for the user name, then the password.
        """
        exchange = Login().exchange(b"host")
        self.assertEqual(exchange.respond(None), Challenge(b"Username:"))
        self.assertEqual(exchange.respond(b"tim"), Challenge(b"Password:"))
        credentials = exchange.respond(b"pass word")
        self.assertEqual((credentials.username, credentials.password), (b"tim", b"pass word"))

    def test_cramMD5Vector(self) -> None:
        """
        RFC 2195 section 2: the example answer checks against the example secret and no other.
        """
        credentials = CramMD5Credentials(
            b"<1896.697170952@postoffice.reston.mci.net>",
            b"tim",
            b"b913a602c7eda7a495b4e6e7334d3890",
        )
        self.assertTrue(credentials.checkPassword(b"tanstaaftanstaaf"))
        self.assertFalse(credentials.checkPassword(b"tanstaaftanstaag"))

    def test_cramMD5Challenge(self) -> None:
        """
        The challenge is a fresh msg-id on every exchange; an initial response is refused.
        """
        first = CramMD5().exchange(b"host").respond(None)
        second = CramMD5().exchange(b"host").respond(None)
        assert isinstance(first, Challenge) and isinstance(second, Challenge)
        self.assertNotEqual(first, second)
        self.assertTrue(first.data.startswith(b"<") and first.data.endswith(b"@host>"))
        self.assertRaises(MalformedResponse, CramMD5().exchange(b"h").respond, b"x")


class AuthCommandTests(SynchronousTestCase):
    """
    R31: C{AUTH} in the protocol.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.mailbox = MemoryMailbox(MESSAGES)
        checker = InMemoryUsernamePasswordDatabaseDontUse(tim=b"tanstaaftanstaaf")
        self.portal = Portal(MemoryRealm({b"tim": self.mailbox}), [checker])
        self.factory = POP3ServerFactory(self.portal, reactor=self.clock, authFailureDelay=1)

    def test_plainInitialResponse(self) -> None:
        """
        C{AUTH PLAIN <base64>} logs in in one line.
        """
        session = Session(self.factory)
        response = session.command(b"AUTH PLAIN " + b64(b"\0tim\0tanstaaftanstaaf"))
        self.assertTrue(response.startswith(b"+OK"), response)
        self.assertTrue(session.command(b"STAT").startswith(b"+OK 3"))

    def test_plainChallenge(self) -> None:
        """
        Without an initial response the server answers C{+ } and waits for it.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"AUTH PLAIN"), b"+ \r\n")
        self.assertTrue(session.command(b64(b"\0tim\0tanstaaftanstaaf")).startswith(b"+OK"))

    def test_emptyInitialResponse(self) -> None:
        """
        C{=} is an empty initial response: for PLAIN, a malformed one.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"AUTH PLAIN ="), Response.SASL_MALFORMED + b"\r\n")

    def test_login(self) -> None:
        """
        C{AUTH LOGIN} asks for both fields in base64.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"AUTH LOGIN"), b"+ " + b64(b"Username:") + b"\r\n")
        self.assertEqual(session.command(b64(b"tim")), b"+ " + b64(b"Password:") + b"\r\n")
        self.assertTrue(session.command(b64(b"tanstaaftanstaaf")).startswith(b"+OK"))

    def test_cramMD5(self) -> None:
        """
        C{AUTH CRAM-MD5} logs in with the HMAC of the challenge.
        """
        session = Session(self.factory)
        challenge = base64.b64decode(session.command(b"AUTH CRAM-MD5")[2:])
        digest = hmac.new(b"tanstaaftanstaaf", challenge, hashlib.md5).hexdigest().encode()
        self.assertTrue(session.command(b64(b"tim " + digest)).startswith(b"+OK"))

    def test_cancel(self) -> None:
        """
        C{*} cancels the exchange with C{-ERR}; the session goes on in AUTHORIZATION.
        """
        session = Session(self.factory)
        session.command(b"AUTH LOGIN")
        self.assertEqual(session.command(b"*"), Response.SASL_CANCELLED + b"\r\n")
        self.assertEqual(session.command(b"USER tim"), b"+OK\r\n")

    def test_badBase64(self) -> None:
        """
        Invalid base64, in the initial response or later, is refused with C{-ERR}.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"AUTH PLAIN %%%"), Response.SASL_MALFORMED + b"\r\n")
        session.command(b"AUTH LOGIN")
        self.assertEqual(session.command(b"dGlt!"), Response.SASL_MALFORMED + b"\r\n")
        self.assertEqual(session.command(b"NOOP"), Response.WRONG_STATE + b"\r\n")

    def test_unknownMechanism(self) -> None:
        session = Session(self.factory)
        self.assertEqual(session.command(b"AUTH X-UNKNOWN"), Response.NO_MECHANISM + b"\r\n")

    def test_wrongPassword(self) -> None:
        """
        A wrong password through SASL gets the same delayed C{[AUTH]} answer as through PASS.
        """
        session = Session(self.factory)
        self.assertEqual(session.command(b"AUTH PLAIN " + b64(b"\0tim\0wrong")), b"")
        self.clock.advance(1)
        self.assertEqual(session.read(), Response.AUTH_FAILED + b"\r\n")

    def test_notAfterLogin(self) -> None:
        """
        C{AUTH} is refused once authenticated.
        """
        session = Session(self.factory)
        session.command(b"AUTH PLAIN " + b64(b"\0tim\0tanstaaftanstaaf"))
        self.assertEqual(session.command(b"AUTH PLAIN"), Response.WRONG_STATE + b"\r\n")

    def test_listing(self) -> None:
        """
        C{AUTH} alone and C{CAPA} list the usable mechanisms, before and after login (R25).
        """
        session = Session(self.factory, LOOPBACK)
        self.assertEqual(multiline(session.command(b"AUTH")), [b"CRAM-MD5", b"PLAIN", b"LOGIN"])
        self.assertIn(b"SASL CRAM-MD5 PLAIN LOGIN", multiline(session.command(b"CAPA")))
        session.command(b"AUTH PLAIN " + b64(b"\0tim\0tanstaaftanstaaf"))
        self.assertIn(b"SASL CRAM-MD5 PLAIN LOGIN", multiline(session.command(b"CAPA")))

    def test_cleartextMechanismsNeedTLS(self) -> None:
        """
        R34: on a plain remote connection PLAIN and LOGIN are neither listed nor accepted;
        CRAM-MD5, which keeps the password off the wire, is.
        """
        session = Session(self.factory, REMOTE)
        self.assertEqual(multiline(session.command(b"AUTH")), [b"CRAM-MD5"])
        self.assertIn(b"SASL CRAM-MD5", multiline(session.command(b"CAPA")))
        self.assertEqual(session.command(b"AUTH PLAIN"), Response.NO_MECHANISM + b"\r\n")
