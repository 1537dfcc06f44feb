"""
Checks of the AUTHORIZATION state (rules R9-R15): the greeting, the maildrop lock, failed
logins, passwords with spaces, APOP, what USER reveals, and QUIT before login.
"""

from __future__ import annotations

import re
import secrets

from popd.conformance._client import ServerError, show
from popd.conformance._context import (
    Context,
    Skip,
    Verdict,
    apopDigest,
    apopTimestamp,
    check,
    failed,
    passed,
    skipped,
)

_MESSAGE_ID = re.compile(rb"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>\Z")


@check(9, "singleLineGreeting")
def singleLineGreeting(context: Context) -> Verdict:
    """
    The greeting is one C{+OK} line (RFC 1939 section 4): nothing follows it until the client
    speaks.
    """
    connection = context.connect(upgrade=False)
    try:
        greeting = connection.greeting
        assert greeting is not None
        if not greeting.ok:
            return failed(f"greeting {greeting}")
        extra = connection.readAvailable(0.3)
    finally:
        connection.close()
    if extra:
        return failed(f"more after the greeting: {show(extra)!r}")
    return passed(f"{greeting}")


@check(9, "apopTimestamp")
def apopTimestampChanges(context: Context) -> Verdict:
    """
    A greeting offering APOP carries a timestamp in msg-id form that differs on every
    connection (RFC 1939 sections 4 and 7).
    """
    stamps = []
    for _ in range(2):
        connection = context.connect(upgrade=False)
        connection.close()
        stamps.append(apopTimestamp(connection.greeting))
    first, second = stamps
    if first is None:
        raise Skip("the greeting has no APOP timestamp: APOP is not offered")
    if second is None or first == second:
        return failed(
            f"two connections got the timestamps {show(first)} and {show(second or b'(none)')}"
        )
    if not _MESSAGE_ID.match(first):
        return failed(f"timestamp {show(first)} is not in msg-id form <left@right>")
    return passed(f"{show(first)} then {show(second)}")


@check(10, "exclusiveLock")
def exclusiveLock(context: Context) -> Verdict:
    """
    A logged-in session holds an exclusive lock on its maildrop (RFC 1939 section 4): a second
    login to it gets C{-ERR}, with C{[IN-USE]} when RESP-CODES is advertised (RFC 2449 section
    8.1.2); once the first session ends, a login works again.  Uses the scratch user.
    """
    context.scratch()
    with context.session(scratch=True), context.session(scratch=True, login=False) as second:
        reply = context.login(second.connection, second.user, second.password)
        if reply.ok:
            return failed("a second session logged in while the first held the maildrop")
        if context.offers(b"RESP-CODES") and reply.code != b"IN-USE":
            return failed(f"second login -> {reply}, without [IN-USE]")
    with context.session(scratch=True):
        pass
    return passed(f"second login -> {reply}; after the first ended, a login worked")


@check(11, "afterFailedLogin")
def afterFailedLogin(context: Context) -> Verdict:
    """
    After a failed login the server either closes the connection or accepts a new attempt
    (RFC 1939 section 4): a wrong password, then the right one on the same connection.
    """
    failure, retry = context.wrongPasswordLogin()
    if failure.ok:
        return failed(f"a wrong password was accepted: {failure}")
    if retry is None:
        return passed(f"{failure}, then the server closed the connection (allowed)")
    if not retry.ok:
        return failed(f"wrong password -> {failure}; then the right one -> {retry}")
    return passed(f"wrong password -> {failure}; then the right one -> {retry}")


@check(12, "passwordWithSpaces")
def passwordWithSpaces(context: Context) -> Verdict:
    """
    C{PASS} takes the rest of the line as the password, spaces included (RFC 1939 section 7).
    Needs a main password with a space.
    """
    if b" " not in context.user()[1]:
        raise Skip("the main user's password has no space")
    if context.loginMethod() != "USER":
        raise Skip("USER/PASS is not offered")
    with context.session():
        pass
    return passed("PASS with a password holding spaces logged in")


