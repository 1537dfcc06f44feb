"""
Checks of the extensions (rules R25-R38): CAPA, PIPELINING, response codes, LOGIN-DELAY,
EXPIRE, SASL, STLS and TLS, UTF8 and LANG, LAST.  Each applies only to what the server
advertises; the others are skipped, saying so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import socket

from popd.conformance._client import Connection, Reply, ServerClosed, ServerError, show
from popd.conformance._context import (
    Capabilities,
    Context,
    Fail,
    Security,
    Skip,
    Verdict,
    check,
    failed,
    passed,
    plainResponse,
    skipped,
)

#: The IANA "POP3 Extension Mechanism" registry.
REGISTERED = frozenset(
    {
        b"TOP",
        b"USER",
        b"SASL",
        b"RESP-CODES",
        b"LOGIN-DELAY",
        b"PIPELINING",
        b"EXPIRE",
        b"UIDL",
        b"IMPLEMENTATION",
        b"STLS",
        b"AUTH-RESP-CODE",
        b"UTF8",
        b"LANG",
    }
)

# RFC 2449 section 8: resp-code = "[" resp-level *("/" resp-level) "]".
_LEVEL = rb"[\x21-\x2e\x30-\x5c\x5e-\x7e]+"
_RESPONSE_CODE = re.compile(rb"\[" + _LEVEL + rb"(?:/" + _LEVEL + rb")*\]")
_NUMBER = re.compile(rb"\d+\Z")


def _both(context: Context) -> tuple[Capabilities, Capabilities]:
    """
    @return: the capabilities before and after login.
    @raise Skip: CAPA is not implemented.
    """
    before = context.authCapabilities()
    if before is None:
        raise Skip("CAPA is not implemented (RFC 2449 is optional)")
    after = context.transactionCapabilities()
    if after is None:
        raise Fail("CAPA works before login but not after")
    return before, after


@check(25, "bothStates")
def bothStates(context: Context) -> Verdict:
    """
    CAPA works in both states, and capabilities available in the AUTHORIZATION state are
    announced in both states (RFC 2449 section 5).
    """
    before, after = _both(context)
    missing = sorted(set(before.tags()) - set(after.tags()))
    if missing:
        return failed("announced before login only: " + ", ".join(t.decode() for t in missing))
    return passed(f"{len(before.tags())} capabilities before login, all announced after it")


@check(25, "registeredTags")
def registeredTags(context: Context) -> Verdict:
    """
    Every CAPA tag is one registered with IANA (RFC 2449 section 9), or starts with C{X} for
    an experiment: no misspelt or invented tags.
    """
    before, after = _both(context)
    tags = set(before.tags()) | set(after.tags())
    unknown = sorted(tag for tag in tags if tag not in REGISTERED and not tag.startswith(b"X"))
    if unknown:
        return failed("unregistered: " + ", ".join(show(tag) for tag in unknown))
    return passed(", ".join(sorted(tag.decode() for tag in tags)))


@check(26, "inOrder")
def inOrder(context: Context) -> Verdict:
    """
    With PIPELINING, a whole session sent in one write, from login to QUIT and with C{RETR} of
    the largest message in the middle, is answered completely and in order (RFC 2449 section
    6.6): each answer is the one the same command got alone.
    """
    context.advertised(b"PIPELINING")
    maildrop = context.maildrop()
    messages = maildrop.retrieved()
    if not messages:
        raise Skip("no message could be retrieved")
    largest = max(messages, key=lambda m: m.size)
    smallest = min(messages, key=lambda m: m.size)
    user, password = context.user()
    method = context.loginMethod()
    if method == "USER":
        login = [b"USER " + user, b"PASS " + password]
    elif method == "PLAIN":
        login = [b"AUTH PLAIN " + plainResponse(user, password)]
    else:
        raise Skip("the suite logs in with APOP here, which it does not pipeline")
    commands = [b"STAT", b"LIST", b"RETR %d" % largest.number, b"NOOP"]
    if maildrop.uids is not None:
        commands.append(b"UIDL")
    commands += [b"RETR %d" % smallest.number, b"STAT"]
    expiring = context.expiring()
    ending = [] if expiring else [b"QUIT"]
    with context.session(login=False) as session:
        connection = session.connection
        try:
            connection.send(b"".join(line + b"\r\n" for line in login + commands + ending))
            for line in login:
                reply = connection.readStatus()
                if not reply.ok:
                    return failed(f"pipelined {show(line.split()[0])} -> {reply}")
            for line in commands:
                reply = connection.readStatus()
                if line in (b"LIST", b"UIDL") or line.startswith(b"RETR"):
                    body = connection.readBody() if reply.ok else None
                    expected = {
                        b"LIST": maildrop.listBody,
                        b"UIDL": maildrop.uidlBody,
                        b"RETR %d" % largest.number: largest.body,
                        b"RETR %d" % smallest.number: smallest.body,
                    }[line]
                    if body != expected:
                        return failed(f"pipelined {show(line)} -> {reply}, not what it got alone")
                elif line == b"STAT" and reply.line != maildrop.stat.line:
                    return failed(f"pipelined STAT -> {reply}, alone {maildrop.stat}")
                elif not reply.ok:
                    return failed(f"pipelined {show(line)} -> {reply}")
            if ending:
                reply = connection.readStatus()
                if not reply.ok:
                    return failed(f"pipelined QUIT -> {reply}")
        finally:
            # Whatever happened, the session was pipelined to its end (or to its failure).
            session.drop()
    return passed(
        f"{len(login + commands + ending)} commands in one write, answered in order, "
        f"RETR of {largest.size} octets included"
    )


@check(27, "codeSyntax", afterAll=True)
def codeSyntax(context: Context) -> Verdict:
    """
    With RESP-CODES, a status text starting with C{[} is a response code, so every such text
    of the run must be a well-formed one, C{[LEVEL/LEVEL]} (RFC 2449 section 8).
    """
    context.advertised(b"RESP-CODES")
    coded = 0
    if not context.log.statusLines:
        raise Skip("the checks selected exchanged nothing with the server")
    for line in context.log.statusLines:
        text = Reply(line.rstrip(b"\r\n")).text
        if text.startswith(b"["):
            if not _RESPONSE_CODE.match(text):
                return failed(f"{show(line)!r}: free text starting with '[' or a malformed code")
            coded += 1
    return passed(f"{coded} response codes in the run, all well-formed")


@check(27, "bracketNotEchoed")
def bracketNotEchoed(context: Context) -> Verdict:
    """
    With RESP-CODES, an unknown command that looks like a response code is not echoed at the
    start of the C{-ERR} text, where a client would read it as the server's code (RFC 2449
    section 8).
    """
    context.advertised(b"RESP-CODES")
    with context.session() as session:
        reply = session.command(b"[SYS/PERM] x")
    if reply.ok or reply.code == b"SYS/PERM":
        return failed(f"'[SYS/PERM] x' -> {reply}")
    return passed(f"'[SYS/PERM] x' -> {reply}")


def _policy(context: Context, tag: bytes, first: re.Pattern[bytes]) -> Verdict:
    """
    Judge the parameters of LOGIN-DELAY or EXPIRE (RFC 2449 sections 6.5 and 6.7): before
    login, a value optionally followed by C{USER}; after login, the value alone (a number, the
    user's, when C{USER} was announced).
    """
    before = context.advertised(tag)
    after = context.advertised(tag, transaction=True)
    name = tag.decode()
    if not (1 <= len(before) <= 2 and first.match(before[0])):
        return failed(f"{name} {show(b' '.join(before))} before login")
    if len(before) == 2 and before[1].upper() != b"USER":
        return failed(f"{name} {show(b' '.join(before))}: the second word must be USER")
    if len(after) != 1 or not first.match(after[0]):
        return failed(f"{name} {show(b' '.join(after))} after login: not a single value")
    return passed(f"{name} {show(b' '.join(before))} before login, {show(after[0])} after")


@check(28, "loginDelay")
def loginDelay(context: Context) -> Verdict:
    """
    LOGIN-DELAY announces a number of seconds, per user (C{USER}) before login and its value
    after (RFC 2449 section 6.5).  Whether it is enforced is not tested: that would lock the
    suite out.
    """
    return _policy(context, b"LOGIN-DELAY", _NUMBER)


@check(29, "expire")
def expire(context: Context) -> Verdict:
    """
    EXPIRE announces C{NEVER} or a number of days, per user (C{USER}) before login and its
    value after (RFC 2449 section 6.7).
    """
    return _policy(context, b"EXPIRE", re.compile(rb"(?:\d+|NEVER)\Z", re.IGNORECASE))


@check(29, "expireZero")
def expireZero(context: Context) -> Verdict:
    """
    With C{EXPIRE 0}, a retrieved message is removed at QUIT even without C{DELE} (RFC 2449
    section 6.7).  Uses the scratch user.
    """
    if context.advertised(b"EXPIRE", transaction=True)[:1] != (b"0",):
        raise Skip("the policy is not EXPIRE 0")
    context.scratch()
    with context.session(scratch=True) as session:
        count, _ = session.stat()
        if not count:
            raise Skip("the scratch maildrop is empty; it needs at least one message")
        session.multiline(b"RETR 1")
        session.quit()
    with context.session(scratch=True) as session:
        after, _ = session.stat()
    if after != count - 1:
        return failed(f"EXPIRE 0, RETR 1, QUIT: {count} messages, then {after}")
    return passed(f"EXPIRE 0: {count} messages, {after} after RETR 1 and QUIT")


@check(30, "authCode")
def authCode(context: Context) -> Verdict:
    """
    With AUTH-RESP-CODE, every refusal of credentials carries C{[AUTH]} (RFC 3206 section 6):
    a wrong password, an unknown user, a wrong APOP digest, as tried by the run.
    """
    context.advertised(b"AUTH-RESP-CODE")
    context.wrongPasswordLogin()
    for tried, reply in context.failedLogins:
        if reply.code != b"AUTH":
            return failed(f"{tried} -> {reply}")
    return passed(f"[AUTH] for {len(context.failedLogins)} refused logins")


@check(30, "systemCodes")
def systemCodes(context: Context) -> Verdict:
    """
    C{[SYS/TEMP]} and C{[SYS/PERM]} label server failures (RFC 3206 sections 4-5).
    """
    return skipped("needs a server failure, which a black-box suite cannot cause")


def _mechanism(context: Context) -> bytes:
    """
    @return: the SASL mechanism to probe with: PLAIN if offered, else the first one.
    @raise Skip: SASL is not advertised.
    """
    mechanisms = context.authCapabilities()
    context.advertised(b"SASL")
    assert mechanisms is not None
    offered = mechanisms.mechanisms()
    if not offered:
        raise Skip("SASL lists no mechanism")
    return b"PLAIN" if b"PLAIN" in offered else offered[0]


def _saslStep(connection: Connection, line: bytes) -> Reply | bytes:
    """
    Send a line of a SASL exchange.

    @return: the status line that ends the exchange, or the decoded challenge of a C{+}
        continuation (RFC 5034 section 4).
    """
    connection.send(line + b"\r\n")
    answer = connection.readStatusOrChallenge()
    if isinstance(answer, Reply):
        return answer
    try:
        return base64.b64decode(answer, validate=True)
    except ValueError:
        raise Fail(f"challenge {show(answer)!r} is not base64") from None


def _saslDone(result: Reply | bytes, what: str) -> Reply:
    if not isinstance(result, Reply):
        raise Fail(f"{what}: another challenge where the exchange should have ended")
    return result


@check(31, "unknownMechanism")
def unknownMechanism(context: Context) -> Verdict:
    """
    C{AUTH} with a mechanism the server does not offer is answered C{-ERR} (RFC 5034
    section 4).
    """
    _mechanism(context)
    with context.session(login=False) as session:
        result = _saslStep(session.connection, b"AUTH X-NO-SUCH-MECHANISM")
        if not isinstance(result, Reply):
            session.drop()
            return failed("AUTH X-NO-SUCH-MECHANISM -> a challenge")
    if result.ok:
        return failed(f"AUTH X-NO-SUCH-MECHANISM -> {result}")
    return passed(f"AUTH X-NO-SUCH-MECHANISM -> {result}")


def _plainOnly(context: Context) -> None:
    if _mechanism(context) != b"PLAIN":
        raise Skip("SASL PLAIN is not offered")


@check(31, "initialResponse")
def initialResponse(context: Context) -> Verdict:
    """
    C{AUTH PLAIN} with an initial response logs in (RFC 5034 section 4).
    """
    _plainOnly(context)
    user, password = context.user()
    with context.session(login=False) as session:
        result = _saslStep(session.connection, b"AUTH PLAIN " + plainResponse(user, password))
        reply = _saslDone(result, "AUTH PLAIN with an initial response")
        session.loggedIn = reply.ok
    if not reply.ok:
        return failed(f"AUTH PLAIN with an initial response -> {reply}")
    return passed(f"AUTH PLAIN with an initial response -> {reply}")


@check(31, "challengeResponse")
def challengeResponse(context: Context) -> Verdict:
    """
    C{AUTH PLAIN} without an initial response gets a C{+} continuation, and the response
    sent after it logs in (RFC 5034 section 4).
    """
    _plainOnly(context)
    user, password = context.user()
    with context.session(login=False) as session:
        challenge = _saslStep(session.connection, b"AUTH PLAIN")
        if isinstance(challenge, Reply):
            return failed(f"AUTH PLAIN -> {challenge}, not a '+ ' continuation")
        reply = _saslDone(_saslStep(session.connection, plainResponse(user, password)), "PLAIN")
        session.loggedIn = reply.ok
    if not reply.ok:
        return failed(f"AUTH PLAIN, then the response -> {reply}")
    return passed(f"AUTH PLAIN -> '+ ', then the response -> {reply}")


@check(31, "cancel")
def cancel(context: Context) -> Verdict:
    """
    A client answering a challenge with C{*} cancels the exchange, which the server answers
    C{-ERR} (RFC 5034 section 4); a login works after it.
    """
    mechanism = _mechanism(context)
    with context.session(login=False) as session:
        challenge = _saslStep(session.connection, b"AUTH " + mechanism)
        if isinstance(challenge, Reply):
            return failed(f"AUTH {show(mechanism)} -> {challenge}, not a continuation")
        reply = _saslDone(_saslStep(session.connection, b"*"), "cancelled AUTH")
        if reply.ok:
            return failed(f"AUTH {show(mechanism)}, '*' -> {reply}")
        session.login()
    return passed(f"AUTH {show(mechanism)}, '*' -> {reply}; a login worked after it")


@check(31, "invalidBase64")
def invalidBase64(context: Context) -> Verdict:
    """
    A response that is not base64 is answered C{-ERR} (RFC 5034 section 4).
    """
    mechanism = _mechanism(context)
    with context.session(login=False) as session:
        challenge = _saslStep(session.connection, b"AUTH " + mechanism)
        if isinstance(challenge, Reply):
            return failed(f"AUTH {show(mechanism)} -> {challenge}, not a continuation")
        reply = _saslDone(_saslStep(session.connection, b"!not base64!"), "invalid base64")
        session.loggedIn = reply.ok
    if reply.ok:
        return failed(f"AUTH {show(mechanism)}, '!not base64!' -> {reply}")
    return passed(f"AUTH {show(mechanism)}, '!not base64!' -> {reply}")


@check(31, "loginMechanism")
def loginMechanism(context: Context) -> Verdict:
    """
    SASL LOGIN, when offered: user name and password sent base64-encoded after two
    challenges, log in.
    """
    _mechanism(context)
    auth = context.authCapabilities()
    if auth is None or b"LOGIN" not in auth.mechanisms():
        raise Skip("SASL LOGIN is not offered")
    user, password = context.user()
    with context.session(login=False) as session:
        result = _saslStep(session.connection, b"AUTH LOGIN")
        for secret in (user, password):
            if isinstance(result, Reply):
                return failed(f"AUTH LOGIN -> {result} where a challenge was due")
            result = _saslStep(session.connection, base64.b64encode(secret))
        reply = _saslDone(result, "AUTH LOGIN")
        session.loggedIn = reply.ok
    if not reply.ok:
        return failed(f"AUTH LOGIN -> {reply}")
    return passed(f"AUTH LOGIN -> {reply}")


@check(31, "cramMD5")
def cramMD5(context: Context) -> Verdict:
    """
    SASL CRAM-MD5 (RFC 2195), when offered: the HMAC-MD5 of the challenge keyed with the
    password logs in.  Needs the server to hold the password in plaintext.
    """
    _mechanism(context)
    auth = context.authCapabilities()
    if auth is None or b"CRAM-MD5" not in auth.mechanisms():
        raise Skip("SASL CRAM-MD5 is not offered")
    user, password = context.user()
    with context.session(login=False) as session:
        challenge = _saslStep(session.connection, b"AUTH CRAM-MD5")
        if isinstance(challenge, Reply):
            return failed(f"AUTH CRAM-MD5 -> {challenge}, not a challenge")
        digest = hmac.new(password, challenge, hashlib.md5).hexdigest().encode("ascii")
        response = base64.b64encode(user + b" " + digest)
        reply = _saslDone(_saslStep(session.connection, response), "AUTH CRAM-MD5")
        session.loggedIn = reply.ok
    if not reply.ok:
        return skipped(
            f"AUTH CRAM-MD5 -> {reply}; the server may hold no plaintext secret for this user"
        )
    return passed(f"AUTH CRAM-MD5 -> {reply}")


@check(31, "notAfterLogin")
def notAfterLogin(context: Context) -> Verdict:
    """
    C{AUTH} is refused once logged in (RFC 5034 section 4).
    """
    mechanism = _mechanism(context)
    with context.session() as session:
        result = _saslStep(session.connection, b"AUTH " + mechanism)
        if not isinstance(result, Reply):
            session.connection.command(b"*")
            return failed(f"AUTH {show(mechanism)} after login -> a continuation")
    if result.ok:
        return failed(f"AUTH {show(mechanism)} after login -> {result}")
    return passed(f"AUTH {show(mechanism)} after login -> {result}")


def _stlsConnection(context: Context) -> Connection:
    """
    A plain connection to a server that advertises STLS on it.

    @raise Skip: the run uses implicit TLS, or STLS is not advertised.
    """
    capabilities = context.plainCapabilities()
    if capabilities is None or not capabilities.has(b"STLS"):
        raise Skip("STLS is not advertised")
    return context.connect(upgrade=False)


@check(32, "noArguments")
def noArguments(context: Context) -> Verdict:
    """
    C{STLS} takes no argument: C{STLS x} is answered C{-ERR} (RFC 2595 section 4).
    """
    connection = _stlsConnection(context)
    try:
        reply = connection.command(b"STLS x")
    finally:
        connection.close()
    if reply.ok:
        return failed(f"STLS x -> {reply}")
    return passed(f"STLS x -> {reply}")


@check(32, "afterHandshake")
def afterHandshake(context: Context) -> Verdict:
    """
    After C{STLS} and the handshake the session is still in AUTHORIZATION: CAPA no longer
    lists STLS, a second C{STLS} is refused, and a login works (RFC 2595 section 4).
    """
    connection = _stlsConnection(context)
    try:
        reply = connection.command(b"STLS")
        if not reply.ok:
            return failed(f"STLS -> {reply}")
        context.startTLS(connection)
        capa, body = connection.multiline(b"CAPA")
        if body is None:
            return failed(f"CAPA after STLS -> {capa}")
        if any(line.split()[:1] == [b"STLS"] for line in body.upper().split(b"\r\n")):
            return failed("CAPA after STLS still lists STLS")
        again = connection.command(b"STLS")
        if again.ok:
            return failed(f"a second STLS -> {again}")
        user, password = context.user()
        login = context.login(connection, user, password)
        if not login.ok:
            return failed(f"login after STLS -> {login}")
        connection.command(b"QUIT")
    finally:
        connection.close()
    return passed(
        f"{connection.tlsVersion}; CAPA without STLS; STLS again -> {again}; login -> {login}"
    )


@check(32, "notInTransaction")
def notInTransaction(context: Context) -> Verdict:
    """
    C{STLS} is refused in the TRANSACTION state (RFC 2595 section 4).
    """
    connection = _stlsConnection(context)
    try:
        user, password = context.user()
        login = context.login(connection, user, password)
        if not login.ok:
            raise Skip(f"cannot log in without TLS ({login})")
        reply = connection.command(b"STLS")
        if reply.ok:
            return failed(f"STLS after login -> {reply}")
        connection.command(b"QUIT")
    finally:
        connection.close()
    return passed(f"STLS after login -> {reply}")


@check(32, "notOnTLS")
def notOnTLS(context: Context) -> Verdict:
    """
    On a connection that is already TLS, STLS is not advertised and is refused (RFC 2595
    section 4).
    """
    if context.config.security is Security.PLAIN:
        raise Skip("the run uses plain connections (see R32.afterHandshake)")
    capabilities = context.authCapabilities()
    if capabilities is not None and capabilities.has(b"STLS"):
        return failed("CAPA lists STLS on a TLS connection")
    connection = context.connect()
    try:
        reply = connection.command(b"STLS")
    finally:
        connection.close()
    if reply.ok:
        return failed(f"STLS on a TLS connection -> {reply}")
    return passed(f"STLS on a TLS connection -> {reply}")


@check(33, "noInjection")
def noInjection(context: Context) -> Verdict:
    """
    What a client sent after C{STLS} before the handshake is discarded (or the connection
    closed), never answered inside TLS (CVE-2011-0411, CVE-2021-38084): C{STLS} and C{CAPA}
    are sent in one write, and after the handshake an unknown command must be the first
    thing answered.
    """
    connection = _stlsConnection(context)
    try:
        connection.send(b"STLS\r\nCAPA\r\n")
        reply = connection.readStatus()
        if not reply.ok:
            return failed(f"STLS -> {reply}")
        # The server speaks first in no handshake: anything now is an answer in cleartext.
        cleartext = connection.readAvailable(0.2)
        if cleartext:
            return failed(f"answered the injected CAPA before the handshake: {show(cleartext)!r}")
        try:
            context.startTLS(connection)
        except ServerError:
            return passed("the server closed the connection instead of negotiating (allowed)")
        early = connection.readAvailable(0.3)
        if early:
            return failed(f"answered the injected CAPA inside TLS: {show(early)!r}")
        answer = connection.command(b"XYZZY")
        if answer.ok:
            return failed(f"the first answer inside TLS is {answer}: the injected CAPA's")
        connection.command(b"QUIT")
    except ServerClosed:
        return passed("the server closed the connection (allowed)")
    finally:
        connection.close()
    return passed(f"the injected CAPA was discarded; XYZZY inside TLS -> {answer}")


@check(34, "cleartextRefused")
def cleartextRefused(context: Context) -> Verdict:
    """
    Servers must be able to refuse cleartext logins (USER/PASS, SASL PLAIN and LOGIN) without
    TLS (RFC 2595 section 2.2); where refused, they are not advertised and USER/PASS is
    answered C{-ERR}.  Only observable on a plain connection that is not loopback.
    """
    capabilities = context.plainCapabilities()
    address = socket.getaddrinfo(context.config.host, context.config.port)[0][4][0]
    if ipaddress.ip_address(address).is_loopback:
        raise Skip("the server is reached over loopback, which servers may treat as secure")
    if capabilities is None:
        raise Skip("CAPA is not implemented")
    offered = capabilities.has(b"USER") or {b"PLAIN", b"LOGIN"} & set(capabilities.mechanisms())
    if offered:
        raise Skip(
            "cleartext logins are offered without TLS here; whether they can be refused "
            "is configuration a client cannot see"
        )
    connection = context.connect(upgrade=False)
    try:
        user, password = context.user()
        reply = connection.command(b"USER " + user)
        if reply.ok:
            reply = connection.command(b"PASS " + password)
    finally:
        connection.close()
    if reply.ok:
        return failed("USER/PASS logged in without TLS although CAPA does not offer it")
    return passed(f"not advertised without TLS, and USER/PASS -> {reply}")


@check(35, "implicitTLS")
def implicitTLS(context: Context) -> Verdict:
    """
    Implicit TLS (RFC 8314 section 3): the connection starts with a handshake, of TLS 1.2 or
    later, then the greeting.
    """
    if context.config.security is not Security.TLS:
        raise Skip("run with --tls against the implicit-TLS port (995)")
    connection = context.connect()
    connection.close()
    version = connection.tlsVersion or "?"
    if version not in ("TLSv1.2", "TLSv1.3"):
        return failed(f"negotiated {version}")
    return passed(f"{version}, then {connection.greeting}")


@check(36, "utf8Command")
def utf8Command(context: Context) -> Verdict:
    """
    With UTF8, the C{UTF8} command is accepted in AUTHORIZATION and refused in TRANSACTION
    (RFC 6856 section 2).
    """
    context.advertised(b"UTF8")
    with context.session(login=False) as session:
        reply = session.command(b"UTF8")
        if not reply.ok:
            return failed(f"UTF8 before login -> {reply}")
        session.login()
        after = session.command(b"UTF8")
    if after.ok:
        return failed(f"UTF8 after login -> {after}")
    return passed(f"UTF8 before login -> {reply}; after -> {after}")


def _header(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[:end]


@check(36, "utf8Headers")
def utf8Headers(context: Context) -> Verdict:
    """
    With UTF8, a message with 8-bit header fields is not sent as is before the client enabled
    UTF8 mode (RFC 6856 section 2), and is sent in UTF8 mode.  Needs such a message in the
    main maildrop.
    """
    context.advertised(b"UTF8")
    maildrop = context.maildrop()
    refused = []
    for message in maildrop.messages.values():
        content = message.content
        if content is not None and any(octet >= 0x80 for octet in _header(content)):
            return failed(
                f"message {message.number} has 8-bit header fields and was sent without UTF8 mode"
            )
        if message.reply is not None and not message.reply.ok:
            refused.append(message)
    if not refused:
        raise Skip("no message has 8-bit header fields")
    with context.session(login=False) as session:
        session.command(b"UTF8")
        session.login()
        for message in refused:
            reply, body = session.retrieve(b"RETR %d" % (message.number,))
            if body is None:
                return failed(f"RETR {message.number} in UTF8 mode -> {reply}")
    numbers = ", ".join(str(m.number) for m in refused)
    return passed(f"message {numbers}: {refused[0].reply} without UTF8 mode, sent with it")


@check(36, "lang")
def lang(context: Context) -> Verdict:
    """
    With LANG, C{LANG} lists the languages, one C{tag description} per line, and an unknown
    language is refused (RFC 6856 section 3).
    """
    context.advertised(b"LANG")
    with context.session(login=False) as session:
        reply, body = session.multiline(b"LANG")
        if body is None:
            return failed(f"LANG -> {reply}")
        lines = [line for line in body.split(b"\r\n") if line]
        if not lines or any(len(line.split(b" ", 1)) != 2 for line in lines):
            return failed(f"LANG listing {show(body)!r}")
        unknown = session.command(b"LANG zz")
    if unknown.ok:
        return failed(f"LANG zz -> {unknown}")
    return passed(f"{len(lines)} languages; LANG zz -> {unknown}")


@check(37, "popURL")
def popURL(context: Context) -> Verdict:
    """
    POP URLs (RFC 2384) are for clients' configuration: nothing of them is visible in a
    server's behaviour.
    """
    return skipped("concerns clients (RFC 2384); nothing to observe on a server")


@check(38, "lastNotAdvertised")
def lastNotAdvertised(context: Context) -> Verdict:
    """
    LAST (RFC 1460, removed by RFC 1725) is no RFC 2449 capability: CAPA must not list it.
    """
    before, after = _both(context)
    if before.has(b"LAST") or after.has(b"LAST"):
        return failed("CAPA lists LAST")
    return passed("CAPA does not list LAST")


@check(38, "last")
def last(context: Context) -> Verdict:
    """
    Where LAST is implemented, it answers the highest message number accessed: 0 at first, n
    after C{RETR n}, 0 again after C{RSET} (RFC 1460).
    """
    maildrop = context.maildrop()
    messages = maildrop.retrieved()
    with context.session() as session:
        first = session.command(b"LAST")
        if not first.ok:
            raise Skip(f"LAST -> {first}: not implemented (removed by RFC 1725)")
        if not messages:
            raise Skip("no message could be retrieved")
        number = min(messages, key=lambda m: m.size).number
        session.retrieve(b"RETR %d" % (number,))
        after = session.command(b"LAST")
        session.command(b"RSET")
        reset = session.command(b"LAST")
    values = [reply.text.split(b" ", 1)[0] for reply in (first, after, reset)]
    if values != [b"0", b"%d" % number, b"0"]:
        return failed(f"LAST -> {first}; after RETR {number} -> {after}; after RSET -> {reset}")
    return passed(f"LAST 0, {number} after RETR {number}, 0 after RSET")
