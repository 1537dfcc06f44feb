"""
Checks of grammar and framing (rules R1-R8): case, line ends and lengths, argument syntax,
commands in the wrong state, multi-line responses and the inactivity timer.
"""

from __future__ import annotations

import time

from popd.conformance._client import ServerClosed, ServerError, show, splitLines
from popd.conformance._context import (
    Context,
    Fail,
    Session,
    Skip,
    Verdict,
    check,
    failed,
    passed,
    plainResponse,
    skipped,
)


def _expectErrors(session: Session, lines: list[bytes], labels: list[str] | None = None) -> Verdict:
    """
    Send each line in C{session} and require one C{-ERR} for it, after which the connection
    must still work (C{NOOP} answers C{+OK}).  On a violation the session is dropped, since
    what follows an unexpected C{+OK} may be a multi-line answer.

    @param labels: how to name each line in the report, when it holds a secret.
    """
    names = labels or [show(line) for line in lines]
    for line, name in zip(lines, names, strict=True):
        try:
            reply = session.command(line)
            if reply.ok:
                session.drop()
                return failed(f"{name} -> {reply}")
            noop = session.command(b"NOOP")
        except ServerError as e:
            session.drop()
            return failed(f"{name}: {e}")
        if not noop.ok:
            session.drop()
            return failed(f"after {name}, NOOP -> {noop}")
    return passed("-ERR, and the connection still works, for: " + ", ".join(names))


def _needMessages(context: Context) -> int:
    """
    @return: how many messages the main maildrop has.
    @raise Skip: none.
    """
    count = len(context.maildrop().sizes)
    if not count:
        raise Skip("the main maildrop is empty; it needs at least one message")
    return count


@check(1, "caseInsensitive")
def caseInsensitive(context: Context) -> Verdict:
    """
    Command keywords are case-insensitive (RFC 1939 section 3): every command works in lower
    and mixed case, the login commands included.
    """
    count = _needMessages(context)
    user, password = context.user()
    connection = context.connect()
    sent: list[bytes] = []
    try:
        if context.authCapabilities() is not None:
            sent.append(b"capa")
            reply, _ = connection.multiline(b"capa")
            if not reply.ok:
                return failed(f"capa -> {reply}")
        method = context.loginMethod()
        if method == "USER":
            logins = [b"user " + user, b"pass " + password]
        elif method == "PLAIN":
            logins = [b"auth plain " + plainResponse(user, password)]
        else:
            raise Skip("the suite logs in with APOP here; APOP's case is not tested")
        for line in logins:
            reply = connection.command(line)
            if not reply.ok:
                return failed(f"{show(line.split()[0])} -> {reply}")
        sent += [line.split()[0] for line in logins]
        commands = [b"stat", b"StAt", b"list", b"LiSt %d" % count, b"noop", b"NoOp", b"rset"]
        if context.offers(b"UIDL"):
            commands += [b"uidl", b"UiDl %d" % count]
        if context.offers(b"TOP"):
            commands.append(b"tOp %d 0" % count)
        for line in commands:
            multiline = line.upper() in (b"LIST", b"UIDL") or line.upper().startswith(b"TOP")
            if multiline:
                reply, _ = connection.multiline(line)
            else:
                reply = connection.command(line)
            if not reply.ok:
                return failed(f"{show(line)} -> {reply}")
            sent.append(line)
        reply = connection.command(b"qUiT")
        if not reply.ok:
            return failed(f"qUiT -> {reply}")
        return passed("+OK for " + " ".join(show(line.split()[0]) for line in sent) + " qUiT")
    finally:
        connection.close()


def _statusLines(context: Context) -> list[bytes]:
    """
    The status lines of the run.

    @raise Skip: there were none: only checks that judge the run's traffic were selected.
    """
    if not context.log.statusLines:
        raise Skip("the checks selected exchanged nothing with the server")
    return context.log.statusLines