@check(13, "apopDigest")
def apopDigestAccepted(context: Context) -> Verdict:
    """
    C{APOP name digest} with the MD5 of the greeting's timestamp and the password, in
    lower-case hex, logs in (RFC 1939 section 7).  Needs the server to hold the password in
    plaintext, which it may not do for this user.
    """
    user, password = context.user()
    with context.session(login=False) as session:
        timestamp = apopTimestamp(session.connection.greeting)
        if timestamp is None:
            raise Skip("the greeting has no APOP timestamp: APOP is not offered")
        reply = session.command(b"APOP " + user + b" " + apopDigest(timestamp, password))
        if not reply.ok:
            return skipped(
                f"APOP -> {reply}; the server may hold no plaintext secret for this user"
            )
        session.loggedIn = True
    return passed(f"APOP -> {reply}")


@check(13, "apopWrongDigest")
def apopWrongDigest(context: Context) -> Verdict:
    """
    C{APOP} with a digest of the wrong password is refused (RFC 1939 section 7).
    """
    user, password = context.user()
    with context.session(login=False) as session:
        timestamp = apopTimestamp(session.connection.greeting)
        if timestamp is None:
            raise Skip("the greeting has no APOP timestamp: APOP is not offered")
        digest = apopDigest(timestamp, password + b"-wrong")
        reply = session.command(b"APOP " + user + b" " + digest)
        context.failedLogins.append(("APOP with a wrong digest", reply))
        if reply.ok:
            session.loggedIn = True
            return failed(f"APOP with a wrong digest -> {reply}")
    return passed(f"APOP with a wrong digest -> {reply}")


def _unknownUser() -> bytes:
    return b"nobody-" + secrets.token_hex(6).encode("ascii")


@check(14, "userRevealsNothing")
def userRevealsNothing(context: Context) -> Verdict:
    """
    C{USER} answers the same C{+OK} for an unknown name as for a real one: it must not reveal
    which mailboxes exist (RFC 1939 section 13), nor return C{[LOGIN-DELAY]} (RFC 2449
    section 8.1.1).
    """
    if context.loginMethod() != "USER":
        raise Skip("USER is not offered")
    replies = []
    for name in (context.user()[0], _unknownUser()):
        with context.session(login=False) as session:
            replies.append(session.command(b"USER " + name))
    real, unknown = replies
    if not (real.ok and unknown.ok):
        return failed(f"USER of the main user -> {real}; of an unknown user -> {unknown}")
    if real.line != unknown.line:
        return failed(f"the answers differ: {real} for the main user, {unknown} for an unknown")
    return passed(f"{real} for both the main user and an unknown one")


@check(14, "sameRefusal")
def sameRefusal(context: Context) -> Verdict:
    """
    A login as an unknown user is refused with the same answer as a wrong password, so that
    the answer does not reveal which mailboxes exist (RFC 1939 section 13).
    """
    wrongPassword, _ = context.wrongPasswordLogin()
    with context.session(login=False) as session:
        try:
            unknown = context.login(session.connection, _unknownUser(), b"no password")
        except ServerError as e:
            return failed(f"login as an unknown user: {e}")
    context.failedLogins.append(("an unknown user", unknown))
    if unknown.ok:
        return failed(f"an unknown user logged in: {unknown}")
    if unknown.line != wrongPassword.line:
        return failed(f"unknown user -> {unknown}; wrong password -> {wrongPassword}")
    return passed(f"{unknown} for both")


@check(15, "quitInAuthorization")
def quitInAuthorization(context: Context) -> Verdict:
    """
    C{QUIT} before login is answered C{+OK} and ends the session (RFC 1939 section 6).
    """
    connection = context.connect()
    try:
        if context.loginMethod() == "USER":
            connection.command(b"USER " + context.user()[0])
        reply = connection.command(b"QUIT")
        closed = connection.waitClosed()
    finally:
        connection.close()
    if not reply.ok:
        return failed(f"QUIT -> {reply}")
    if not closed:
        return failed(f"QUIT -> {reply}, but the connection stayed open")
    return passed(f"QUIT -> {reply}, connection closed")
