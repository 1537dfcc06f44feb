"""
Tests for L{popd.sasl} and the C{AUTH} command (RFC 5034, rule R31).

Every mechanism is checked against its RFC's example exchange (RFC 4616, 2195, 5802, 7677,
7628) or, for XOAUTH2, Google's documented format; SCRAM also against scramp's client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from scramp import ScramClient  # type: ignore[import-untyped]
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from popd import cred, sasl
from popd.cred import PasswdFileChecker, hashPassword
from popd.memory import MemoryMailbox, MemoryRealm
from popd.oauth import (
    IOAuthBearerCredentials,
    ITokenValidator,
    OAuthBearerCredentials,
    OAuthTokenChecker,
)
from popd.protocol import POP3ServerFactory, Response
from popd.sasl import (
    Challenge,
    CramMD5,
    CramMD5Credentials,
    ISASLExchange,
    ISASLMechanism,
    IScramCredentials,
    IScramSecretSource,
    Login,
    MalformedResponse,
    OAuthBearer,
    Plain,
    Scram,
    ScramSecrets,
    XOAuth2,
    deriveScramSecrets,
    mechanismsFor,
)
from tests.test_protocol import LOOPBACK, MESSAGES, REMOTE, Session, multiline


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def respond(exchange: ISASLExchange, response: bytes | None) -> Any:
    """
    Give an exchange a response and return its answer, a challenge or credentials, whether it
    answers at once or through a L{Deferred} that has fired; what the L{Deferred} failed with
    is raised.
    """
    result = exchange.respond(response)
    if not isinstance(result, Deferred):
        return result
    outcome: list[Any] = []
    result.addBoth(outcome.append)
    [answer] = outcome
    if isinstance(answer, Failure):
        answer.raiseException()
    return answer


def clientProof(hashName: str, password: bytes, scram: ScramSecrets, authMessage: bytes) -> bytes:
    """
    The ClientProof a client computes (RFC 5802 section 3), independently of popd.
    """
    salted = hashlib.pbkdf2_hmac(hashName, password, scram.salt, scram.iterations)
    clientKey = hmac.digest(salted, b"Client Key", hashName)
    storedKey = hashlib.new(hashName, clientKey).digest()
    signature = hmac.digest(storedKey, authMessage, hashName)
    return bytes(a ^ b for a, b in zip(clientKey, signature, strict=True))


@implementer(IScramSecretSource)
class SecretTable:
    """
    An L{IScramSecretSource} holding fixed secrets, and L{None} for everybody else.
    """

    def __init__(self, table: dict[tuple[bytes, str], ScramSecrets]) -> None:
        self.table = table

    def scramSecrets(self, username: bytes, hashName: str) -> Deferred[ScramSecrets | None]:
        return succeed(self.table.get((username, hashName)))


RANDOM_NONCE = sasl._serverNonce

# RFC 7677 section 3 and RFC 5802 section 5: user "user", password "pencil".
RFC7677_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC7677 = [
    (
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    ),
    (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    ),
]
RFC5802_SERVER_NONCE = "3rfcNHYJY1ZVvWVs7j"
RFC5802 = [
    (
        b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    ),
    (
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    ),
]
RFC7677_SECRETS = deriveScramSecrets(
    "sha256", b"pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096
)
RFC5802_SECRETS = deriveScramSecrets("sha1", b"pencil", base64.b64decode("QSXCR+Q6sek8bf92"), 4096)
RFC_SOURCE = SecretTable({(b"user", "sha256"): RFC7677_SECRETS, (b"user", "sha1"): RFC5802_SECRETS})

# RFC 7628 section 4.1 (IMAP, port 143) and section 4.3.
RFC7628_INITIAL = base64.b64decode(
    "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOW"
    "RmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
)
RFC7628_TOKEN = b"vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
RFC7628_ERROR = base64.b64decode(
    "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb2"
    "4iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0="
)


@implementer(ITokenValidator)
class TokenTable:
    """
    An L{ITokenValidator} that knows a few tokens, and counts its calls.
    """

    def __init__(self, tokens: dict[bytes, bytes]) -> None:
        self.tokens = tokens
        self.calls: list[tuple[bytes | None, bytes]] = []
        self.error: Exception | None = None

    def validate(self, username: bytes | None, token: bytes) -> Deferred[bytes | None]:
        self.calls.append((username, token))
        if self.error is not None:
            return fail(self.error)
        return succeed(self.tokens.get(token))


class MechanismTests(SynchronousTestCase):
    """
    The mechanisms on their own, with the RFCs' example exchanges.
    """

    def test_interfaces(self) -> None:
        for mechanism in [Plain(), Login(), CramMD5()]:
            self.assertTrue(verifyObject(ISASLMechanism, mechanism))
        self.assertTrue(verifyObject(ISASLExchange, Plain().exchange(b"host")))

    def test_plainVector(self) -> None:
        """
        RFC 4616 section 4: C{\\0tim\\0tanstaaftanstaaf} is user tim, password tanstaaftanstaaf;
        without an initial response the server sends an empty challenge.
        """
        exchange = Plain().exchange(b"host")
        self.assertEqual(exchange.respond(None), Challenge(b""))
        credentials = exchange.respond(b"\0tim\0tanstaaftanstaaf")
        assert IUsernamePassword.providedBy(credentials)
        self.assertEqual(
            (credentials.username, credentials.password), (b"tim", b"tanstaaftanstaaf")
        )

    def test_plainMalformed(self) -> None:
        """
        Missing fields, an authorization identity for someone else, and CR, LF or NUL inside a
        field are refused.
        """
        for response in [
            b"tim\0pw",
            b"\0\0pw",
            b"\0tim\0",
            b"eve\0tim\0pw",
            b"\0tim\0p\r\nw",
            b"\0tim\0p\0w",
            b"\0t\xffim\0pw",
        ]:
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


class ScramMechanismTests(SynchronousTestCase):
    """
    SCRAM-SHA-256 and SCRAM-SHA-1 on their own.
    """

    def setUp(self) -> None:
        self.fixNonce(RFC7677_SERVER_NONCE)

    def fixNonce(self, nonce: str | None) -> None:
        """
        Make the server nonce C{nonce}, as in an RFC example, or random again with L{None}.
        """
        self.patch(sasl, "_serverNonce", RANDOM_NONCE if nonce is None else lambda: nonce)

    def exchange(self, source: Any = RFC_SOURCE, hashName: str = "sha256") -> ISASLExchange:
        return Scram(source, hashName).exchange(b"host")

    def clientFirst(self, exchange: ISASLExchange) -> None:
        challenge = respond(exchange, RFC7677[0][0])
        self.assertEqual(challenge, Challenge(RFC7677[0][1]))

    def test_interfaces(self) -> None:
        for hashName, name in [("sha256", b"SCRAM-SHA-256"), ("sha1", b"SCRAM-SHA-1")]:
            mechanism = Scram(RFC_SOURCE, hashName)
            self.assertTrue(verifyObject(ISASLMechanism, mechanism))
            self.assertEqual((mechanism.name, mechanism.cleartext), (name, False))
        self.assertRaises(ValueError, Scram, RFC_SOURCE, "md5")

    def test_rfc7677(self) -> None:
        """
        RFC 7677 section 3, byte for byte: the server-first and server-final messages, then
        credentials that check against the StoredKey of "pencil" and no other.
        """
        exchange = self.exchange()
        self.assertEqual(respond(exchange, None), Challenge(b""))
        for clientMessage, serverMessage in RFC7677:
            self.assertEqual(respond(exchange, clientMessage), Challenge(serverMessage))
        credentials = respond(exchange, b"")
        self.assertTrue(IScramCredentials.providedBy(credentials))
        self.assertEqual((credentials.username, credentials.hashName), (b"user", "sha256"))
        self.assertTrue(credentials.checkStoredKey(RFC7677_SECRETS.storedKey))
        other = deriveScramSecrets("sha256", b"pencil!", RFC7677_SECRETS.salt, 4096)
        self.assertFalse(credentials.checkStoredKey(other.storedKey))

    def test_rfc5802(self) -> None:
        """
        RFC 5802 section 5, byte for byte, with SCRAM-SHA-1.
        """
        self.fixNonce(RFC5802_SERVER_NONCE)
        exchange = self.exchange(hashName="sha1")
        for clientMessage, serverMessage in RFC5802:
            self.assertEqual(respond(exchange, clientMessage), Challenge(serverMessage))
        credentials = respond(exchange, b"")
        self.assertTrue(credentials.checkStoredKey(RFC5802_SECRETS.storedKey))

    def test_scrampClient(self) -> None:
        """
        scramp's client logs in, and accepts the server's signature, with both hashes.
        """
        self.fixNonce(None)
        for mechanism, hashName in [("SCRAM-SHA-256", "sha256"), ("SCRAM-SHA-1", "sha1")]:
            client = ScramClient([mechanism], "user", "pencil")
            exchange = self.exchange(hashName=hashName)
            serverFirst = respond(exchange, client.get_client_first().encode())
            client.set_server_first(serverFirst.data.decode())
            serverFinal = respond(exchange, client.get_client_final().encode())
            client.set_server_final(serverFinal.data.decode())
            self.assertTrue(IScramCredentials.providedBy(respond(exchange, b"")))

    def test_freshNonce(self) -> None:
        """
        Every exchange has its own server nonce.
        """
        self.fixNonce(None)
        first, second = (respond(self.exchange(), RFC7677[0][0]) for _ in range(2))
        self.assertNotEqual(first, second)

    def test_wrongProof(self) -> None:
        """
        A proof made with another password ends the exchange at once, without the server's
        signature: the credentials go to the portal, which refuses them.
        """
        exchange = self.exchange()
        self.clientFirst(exchange)
        clientFinal = RFC7677[1][0][:-8] + b"AAAAAAA="
        credentials = respond(exchange, clientFinal)
        self.assertTrue(IScramCredentials.providedBy(credentials))
        self.assertFalse(credentials.checkStoredKey(RFC7677_SECRETS.storedKey))

    def test_unknownUser(self) -> None:
        """
        A source's L{None} gets fake secrets: a server-first message shaped like a real one
        (16-octet salt, 4096 iterations), stable across exchanges, and a proof that fails.
        """
        source = SecretTable({})
        first = respond(self.exchange(source), RFC7677[0][0])
        self.assertEqual(respond(self.exchange(source), RFC7677[0][0]), first)
        self.assertRegex(first.data, rb"^r=[^,]+,s=[A-Za-z0-9+/]{22}==,i=4096$")
        exchange = self.exchange(source)
        respond(exchange, RFC7677[0][0])
        credentials = respond(exchange, RFC7677[1][0])
        fake = sasl.fakeScramSecrets("sha256", b"user", 4096)
        self.assertFalse(credentials.checkStoredKey(fake.storedKey))

    def test_yFlag(self) -> None:
        """
        C{y} (the client could bind, but thinks the server cannot) is accepted (RFC 5802
        section 6); its binding data is C{y,,}.
        """
        exchange = self.exchange()
        serverFirst = respond(exchange, b"y" + RFC7677[0][0][1:]).data
        withoutProof = b"c=eSws,r=rOprNGfwEbeRWgbNEkqO" + RFC7677_SERVER_NONCE.encode()
        authMessage = b",".join([RFC7677[0][0][3:], serverFirst, withoutProof])
        proof = clientProof("sha256", b"pencil", RFC7677_SECRETS, authMessage)
        serverFinal = respond(exchange, withoutProof + b",p=" + b64(proof))
        self.assertTrue(serverFinal.data.startswith(b"v="))
        self.assertTrue(IScramCredentials.providedBy(respond(exchange, b"")))

    def test_malformedClientFirst(self) -> None:
        """
        A client-first message that is not SCRAM, asks for channel binding or for another
        user, or holds CR, LF or NUL is refused before any look-up.
        """
        for message in [
            b"",
            b"n,,",
            b"x,,n=user,r=abc",
            b"p=tls-unique,,n=user,r=abc",
            b"p=tls-server-end-point,,n=user,r=abc",
            b"n,a=admin,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=,r=abc",
            b"n,,n=us=er,r=abc",
            b"n,,n=us\r\ner,r=abc",
            b"n,,n=user,r=a\nbc",
            b"n,,n=us\0er,r=abc",
            b"n,,n=\xffuser,r=abc",
        ]:
            self.assertRaises(MalformedResponse, respond, self.exchange(SecretTable({})), message)

    def test_malformedAfterLookUp(self) -> None:
        """
        What scramp finds wrong once the user name is read is refused too: a missing or
        non-printable nonce, an empty attribute.
        """
        for message in [b"n,,n=user", b"n,,n=user,r=", b"n,,n=user,r=a\x7fb", b"n,,n=user,r=a,="]:
            self.assertRaises(MalformedResponse, respond, self.exchange(), message)

    def test_malformedClientFinal(self) -> None:
        """
        A client-final message with another nonce, other channel-binding data, no proof, a
        proof in bad base64, or CR, LF or NUL is malformed, not a wrong password.
        """
        nonce = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        proof = b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        for message in [
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO,%s" % (proof,),
            b"c=biws,%sX,%s" % (nonce, proof),
            b"c=%s,%s,%s" % (b64(b"p=tls-unique,,"), nonce, proof),
            b"c=eSws,%s,%s" % (nonce, proof),
            b"c=biws,%s" % (nonce,),
            b"c=biws,%s,p=%%%%%%" % (nonce,),
            b"c=biws,%s,%s\r\n" % (nonce, proof),
            b"c=biws,%s,%s\0" % (nonce, proof),
        ]:
            exchange = self.exchange()
            self.clientFirst(exchange)
            self.assertRaises(MalformedResponse, respond, exchange, message)

    def test_lastResponseEmpty(self) -> None:
        """
        The client acknowledges the server's signature with an empty response, nothing else.
        """
        exchange = self.exchange()
        for clientMessage, _ in RFC7677:
            respond(exchange, clientMessage)
        self.assertRaises(MalformedResponse, respond, exchange, b"v=x")

    def test_unusableSecrets(self) -> None:
        """
        Secrets SCRAM clients would refuse are the server's problem: a L{ValueError}, not a
        malformed response.
        """
        weak = RFC7677_SECRETS._replace(iterations=1000)
        exchange = self.exchange(SecretTable({(b"user", "sha256"): weak}))
        self.assertRaises(ValueError, respond, exchange, RFC7677[0][0])


class OAuthMechanismTests(SynchronousTestCase):
    """
    OAUTHBEARER and XOAUTH2 on their own, with L{OAuthTokenChecker}.
    """

    def setUp(self) -> None:
        self.validator = TokenTable({RFC7628_TOKEN: b"user@example.com", b"tok": b"alice"})
        self.checker = OAuthTokenChecker(self.validator)

    def test_interfaces(self) -> None:
        for mechanism, name in [
            (OAuthBearer(self.checker), b"OAUTHBEARER"),
            (XOAuth2(self.checker), b"XOAUTH2"),
        ]:
            self.assertTrue(verifyObject(ISASLMechanism, mechanism))
            self.assertEqual((mechanism.name, mechanism.cleartext), (name, True))

    def test_rfc7628Success(self) -> None:
        """
        RFC 7628 section 4.1: the initial response names user@example.com and carries the
        token; the login that follows does not ask the validator again.
        """
        exchange = OAuthBearer(self.checker).exchange(b"host")
        credentials = respond(exchange, RFC7628_INITIAL)
        self.assertTrue(IOAuthBearerCredentials.providedBy(credentials))
        self.assertEqual(
            (credentials.username, credentials.token), (b"user@example.com", RFC7628_TOKEN)
        )
        avatarId = self.successResultOf(self.checker.requestAvatarId(credentials))
        self.assertEqual(avatarId, b"user@example.com")
        self.assertEqual(self.validator.calls, [(b"user@example.com", RFC7628_TOKEN)])

    def test_rfc7628Failure(self) -> None:
        """
        RFC 7628 section 4.3, byte for byte: a refused token gets the JSON error challenge;
        the client's C{\\x01} then yields credentials the checker refuses, still without
        asking the validator again.
        """
        self.validator.tokens.clear()
        mechanism = OAuthBearer(
            self.checker,
            scope="example_scope",
            openidConfiguration="https://example.com/.well-known/openid-configuration",
        )
        exchange = mechanism.exchange(b"host")
        self.assertEqual(respond(exchange, RFC7628_INITIAL), Challenge(RFC7628_ERROR))
        credentials = respond(exchange, b"\x01")
        self.failureResultOf(self.checker.requestAvatarId(credentials), UnauthorizedLogin)
        self.assertEqual(len(self.validator.calls), 1)

    def test_defaultError(self) -> None:
        """
        Without a scope or discovery URL, the error challenge has the status alone.
        """
        exchange = OAuthBearer(self.checker).exchange(b"host")
        challenge = respond(exchange, b"n,a=bob,\x01auth=Bearer bad\x01\x01")
        self.assertEqual(json.loads(challenge.data), {"status": "invalid_token"})

    def test_withoutAuthorizationIdentity(self) -> None:
        """
        Without C{a=} the token alone names the user; without an initial response the server
        asks for one with an empty challenge.
        """
        exchange = OAuthBearer(self.checker).exchange(b"host")
        self.assertEqual(respond(exchange, None), Challenge(b""))
        credentials = respond(exchange, b"y,,\x01host=h\x01auth=bearer  tok\x01\x01")
        self.assertIsNone(credentials.username)
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(credentials)), b"alice")
        self.assertEqual(self.validator.calls, [(None, b"tok")])

    def test_otherUser(self) -> None:
        """
        A token for another user than the one named is refused.
        """
        exchange = OAuthBearer(self.checker).exchange(b"host")
        self.assertIsInstance(respond(exchange, b"n,a=bob,\x01auth=Bearer tok\x01\x01"), Challenge)

    def test_escapedName(self) -> None:
        """
        The authorization identity is a GS2 saslname: C{=2C} is a comma, C{=3D} an equals sign.
        """
        self.validator.tokens[b"t"] = b"a,b=c"
        exchange = OAuthBearer(self.checker).exchange(b"host")
        credentials = respond(exchange, b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01")
        self.assertEqual(credentials.username, b"a,b=c")

    def test_xoauth2(self) -> None:
        """
        Google's format: C{user=...\\x01auth=Bearer ...\\x01\\x01}; a refusal gets Google's
        error challenge, answered with an empty response.
        """
        exchange = XOAuth2(self.checker).exchange(b"host")
        credentials = respond(exchange, b"user=alice\x01auth=Bearer tok\x01\x01")
        self.assertEqual((credentials.username, credentials.token), (b"alice", b"tok"))
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(credentials)), b"alice")
        exchange = XOAuth2(self.checker, scope="https://mail.google.com/").exchange(b"host")
        challenge = respond(exchange, b"user=bob\x01auth=Bearer ya29.bad\x01\x01")
        self.assertEqual(
            challenge.data,
            b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}',
        )
        credentials = respond(exchange, b"")
        self.failureResultOf(self.checker.requestAvatarId(credentials), UnauthorizedLogin)

    def test_malformed(self) -> None:
        """
        Responses that do not follow the grammar, carry no Bearer token, ask for channel
        binding, or hold CR, LF or NUL are refused before the validator is asked.
        """
        cases = {
            OAuthBearer(self.checker): [
                b"",
                b"\x01",
                b"n,,auth=Bearer tok\x01\x01",
                b"n,,\x01auth=Bearer tok\x01",
                b"n,,\x01auth=Bearer tok",
                b"p=tls-unique,,\x01auth=Bearer tok\x01\x01",
                b"n,b=x,\x01auth=Bearer tok\x01\x01",
                b"n,a=x=y,\x01auth=Bearer tok\x01\x01",
                b"n,,\x01auth=Basic dG9rOnB3\x01\x01",
                b"n,,\x01auth=Bearer\x01\x01",
                b"n,,\x01auth=Bearer t!k\x01\x01",
                b"n,,\x01host=h\x01\x01",
                b"n,,\x01auth=Bearer tok\x01auth=Bearer tok\x01\x01",
                b"n,,\x01=x\x01auth=Bearer tok\x01\x01",
                b"n,,\x01auth=Bearer tok\x01ho\rst=h\x01\x01",
                b"n,a=us\ner,\x01auth=Bearer tok\x01\x01",
                b"n,,\x01auth=Bearer tok\x01x=\0\x01\x01",
            ],
            XOAuth2(self.checker): [
                b"",
                b"user=alice\x01auth=Bearer tok\x01",
                b"auth=Bearer tok\x01\x01",
                b"user=\x01auth=Bearer tok\x01\x01",
                b"user=alice\x01\x01",
                b"user=al\r\nice\x01auth=Bearer tok\x01\x01",
                b"user=\xff\x01auth=Bearer tok\x01\x01",
            ],
        }
        for mechanism, responses in cases.items():
            for response in responses:
                exchange = mechanism.exchange(b"host")
                self.assertRaises(MalformedResponse, respond, exchange, response)
        self.assertEqual(self.validator.calls, [])

    def test_validatorError(self) -> None:
        """
        A validator that cannot decide fails the exchange with its own error, which the
        protocol answers with C{[SYS/TEMP]}; nothing is recorded.
        """
        self.validator.error = ConnectionRefusedError()
        exchange = OAuthBearer(self.checker).exchange(b"host")
        self.assertRaises(ConnectionRefusedError, respond, exchange, RFC7628_INITIAL)

    def test_checkerWithoutExchange(self) -> None:
        """
        Credentials that did not go through an exchange are validated at the login, each time.
        """
        credentials = OAuthBearerCredentials(b"alice", b"tok")
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(credentials)), b"alice")
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(credentials)), b"alice")
        self.assertEqual(len(self.validator.calls), 2)
        unknown = OAuthBearerCredentials(b"alice", b"nope")
        self.failureResultOf(self.checker.requestAvatarId(unknown), UnauthorizedLogin)


def saslLine(session: Session) -> bytes:
    """
    The C{SASL} line of the session's C{CAPA} answer, or C{b""} without one.
    """
    lines = [line for line in multiline(session.command(b"CAPA")) if line.startswith(b"SASL ")]
    return lines[0] if lines else b""


# More than any per-peer penalty for repeated failures adds to authFailureDelay.
LONG_ENOUGH = 60


def scramAuth(
    session: Session,
    username: str,
    password: str,
    mechanism: str = "SCRAM-SHA-256",
    initialResponse: bool = True,
) -> tuple[list[bytes], Any]:
    """
    Run a SCRAM exchange with scramp's client as far as it goes.

    @return: the server's lines (the last one the final answer, or C{b""} while it waits),
        and the client, to check the server's signature with.
    """
    client = ScramClient([mechanism], username, password)
    first = b64(client.get_client_first().encode())
    lines = []
    if initialResponse:
        lines.append(session.command(b"AUTH " + mechanism.encode() + b" " + first))
    else:
        lines.append(session.command(b"AUTH " + mechanism.encode()))
        assert lines[-1] == b"+ \r\n", lines
        lines.append(session.command(first))
    if not lines[-1].startswith(b"+ "):
        return lines, client
    client.set_server_first(base64.b64decode(lines[-1][2:]).decode())
    lines.append(session.command(b64(client.get_client_final().encode())))
    if lines[-1].startswith(b"+ "):
        client.set_server_final(base64.b64decode(lines[-1][2:]).decode())
        lines.append(session.command(b""))
    return lines, client


class ScramAuthCommandTests(SynchronousTestCase):
    """
    R30, R31: SCRAM through C{AUTH}, against a passwd-file.
    """

    def setUp(self) -> None:
        # Plaintext users' keys are derived in a thread: here, at once.
        self.patch(cred, "deferToThread", defer.maybeDeferred)
        self.clock = Clock()
        path = self.mktemp()
        with open(path, "w") as passwd:
            passwd.write("user:" + hashPassword("pencil", "SCRAM-SHA-256") + "\n")
            passwd.write("sha1:" + hashPassword("pencil", "SCRAM-SHA-1") + "\n")
            passwd.write("plain:{PLAIN}pencil\n")
            passwd.write("hashed:" + hashPassword("pencil", "SSHA512") + "\n")
        mailboxes = {name: MemoryMailbox(MESSAGES) for name in (b"user", b"sha1", b"plain")}
        self.portal = Portal(MemoryRealm(mailboxes), [PasswdFileChecker(path)])
        self.factory = POP3ServerFactory(
            self.portal,
            reactor=self.clock,
            authFailureDelay=1,
            mechanisms=mechanismsFor(self.portal),
        )

    def test_login(self) -> None:
        """
        SCRAM-SHA-256 logs in a SCRAM-stored user and a plaintext one, SCRAM-SHA-1 a
        SCRAM-SHA-1 user and the plaintext one, with or without an initial response; the
        client accepts the server's signature; the realm opens the maildrop.
        """
        for username, mechanism, initialResponse in [
            ("user", "SCRAM-SHA-256", True),
            ("user", "SCRAM-SHA-256", False),
            ("plain", "SCRAM-SHA-256", True),
            ("sha1", "SCRAM-SHA-1", True),
            ("plain", "SCRAM-SHA-1", False),
        ]:
            session = Session(self.factory, REMOTE)
            lines, _ = scramAuth(session, username, "pencil", mechanism, initialResponse)
            self.assertEqual(lines[-1], b"+OK Logged in.\r\n", (username, mechanism))
            self.assertTrue(session.command(b"STAT").startswith(b"+OK 3 "))
            session.drop()

    def test_plainLoginToScramUser(self) -> None:
        """
        PASS and AUTH PLAIN work for a SCRAM-stored user.
        """
        session = Session(self.factory, LOOPBACK)
        self.assertTrue(session.login(b"user", b"pencil").startswith(b"+OK"))
        session.drop()
        session = Session(self.factory, LOOPBACK)
        response = session.command(b"AUTH PLAIN " + b64(b"\0user\0pencil"))
        self.assertTrue(response.startswith(b"+OK"))

    def test_wrongPassword(self) -> None:
        """
        A wrong password is answered after the client-final message, late, with the same
        C{[AUTH]} refusal as a wrong PASS, and counts as a failed login.
        """
        session = Session(self.factory, REMOTE)
        lines, _ = scramAuth(session, "user", "pencil!")
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[-1], b"")
        self.clock.advance(1)
        self.assertEqual(session.read(), Response.AUTH_FAILED + b"\r\n")
        self.assertEqual(session.protocol._authFailures, 1)

    def test_unknownUserLikeWrongPassword(self) -> None:
        """
        An unknown user, and a user whose password SCRAM cannot use, get a server-first
        message of the same shape as a real user's and the same final answer as a wrong
        password.
        """
        for username, password in [("user", "wrong"), ("nobody", "pencil"), ("hashed", "pencil")]:
            session = Session(self.factory, REMOTE)
            lines, _ = scramAuth(session, username, password)
            serverFirst = base64.b64decode(lines[0][2:])
            shape = rb"r=[\x21-\x2b\x2d-\x7e]{40,},s=[A-Za-z0-9+/]{22}==,i=4096"
            self.assertRegex(serverFirst, shape)
            self.assertEqual(lines[1:], [b""])
            self.clock.advance(LONG_ENOUGH)
            self.assertEqual(session.read(), Response.AUTH_FAILED + b"\r\n")

    def test_malformed(self) -> None:
        """
        Bad base64, channel-binding requests, bad attributes, a nonce that is not the
        server's, and CR, LF or NUL inside a field are refused with C{-ERR} at once, and the
        session stays in AUTHORIZATION.
        """
        malformed = Response.SASL_MALFORMED + b"\r\n"
        for clientFirst in [
            b"p=tls-unique,,n=user,r=abc",
            b"n,,n=user,r=abc,q",
            b"n,,n=us\rer,r=abc",
            b"n,,n=us\ner,r=abc",
            b"n,,n=us\0er,r=abc",
        ]:
            session = Session(self.factory, REMOTE)
            self.assertEqual(session.command(b"AUTH SCRAM-SHA-256 " + b64(clientFirst)), malformed)
            self.assertEqual(session.command(b"STAT"), Response.WRONG_STATE + b"\r\n")
        session = Session(self.factory, REMOTE)
        self.assertEqual(session.command(b"AUTH SCRAM-SHA-256 bi**"), malformed)
        session.command(b"AUTH SCRAM-SHA-256 " + b64(b"n,,n=user,r=abc"))
        self.assertEqual(session.command(b"YyxyPWFiYyxwPQ=!"), malformed)
        session.command(b"AUTH SCRAM-SHA-256 " + b64(b"n,,n=user,r=abc"))
        clientFinal = b"c=biws,r=abcdef,p=" + b64(b"x" * 32)
        self.assertEqual(session.command(b64(clientFinal)), malformed)
        self.assertEqual(session.protocol._authFailures, 0)

    def test_cancel(self) -> None:
        """
        C{*} after the server-first message cancels with C{-ERR}; USER works then.
        """
        session = Session(self.factory, LOOPBACK)
        self.assertTrue(
            session.command(b"AUTH SCRAM-SHA-256 " + b64(b"n,,n=user,r=abc")).startswith(b"+ ")
        )
        self.assertEqual(session.command(b"*"), Response.SASL_CANCELLED + b"\r\n")
        self.assertEqual(session.command(b"USER user"), b"+OK\r\n")

    def test_listing(self) -> None:
        """
        SCRAM is listed first, also where cleartext mechanisms are not, before and after
        login; without a SCRAM-capable user it is not.
        """
        session = Session(self.factory, REMOTE)
        self.assertEqual(saslLine(session), b"SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5")
        self.assertEqual(scramAuth(session, "user", "pencil")[0][-1], b"+OK Logged in.\r\n")
        self.assertEqual(saslLine(session), b"SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5")
        session = Session(self.factory, LOOPBACK)
        self.assertEqual(saslLine(session), b"SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 PLAIN LOGIN")
        path = self.mktemp()
        with open(path, "w") as passwd:
            passwd.write("hashed:" + hashPassword("pencil", "SSHA512") + "\n")
        portal = Portal(MemoryRealm({}), [PasswdFileChecker(path)])
        factory = POP3ServerFactory(portal, reactor=self.clock, mechanisms=mechanismsFor(portal))
        self.assertEqual(saslLine(Session(factory, LOOPBACK)), b"SASL PLAIN LOGIN")


class OAuthAuthCommandTests(SynchronousTestCase):
    """
    R30, R31, R34: OAUTHBEARER and XOAUTH2 through C{AUTH}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.validator = TokenTable({RFC7628_TOKEN: b"user@example.com"})
        self.checker = OAuthTokenChecker(self.validator)
        realm = MemoryRealm({b"user@example.com": MemoryMailbox(MESSAGES)})
        self.portal = Portal(realm, [self.checker])
        self.factory = POP3ServerFactory(
            self.portal,
            reactor=self.clock,
            authFailureDelay=1,
            mechanisms=mechanismsFor(self.portal),
        )

    def test_login(self) -> None:
        """
        RFC 7628's initial response logs in, over loopback (or TLS) only.
        """
        session = Session(self.factory, LOOPBACK)
        response = session.command(b"AUTH OAUTHBEARER " + b64(RFC7628_INITIAL))
        self.assertEqual(response, b"+OK Logged in.\r\n")
        session.drop()
        session = Session(self.factory, LOOPBACK)
        xoauth2 = b"user=user@example.com\x01auth=Bearer " + RFC7628_TOKEN + b"\x01\x01"
        self.assertEqual(session.command(b"AUTH XOAUTH2"), b"+ \r\n")
        self.assertEqual(session.command(b64(xoauth2)), b"+OK Logged in.\r\n")
        self.assertEqual(len(self.validator.calls), 2)

    def test_refused(self) -> None:
        """
        A refused token gets the error challenge at once; the client's answer gets the usual
        late C{[AUTH]} refusal, counted as a failed login.
        """
        self.validator.tokens.clear()
        for mechanism, acknowledgement in [(b"OAUTHBEARER", b"AQ=="), (b"XOAUTH2", b"")]:
            session = Session(self.factory, LOOPBACK)
            response = b"n,a=user@example.com,\x01auth=Bearer x\x01\x01"
            if mechanism == b"XOAUTH2":
                response = b"user=user@example.com\x01auth=Bearer x\x01\x01"
            challenge = session.command(b"AUTH " + mechanism + b" " + b64(response))
            self.assertIn(b'"status"', base64.b64decode(challenge[2:]))
            self.assertEqual(session.command(acknowledgement), b"")
            self.clock.advance(LONG_ENOUGH)
            self.assertEqual(session.read(), Response.AUTH_FAILED + b"\r\n")
            self.assertEqual(session.protocol._authFailures, 1)

    def test_cancelAfterRefusal(self) -> None:
        """
        R31: cancelling with C{*} after the error challenge is answered C{-ERR}, and counts,
        late, as the failed login it is, so that a guesser cannot skip the delay.
        """
        self.validator.tokens.clear()
        session = Session(self.factory, LOOPBACK)
        response = b"n,a=user@example.com,\x01auth=Bearer x\x01\x01"
        session.command(b"AUTH OAUTHBEARER " + b64(response))
        self.assertEqual(session.command(b"*"), b"")
        self.clock.advance(LONG_ENOUGH)
        self.assertEqual(session.read(), Response.AUTH_FAILED + b"\r\n")
        self.assertEqual(session.protocol._authFailures, 1)

    def test_cancelBeforeToken(self) -> None:
        """
        R31: cancelling before sending a token is a plain C{-ERR}, not a failed login.
        """
        session = Session(self.factory, LOOPBACK)
        self.assertEqual(session.command(b"AUTH XOAUTH2"), b"+ \r\n")
        self.assertEqual(session.command(b"*"), Response.SASL_CANCELLED + b"\r\n")
        self.assertEqual(session.protocol._authFailures, 0)

    def test_validatorError(self) -> None:
        """
        A validator that cannot decide is a temporary server failure, not a refusal.
        """
        self.validator.error = ConnectionRefusedError()
        session = Session(self.factory, LOOPBACK)
        response = session.command(b"AUTH OAUTHBEARER " + b64(RFC7628_INITIAL))
        self.assertEqual(response, Response.SYS_TEMP + b"\r\n")
        self.assertEqual(len(self.flushLoggedErrors(ConnectionRefusedError)), 1)

    def test_malformed(self) -> None:
        """
        A token response with CR, LF or NUL is refused at once.
        """
        for response in [
            b"n,,\x01auth=Bearer tok\x01a=\r\x01\x01",
            b"user=a\nb\x01auth=Bearer tok\x01\x01",
        ]:
            session = Session(self.factory, LOOPBACK)
            mechanism = b"XOAUTH2 " if response.startswith(b"user") else b"OAUTHBEARER "
            self.assertEqual(
                session.command(b"AUTH " + mechanism + b64(response)),
                Response.SASL_MALFORMED + b"\r\n",
            )

    def test_listing(self) -> None:
        """
        OAUTHBEARER and XOAUTH2 are listed only where cleartext logins are allowed, and only
        when the portal checks L{IOAuthBearerCredentials} with the mechanisms' own checker.
        """
        self.assertEqual(saslLine(Session(self.factory, LOOPBACK)), b"SASL OAUTHBEARER XOAUTH2")
        remote = Session(self.factory, REMOTE)
        self.assertEqual(saslLine(remote), b"")
        response = remote.command(b"AUTH OAUTHBEARER " + b64(RFC7628_INITIAL))
        self.assertEqual(response, Response.NO_MECHANISM + b"\r\n")
        self.assertEqual(self.validator.calls, [])
        checker = InMemoryUsernamePasswordDatabaseDontUse(tim=b"pw")
        portal = Portal(MemoryRealm({}), [checker])
        mechanisms = (OAuthBearer(self.checker), XOAuth2(self.checker), Plain())
        factory = POP3ServerFactory(portal, reactor=self.clock, mechanisms=mechanisms)
        self.assertEqual(saslLine(Session(factory, LOOPBACK)), b"SASL PLAIN")
        self.assertEqual(mechanismsFor(portal), sasl.DEFAULT_MECHANISMS)
        # A portal checking tokens with another checker: the verdicts would not be shared.
        portal.registerChecker(OAuthTokenChecker(self.validator))
        self.assertEqual(saslLine(Session(factory, LOOPBACK)), b"SASL PLAIN")