@check(2, "upperCaseIndicators", afterAll=True)
def upperCaseIndicators(context: Context) -> Verdict:
    """
    C{+OK} and C{-ERR} are sent in upper case (RFC 1939 section 3), judged on every status
    line of the run.
    """
    lines = _statusLines(context)
    wrong = [line for line in lines if not line.startswith((b"+OK", b"-ERR"))]
    if wrong:
        return failed(f"{len(wrong)} status lines not in upper case, e.g. {show(wrong[0])!r}")
    return passed(f"all {len(lines)} status lines of the run")


@check(3, "crlfLineEnds", afterAll=True)
def crlfLineEnds(context: Context) -> Verdict:
    """
    Every line the server sends ends with CRLF (RFC 1939 section 3), judged on every line of
    the run.
    """
    _statusLines(context)
    bare = context.log.bareLineFeeds
    if bare:
        return failed(f"{len(bare)} lines ended with a bare LF, e.g. {show(bare[0])!r}")
    return passed("no line of the run ended with a bare LF")


@check(3, "firstLineLength", afterAll=True)
def firstLineLength(context: Context) -> Verdict:
    """
    The first line of a response, greeting included, is at most 512 octets with its CRLF
    (RFC 1939 section 3, RFC 2449 section 4), judged on every status line of the run.
    """
    lines = _statusLines(context)
    long = [line for line in lines if len(line) > 512]
    if long:
        return failed(
            f"{len(long)} status lines over 512 octets, e.g. {len(long[0])} octets: "
            f"{show(long[0], 40)!r}"
        )
    return passed(f"all {len(lines)} status lines of the run")


@check(3, "longArgumentNotEchoed")
def longArgumentNotEchoed(context: Context) -> Verdict:
    """
    Answers to commands with long arguments stay within 512 octets: the server does not echo
    them back whole (RFC 1939 section 3).  Closing the connection on an over-long line is
    allowed.
    """
    probes = [b"LIST " + b"9" * 600, b"X" * 600, b"DELE " + b"a" * 600]
    answers = []
    for line in probes:
        with context.markingSession() as session:
            try:
                reply = session.command(line)
            except ServerClosed:
                answers.append("closed")
                session.drop()
                continue
            if len(reply.line) + 2 > 512:
                session.drop()
                return failed(
                    f"{len(reply.line) + 2}-octet answer to a {len(line) + 2}-octet "
                    f"command: {show(reply.line, 50)!r}"
                )
            answers.append(f"{len(reply.line) + 2} octets")
    return passed("answers to 602-to-605-octet commands: " + ", ".join(answers))


@check(4, "longArguments")
def longArguments(context: Context) -> Verdict:
    """
    Arguments of 40 characters are accepted (RFC 1939 section 3), and with CAPA, command lines
    of 255 octets (RFC 2449 section 4): C{USER} with such names is answered C{+OK}, as for any
    name (R14).
    """
    if context.loginMethod() != "USER":
        raise Skip("USER is not offered, and no other command takes a free argument")
    names = [b"u" * 40]
    if context.authCapabilities() is not None:
        names.append(b"v" * (255 - len(b"USER \r\n")))
    connection = context.connect()
    try:
        for name in names:
            reply = connection.command(b"USER " + name)
            if not reply.ok:
                return failed(f"USER with a {len(name)}-character name -> {reply}")
        connection.command(b"QUIT")
    finally:
        connection.close()
    return passed(
        "USER accepted names of " + " and ".join(str(len(n)) for n in names) + " characters"
    )


def _transactionErrors(context: Context, lines: list[bytes]) -> Verdict:
    with context.markingSession() as session:
        return _expectErrors(session, lines)


@check(5, "unknownCommand")
def unknownCommand(context: Context) -> Verdict:
    """
    An unknown command is answered C{-ERR} and the session goes on (RFC 1939 section 3).
    """
    return _transactionErrors(context, [b"XYZZY", b"XTND XLST"])


@check(5, "extraArgument")
def extraArgument(context: Context) -> Verdict:
    """
    Commands given arguments they do not take are syntax errors, answered C{-ERR} (RFC 1939
    sections 3 and 5).
    """
    return _transactionErrors(context, [b"NOOP x", b"STAT x", b"RSET x", b"LIST 1 2"])


@check(5, "missingArgument")
def missingArgument(context: Context) -> Verdict:
    """
    Commands without their required arguments are answered C{-ERR} (RFC 1939 section 5).
    """
    lines = [b"RETR", b"DELE"]
    if context.offers(b"TOP"):
        lines += [b"TOP", b"TOP 1"]
    return _transactionErrors(context, lines)


@check(5, "nonNumeric")
def nonNumeric(context: Context) -> Verdict:
    """
    Message numbers must be decimal digits (RFC 1939 section 3): C{abc}, C{+1} and C{0x1}
    are answered C{-ERR}.
    """
    _needMessages(context)
    return _transactionErrors(context, [b"RETR abc", b"DELE abc", b"LIST +1", b"LIST 0x1"])


@check(5, "zeroNumber")
def zeroNumber(context: Context) -> Verdict:
    """
    Message numbers start at 1 (RFC 1939 section 4): C{DELE 0}, C{RETR 0} and C{LIST 0} are
    answered C{-ERR}.
    """
    _needMessages(context)
    return _transactionErrors(context, [b"DELE 0", b"RETR 0", b"LIST 0"])


@check(5, "negativeNumber")
def negativeNumber(context: Context) -> Verdict:
    """
    Negative numbers are answered C{-ERR}, as message numbers and as TOP's line count (RFC 1939
    sections 5 and 7).
    """
    _needMessages(context)
    lines = [b"LIST -1", b"DELE -1"]
    if context.offers(b"TOP"):
        lines.append(b"TOP 1 -1")
    return _transactionErrors(context, lines)


@check(5, "overflowingNumber")
def overflowingNumber(context: Context) -> Verdict:
    """
    Numbers beyond 32 and 64 bits are answered C{-ERR}, not wrapped around to an existing
    message (RFC 1939 section 3).
    """
    _needMessages(context)
    return _transactionErrors(
        context, [b"LIST 4294967297", b"RETR 18446744073709551617", b"DELE 4294967296"]
    )


@check(5, "doubleSpace")
def doubleSpace(context: Context) -> Verdict:
    """
    Keywords and arguments are separated by a single space (RFC 1939 section 3): C{LIST  1}
    with two is a syntax error.
    """
    _needMessages(context)
    lines = [b"LIST  1"]
    if context.offers(b"UIDL"):
        lines.append(b"UIDL  1")
    return _transactionErrors(context, lines)


@check(6, "transactionBeforeLogin")
def transactionBeforeLogin(context: Context) -> Verdict:
    """
    TRANSACTION commands are answered C{-ERR} in the AUTHORIZATION state (RFC 1939 section 3),
    each on a new connection, since servers may close after a few bad commands.
    """
    lines = [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"RSET", b"NOOP", b"UIDL", b"TOP 1 0"]
    for line in lines:
        connection = context.connect()
        try:
            reply = connection.command(line)
        except ServerError as e:
            return failed(f"{show(line)} before login: {e}")
        finally:
            connection.close()
        if reply.ok:
            return failed(f"{show(line)} before login -> {reply}")
    return passed("-ERR before login for " + ", ".join(map(show, lines)))


@check(6, "authorizationAfterLogin")
def authorizationAfterLogin(context: Context) -> Verdict:
    """
    AUTHORIZATION commands are answered C{-ERR} in the TRANSACTION state (RFC 1939 section 3):
    C{USER}, C{PASS} and C{APOP} once logged in.  (C{AUTH} is R31's, C{STLS} R32's.)
    """
    user, password = context.user()
    lines = [b"USER " + user, b"PASS " + password, b"APOP " + user + b" " + b"0" * 32]
    with context.session() as session:
        return _expectErrors(session, lines, ["USER name", "PASS password", "APOP name digest"])


def _bodies(context: Context) -> list[tuple[bytes, bytes]]:
    """
    The C{RETR} and C{TOP} bodies of the run.

    @raise Skip: there were none.
    """
    bodies = context.log.bodies
    if not bodies:
        raise Skip("no message was retrieved")
    return bodies


@check(7, "terminator", afterAll=True)
def terminator(context: Context) -> Verdict:
    """
    Every multi-line response of the run (CAPA, LIST, UIDL, RETR, TOP...) ends with a line
    holding a single C{.}, that is with CRLF.CRLF (RFC 1939 section 3).
    """
    log = context.log
    if log.badTerminators:
        return failed(f"terminator {show(log.badTerminators[0])!r} is not '.' CRLF")
    if log.unterminated:
        return failed(
            f"{len(log.unterminated)} multi-line responses never ended: {log.unterminated[0]}"
        )
    if not log.multilineResponses:
        raise Skip("no multi-line response was read")
    return passed(f"all {log.multilineResponses} multi-line responses of the run")


@check(7, "lineEnds", afterAll=True)
def lineEnds(context: Context) -> Verdict:
    """
    Message lines are sent with CRLF whatever the store holds: no bare LF, and no CR doubled
    into CR CR LF from a message stored with CRLF (RFC 1939 section 3).
    """
    bodies = _bodies(context)
    for command, body in bodies:
        for number, line in enumerate(splitLines(body), 1):
            if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                return failed(f"{show(command)}: line {number} is {show(line[-20:])!r}")
    return passed(f"every line of {len(bodies)} RETR and TOP answers ends with a single CRLF")


@check(7, "dotStuffing", afterAll=True)
def dotStuffing(context: Context) -> Verdict:
    """
    A message line starting with C{.} is sent with one more (RFC 1939 section 3): in a
    byte-stuffed response every line that starts with C{.} starts with C{..}.  Needs a message
    with such a line in the main maildrop.
    """
    stuffed = 0
    for command, body in _bodies(context):
        for number, line in enumerate(splitLines(body), 1):
            if line.startswith(b"."):
                if not line.startswith(b".."):
                    return failed(
                        f"{show(command)}: line {number} {show(line)!r} was not byte-stuffed"
                    )
                stuffed += 1
    if not stuffed:
        raise Skip("no retrieved message has a line starting with '.'")
    return passed(f"{stuffed} lines starting with '.' were all byte-stuffed")


@check(7, "loneDot", afterAll=True)
def loneDot(context: Context) -> Verdict:
    """
    A message line holding a lone C{.} is sent as C{..}, not as the terminator: no response
    goes on after its terminator (RFC 1939 section 3).  Needs such a message in the main
    maildrop.
    """
    if context.log.desyncs:
        return failed(context.log.desyncs[0])
    lone = sum(1 for _, body in _bodies(context) for line in splitLines(body) if line == b"..\r\n")
    if not lone:
        raise Skip("no retrieved message has a line holding a lone '.'")
    return passed(f"{lone} lone '.' lines were sent as '..'")


@check(8, "idleTimeout")
def idleTimeout(context: Context) -> Verdict:
    """
    An inactivity timer, if any, is at least ten minutes (RFC 1939 section 3): a session idle
    for ten minutes still answers C{NOOP}.  Takes ten minutes, so it runs only with C{--slow}.
    """
    if not context.config.slow:
        return skipped("takes over ten minutes: run with --slow")
    context.startCheck(700 + context.config.timeout)
    with context.session() as session:
        time.sleep(605)
        try:
            reply = session.command(b"NOOP")
        except ServerError as e:
            raise Fail(f"after ten idle minutes: {e}") from None
        if not reply.ok:
            return failed(f"after ten idle minutes, NOOP -> {reply}")
    return passed("NOOP answered +OK after ten idle minutes")
