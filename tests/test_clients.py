"""
End-to-end tests: real POP3 clients (Python's C{poplib}, Twisted's POP3 client, C{fetchmail},
C{mpop}, C{curl}) talk over loopback sockets to an in-process popd that serves Maildirs on disk
(L{tests.support.Store}) and checks passwords against a Dovecot-style passwd-file.

Each test starts its own server on an ephemeral port.  Blocking clients run in worker threads and
external programs as child processes, so the reactor keeps serving them.  Every retrieved message
is compared octet for octet with what RFC 1939 says the server transmits: the stored message with
CRLF line ends and a final line end (L{tests.support.canonical}).
"""

from __future__ import annotations

import json
import os
import poplib
import shlex
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.threads import deferToThread
from twisted.mail.pop3 import AdvancedPOP3Client
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import FailTest, SkipTest, TestCase

from tests.support import (
    CRLF,
    HOST,
    ProcessResult,
    RawConnection,
    RunningServer,
    TestHost,
    bigMessage,
    canonical,
    dotLineAt,
    runProcess,
    startServer,
    stuff,
    unstuff,
)

USER = "alice"
PASSWORD = "correct horse"
LF = b"\n"
KiB = 1024
MiB = 1024 * KiB

#: Messages whose encoding is easy to get wrong, stored as an MTA may store them.
EDGE_CASES = [
    b"Subject: CRLF\r\n\r\nstored with CRLF line ends\r\n",
    b"Subject: LF\n\nstored with LF line ends\n",
    b"Subject: mixed\r\n\nsome lines end with CRLF\r\nothers with LF\n",
    b"Subject: no final line end\r\n\r\nthe last line has no line end",
    b"Subject: no final line end, LF\n\nthe last line has no line end",
    b"Subject: ends with a lone dot\n\n.",
    b".first line starts with a dot\r\n\r\nbody\r\n",
    b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n. \r\n.x\r\nx.\r\n",
    b"Subject: dots, LF\n\n.\n..\n...\n. \n.x\nx.\n",
    b"Subject: no body\r\n\r\n",
    b"",
]

#: A lone-dot line at offsets around 1 KiB, around the 64 KiB read-chunk boundary (the LF
#: before the dot at offsets 65534 to 65537, so that the chunk ends before the LF, between the
#: LF and the dot, and after the dot) and at 1 MiB, with each line end.
BOUNDARIES = [
    dotLineAt(offset, eol)
    for offset in (
        *(KiB - 1, KiB, KiB + 1),
        *(64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 64 * KiB + 2),
        *(128 * KiB, MiB),
    )
    for eol in (CRLF, LF)
]

#: Messages of 1 MiB and a little more, with dot lines throughout.
BIG = [bigMessage(MiB, CRLF), bigMessage(MiB + 1, LF)]

#: Well-formed messages (a header first) for clients that parse headers.
ORDINARY = [
    b"Subject: CRLF\r\nFrom: a@example.com\r\n\r\nstored with CRLF line ends\r\n.\r\n..\r\n",
    b"Subject: LF\nFrom: a@example.com\n\nstored with LF line ends\n.\n.x\n",
    b"Subject: no final line end\nFrom: a@example.com\n\nlast line.",
    dotLineAt(64 * KiB, LF),
    dotLineAt(64 * KiB + 1, CRLF),
    bigMessage(MiB, LF),
]


def crlfToLF(message: bytes) -> bytes:
    return message.replace(CRLF, LF)


class _Client(AdvancedPOP3Client):
    """
    Twisted's POP3 client, telling when its connection is lost.
    """

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


def login(port: int) -> poplib.POP3:
    """
    Open a C{poplib} session as L{USER} with USER/PASS (allowed on loopback).
    """
    client = poplib.POP3(HOST, port, timeout=30)
    client.user(USER)
    client.pass_(PASSWORD)
    return client


def retrieve(client: poplib.POP3, number: int) -> tuple[bytes, int]:
    """
    C{RETR} a message with C{poplib}.

    @return: the message as transmitted (lines joined with CRLF, un-stuffed by C{poplib}) and
        the octet count C{poplib} measured on the wire, less the stuffing.
    """
    _, lines, octets = client.retr(number)
    return b"".join(line + CRLF for line in lines), octets


def scanListing(response: tuple[bytes, list[bytes], int]) -> dict[int, bytes]:
    return {int(number): value for number, value in (line.split(b" ") for line in response[1])}


class PoplibTests(TestCase):
    """
    Python's C{poplib}, and raw sockets, against popd.
    """

    async def test_retrieveByteExact(self) -> None:
        """
        R7, R16, R17, R19: every message, whatever its line ends, dot lines or lack of a final
        line end, and whatever the read-chunk boundaries it crosses, is retrieved as its
        CRLF-canonical form; C{STAT} totals and each C{LIST} size equal the octets actually
        transmitted (C{poplib}'s count, stuffing excluded).
        """
        messages = EDGE_CASES + BOUNDARIES + BIG
        server = await startServer(self, {USER: messages})

        def session() -> None:
            client = login(server.port)
            count, total = client.stat()
            self.assertEqual(count, len(messages))
            self.assertEqual(total, sum(len(canonical(m)) for m in messages))
            sizes = scanListing(client.list())
            self.assertEqual(sorted(sizes), list(range(1, len(messages) + 1)))
            for number, message in enumerate(messages, 1):
                expected = canonical(message)
                self.assertEqual(int(sizes[number]), len(expected), f"LIST {number}")
                self.assertEqual(client.list(number), b"+OK %d %d" % (number, len(expected)))
                got, octets = retrieve(client, number)
                self.assertEqual(got, expected, f"RETR {number}")
                self.assertEqual(octets, len(expected), f"RETR {number} octets")
            client.quit()

        await deferToThread(session)

    async def test_rawOctetsOnTheWire(self) -> None:
        """
        R7, R19: read on a plain socket, each C{RETR} response is C{+OK}, the stuffed
        CRLF-canonical message, and C{.CRLF}: no C{CR CR LF}, no bare LF, and a message without
        a final line end still gets its terminator on a line of its own.
        """
        messages = EDGE_CASES + BOUNDARIES
        server = await startServer(self, {USER: messages})

        def session() -> None:
            connection = RawConnection(server.port)
            self.assertTrue(connection.readLine().startswith(b"+OK"))
            self.assertTrue(connection.command(b"USER " + USER.encode()).startswith(b"+OK"))
            self.assertTrue(connection.command(b"PASS " + PASSWORD.encode()).startswith(b"+OK"))
            for number, message in enumerate(messages, 1):
                expected = canonical(message)
                first = connection.command(b"RETR %d" % (number,))
                self.assertEqual(first, b"+OK %d octets\r\n" % (len(expected),))
                body = connection.readBody()
                self.assertEqual(body, stuff(expected), f"RETR {number}")
                self.assertEqual(unstuff(body), expected)
                self.assertNotIn(b"\r\r\n", body)
                self.assertEqual(body.count(LF), body.count(CRLF))
            self.assertTrue(connection.command(b"QUIT").startswith(b"+OK"))
            self.assertEqual(connection.readUntilClosed(), b"")
            connection.close()

        await deferToThread(session)

    async def test_top(self) -> None:
        """
        R21: C{TOP n 0} sends the header and the blank line that ends it; C{TOP n k} adds k
        body lines; a k larger than the body sends the whole message, dot lines stuffed and
        chunk boundaries crossed.
        """
        messages = [
            b"Subject: LF\nX-Other: 1\n\nline 1\n.line 2\nline 3\n",
            b"Subject: CRLF\r\n\r\n.\r\nline 2\r\n",
            dotLineAt(64 * KiB, LF),
        ]
        server = await startServer(self, {USER: messages})

        def session() -> None:
            client = login(server.port)

            def top(number: int, lines: int) -> bytes:
                return b"".join(line + CRLF for line in client.top(number, lines)[1])

            self.assertEqual(top(1, 0), b"Subject: LF\r\nX-Other: 1\r\n\r\n")
            self.assertEqual(top(1, 2), b"Subject: LF\r\nX-Other: 1\r\n\r\nline 1\r\n.line 2\r\n")
            self.assertEqual(top(1, 1000), canonical(messages[0]))
            self.assertEqual(top(2, 1), b"Subject: CRLF\r\n\r\n.\r\n")
            header = canonical(messages[2]).partition(b"\r\n\r\n")[0]
            self.assertEqual(top(3, 0), header + b"\r\n\r\n")
            self.assertEqual(top(3, 10_000), canonical(messages[2]))
            client.quit()

        await deferToThread(session)

    async def test_uidlStable(self) -> None:
        """
        R22: unique-ids are 1-70 octets in 0x21-0x7E and unique; C{UIDL n} answers
        C{+OK n uid}; they are the same in the next session, after another agent renames the
        files to add flags (C{cur/...:2,S}), and after other messages were deleted.
        """
        messages = ORDINARY[:3] + [b"Subject: same\n\nsame\n", b"Subject: same\n\nsame\n"]
        server = await startServer(self, {USER: messages})

        def uidls() -> dict[int, bytes]:
            client = login(server.port)
            listing = scanListing(client.uidl())
            for number, uid in listing.items():
                self.assertEqual(client.uidl(number), b"+OK %d %s" % (number, uid))
            client.quit()
            return listing

        first = await deferToThread(uidls)
        self.assertEqual(len(first), len(messages))
        self.assertEqual(len(set(first.values())), len(messages))
        for uid in first.values():
            self.assertTrue(1 <= len(uid) <= 70, uid)
            self.assertTrue(all(0x21 <= octet <= 0x7E for octet in uid), uid)
        self.assertEqual(await deferToThread(uidls), first)
        server.store.markSeen(USER)
        self.assertEqual(await deferToThread(uidls), first)

        def deleteFirst() -> None:
            client = login(server.port)
            client.dele(1)
            client.quit()

        await deferToThread(deleteFirst)
        await server.whenIdle()
        remaining = await deferToThread(uidls)
        self.assertEqual(list(remaining.values()), [first[n] for n in range(2, len(messages) + 1)])

    async def test_deleteOnlyAtQuit(self) -> None:
        """
        R17, R18, R20, R23: C{DELE} only marks (C{STAT} and C{LIST} stop counting the message,
        C{RETR} refuses it, the store still holds it), C{RSET} unmarks, and C{QUIT} removes
        exactly the marked messages.
        """
        messages = ORDINARY[:3]
        server = await startServer(self, {USER: messages})
        sizes = [len(canonical(m)) for m in messages]

        def session() -> None:
            client = login(server.port)
            client.dele(1)
            self.assertEqual(client.stat(), (2, sizes[1] + sizes[2]))
            self.assertEqual(sorted(scanListing(client.list())), [2, 3])
            self.assertRaises(poplib.error_proto, client.retr, 1)
            self.assertRaises(poplib.error_proto, client.dele, 1)
            client.rset()
            self.assertEqual(client.stat(), (3, sum(sizes)))
            client.dele(2)
            self.assertEqual(server.store.stored(USER), messages)
            self.assertTrue(client.quit().startswith(b"+OK"))

        await deferToThread(session)
        await server.whenIdle()
        self.assertEqual(server.store.stored(USER), [messages[0], messages[2]])

        def after() -> None:
            client = login(server.port)
            self.assertEqual(client.stat(), (2, sizes[0] + sizes[2]))
            self.assertEqual(retrieve(client, 2)[0], canonical(messages[2]))
            client.quit()

        await deferToThread(after)

    async def test_droppedConnectionDeletesNothing(self) -> None:
        """
        R24: when the connection is dropped after C{DELE} without C{QUIT}, nothing is removed:
        the next session lists the message with the same unique-id.
        """
        messages = ORDINARY[:2]
        server = await startServer(self, {USER: messages})

        def dropped() -> bytes:
            client = login(server.port)
            uid = client.uidl(1)
            client.dele(1)
            client.dele(2)
            # Closes the socket without sending QUIT.
            client.close()
            return uid

        uid = await deferToThread(dropped)
        await server.whenIdle()
        self.assertEqual(server.store.stored(USER), messages)

        def again() -> None:
            client = login(server.port)
            self.assertEqual(client.stat()[0], 2)
            self.assertEqual(client.uidl(1), uid)
            self.assertEqual(retrieve(client, 1)[0], canonical(messages[0]))
            client.quit()

        await deferToThread(again)

    async def test_pipelinedSession(self) -> None:
        """
        R26: a whole session sent in one write, mixed-case commands, a bad command and C{RETR}
        of a 1 MiB message included, is answered completely and in order; C{QUIT} removes what
        is marked at that point.
        """
        messages = [ORDINARY[0], bigMessage(MiB, LF), ORDINARY[1]]
        server = await startServer(self, {USER: messages})
        sizes = [len(canonical(m)) for m in messages]
        script = [
            (b"USER " + USER.encode(), False),
            (b"PASS " + PASSWORD.encode(), False),
            (b"stat", False),
            (b"List", True),
            (b"UIDL", True),
            (b"RETR 2", True),
            (b"retr 1", True),
            (b"BOGUS", False),
            (b"TOP 3 0", True),
            (b"DELE 1", False),
            (b"STAT", False),
            (b"LIST 1", False),
            (b"CAPA", True),
            (b"NOOP", False),
            (b"RSET", False),
            (b"dele 3", False),
            (b"QUIT", False),
        ]

        def session() -> list[tuple[bytes, bytes | None]]:
            connection = RawConnection(server.port)
            self.assertTrue(connection.readLine().startswith(b"+OK"))
            connection.send(b"".join(line + CRLF for line, _ in script))
            answers: list[tuple[bytes, bytes | None]] = []
            for _, multiline in script:
                first = connection.readLine()
                body = connection.readBody() if multiline and first.startswith(b"+OK") else None
                answers.append((first, body))
            answers.append((connection.readUntilClosed(), None))
            connection.close()
            return answers

        answers = await deferToThread(session)
        statuses = [first.split(b" ", 1)[0].strip() for first, _ in answers[:-1]]
        self.assertEqual(
            statuses,
            [b"+OK"] * 7 + [b"-ERR"] + [b"+OK"] * 3 + [b"-ERR"] + [b"+OK"] * 5,
            answers,
        )
        self.assertEqual(answers[-1], (b"", None))
        self.assertEqual(answers[2][0], b"+OK 3 %d\r\n" % (sum(sizes),))
        self.assertEqual(
            answers[3][1], b"".join(b"%d %d\r\n" % (n, s) for n, s in enumerate(sizes, 1))
        )
        assert answers[4][1] is not None
        self.assertEqual(len(answers[4][1].splitlines()), 3)
        for answer, index in ((answers[5], 1), (answers[6], 0)):
            expected = (b"+OK %d octets\r\n" % (sizes[index],), stuff(canonical(messages[index])))
            self.assertEqual(answer, expected)
        self.assertEqual(answers[8][1], b"Subject: LF\r\nFrom: a@example.com\r\n\r\n")
        self.assertEqual(answers[10][0], b"+OK 2 %d\r\n" % (sizes[1] + sizes[2],))
        self.assertIn(b"PIPELINING", answers[12][1] or b"")
        await server.whenIdle()
        self.assertEqual(server.store.stored(USER), messages[:2])


class TwistedClientTests(TestCase):
    """
    Twisted's own POP3 client against popd.
    """

    async def test_session(self) -> None:
        """
        R7, R19, R22, R23: C{AdvancedPOP3Client} logs in with USER/PASS (allowed on loopback),
        lists sizes and unique-ids, retrieves every message as its CRLF-canonical form, deletes
        one and quits; the deletion takes effect.
        """
        messages = ORDINARY + EDGE_CASES
        server = await startServer(self, {USER: messages})
        client = _Client()
        client.allowInsecureLogin = True
        await connectProtocol(TCP4ClientEndpoint(reactor, HOST, server.port), client)
        await client.login(USER.encode(), PASSWORD.encode())
        sizes = await client.listSize()
        self.assertEqual(sizes, [len(canonical(m)) for m in messages])
        uids = await client.listUID()
        self.assertEqual(len(set(uids)), len(messages))
        for index, message in enumerate(messages):
            lines = await client.retrieve(index)
            self.assertEqual(b"".join(line + CRLF for line in lines), canonical(message))
        await client.delete(0)
        await client.quit()
        await client.lost
        await server.whenIdle()
        self.assertEqual(server.store.stored(USER), messages[1:])

    async def test_startTLS(self) -> None:
        """
        R32: C{AdvancedPOP3Client.startTLS} upgrades with STLS, verifying popd's certificate;
        the client then logs in (it refuses cleartext logins before) and retrieves.
        """
        server = await startServer(self, {USER: ORDINARY[:2]}, tls=True)
        assert server.certificate is not None
        authority = Certificate.loadPEM(server.certificate.certificate.getContent())
        client = _Client()
        await connectProtocol(TCP4ClientEndpoint(reactor, HOST, server.port), client)
        await client.startTLS(optionsForClientTLS("localhost", trustRoot=authority))
        await client.login(USER.encode(), PASSWORD.encode())
        lines = await client.retrieve(1)
        self.assertEqual(b"".join(line + CRLF for line in lines), canonical(ORDINARY[1]))
        await client.quit()
        await client.lost


FETCHMAIL = "/usr/bin/fetchmail"
MPOP = "/usr/bin/mpop"
CURL = "/usr/bin/curl"


def requireProgram(path: str) -> None:
    """
    @raise SkipTest: the external client at C{path} is not installed.
    """
    if not os.access(path, os.X_OK):
        raise SkipTest(f"{path} is not installed")


def writeSecret(path: FilePath[str], content: str) -> FilePath[str]:
    """
    Write a client configuration holding a password, mode 0600 (fetchmail refuses others).
    """
    path.setContent(content.encode("utf-8"))
    path.chmod(0o600)
    return path


def readDelivered(directory: FilePath[str]) -> list[bytes]:
    """
    The messages in C{directory} (a Maildir's C{new/}, or an MDA's output directory), ordered
    by file name.
    """
    children = sorted(directory.children(), key=lambda child: child.basename())
    return [child.getContent() for child in children]


async def curl(home: FilePath[str], url: str, *options: str) -> ProcessResult:
    """
    Run C{curl -v} on a POP3 URL as L{USER}.

    @return: what curl printed: the response body on standard output (a multi-line response
        as received, without the terminator and un-stuffed), the dialogue on standard error.
    @raise FailTest: curl failed.
    """
    requireProgram(CURL)
    result = await runProcess(
        [CURL, "-sSv", "--max-time", "30", "-u", f"{USER}:{PASSWORD}", *options, url], home
    )
    if result.code != 0:
        raise FailTest(f"curl {url} failed: {result.describe()}")
    return result


class MpopAccount:
    """
    An mpop account that polls popd as L{USER}, with its own configuration, UIDL file and
    Maildir (mpop stores messages there with LF line ends).  mpop's C{Received:} header is
    turned off (C{received_header off}) and mail is kept on the server (C{keep on}).
    """

    def __init__(self, home: FilePath[str], port: int, settings: str) -> None:
        """
        @param settings: more configuration lines: TLS and authentication.
        """
        requireProgram(MPOP)
        self.home = home
        self.maildir = home.child("Maildir")
        for subdirectory in ("new", "cur", "tmp"):
            self.maildir.child(subdirectory).makedirs()
        self.configuration = writeSecret(
            home.child("mpoprc"),
            "account test\n"
            f"host {HOST}\n"
            f"port {port}\n"
            f"user {USER}\n"
            f'password "{PASSWORD}"\n'
            f"{settings}\n"
            f"delivery maildir {self.maildir.path}\n"
            "keep on\n"
            "received_header off\n"
            f"uidls_file {home.child('uidls').path}\n"
            "timeout 30\n",
        )

    async def fetch(self) -> None:
        """
        Run C{mpop -C CONFIGURATION test}.

        @raise FailTest: mpop failed.
        """
        result = await runProcess([MPOP, "-C", self.configuration.path, "test"], self.home)
        if result.code != 0:
            raise FailTest(f"mpop failed: {result.describe()}")

    def delivered(self) -> list[bytes]:
        """
        The messages mpop delivered, sorted (mpop's file names do not keep the order).
        """
        return sorted(readDelivered(self.maildir.child("new")))


#: An MDA for fetchmail: stores its standard input in the next numbered file of a directory.
_MDA = """\
import os, sys
directory = sys.argv[1]
with open(os.path.join(directory, "%04d" % len(os.listdir(directory))), "xb") as stream:
    stream.write(sys.stdin.buffer.read())
"""


class FetchmailTests(TestCase):
    """
    C{fetchmail} against popd, delivering each message to its own file through an MDA.

    fetchmail's documented transformations for MDA delivery apply, and the comparison is made
    modulo them: line ends become LF (C{stripcr} is the default with an MDA), and the
    C{Received:} header it would add is suppressed with C{set invisible}.
    """

    def setUp(self) -> None:
        requireProgram(FETCHMAIL)
        self.home = FilePath(self.mktemp())
        self.home.makedirs()
        self.delivered = self.home.child("delivered")
        self.delivered.makedirs()
        self.home.child("mda.py").setContent(_MDA.encode("ascii"))

    def rcFile(
        self, port: int, serverOptions: str = "", userOptions: str = "", tls: str = "sslproto ''"
    ) -> FilePath[str]:
        """
        Write a run-control file for L{USER} on C{port}: USER/PASS (C{auth password}), by
        default no STLS (C{sslproto ''}), mail kept on the server, headers not rewritten.
        """
        mda = " ".join(
            shlex.quote(part)
            for part in (sys.executable, self.home.child("mda.py").path, self.delivered.path)
        )
        return writeSecret(
            self.home.child("fetchmailrc"),
            "set invisible\n"
            "set no bouncemail\n"
            f"poll {HOST} with service {port} protocol POP3 auth password timeout 30"
            f" {serverOptions}\n"
            f'    user "{USER}" there with password "{PASSWORD}"\n'
            f"    options keep no rewrite {tls} {userOptions}\n"
            f'    mda "{mda}"\n',
        )

    async def fetch(self, rcFile: FilePath[str]) -> int | None:
        """
        Run fetchmail once.

        @return: its exit code: 0 when it delivered mail, 1 when there was none.
        @raise FailTest: fetchmail failed.
        """
        return (await self.runFetchmail(rcFile)).code

    async def runFetchmail(self, rcFile: FilePath[str]) -> ProcessResult:
        """
        Run fetchmail once, verbosely.

        @raise FailTest: fetchmail failed.
        """
        result = await runProcess(
            [
                FETCHMAIL,
                *("-f", rcFile.path),
                *("--nodetach", "--nosyslog", "-v"),
                *("--pidfile", self.home.child("fetchmail.pid").path),
                *("--idfile", self.home.child("fetchids").path),
            ],
            self.home,
        )
        if result.code not in (0, 1):
            raise FailTest(f"fetchmail failed: {result.describe()}")
        return result

    async def test_fetchAll(self) -> None:
        """
        R7, R19: C{fetchmail} (C{keep}, C{fetchall}) retrieves every message, which reaches the
        MDA as the transmitted message with LF line ends; nothing is deleted (C{keep}).
        """
        server = await startServer(self, {USER: ORDINARY})
        code = await self.fetch(self.rcFile(server.port, userOptions="fetchall"))
        self.assertEqual(code, 0)
        self.assertEqual(readDelivered(self.delivered), [crlfToLF(canonical(m)) for m in ORDINARY])
        await server.whenIdle()
        self.assertEqual(server.store.stored(USER), ORDINARY)

    async def test_uidl(self) -> None:
        """
        R22: with C{uidl}, a second C{fetchmail} run finds nothing new, even after another
        agent renamed the message files to add flags; a message delivered since is the only one
        fetched by a third run.
        """
        server = await startServer(self, {USER: ORDINARY[:3]})
        rcFile = self.rcFile(server.port, serverOptions="uidl")
        self.assertEqual(await self.fetch(rcFile), 0)
        self.assertEqual(len(readDelivered(self.delivered)), 3)
        await server.whenIdle()
        server.store.markSeen(USER)
        self.assertEqual(await self.fetch(rcFile), 1)
        self.assertEqual(len(readDelivered(self.delivered)), 3)
        await server.whenIdle()
        late = b"Subject: late\nFrom: b@example.com\n\ndelivered later\n"
        server.store.deliver(USER, [late])
        self.assertEqual(await self.fetch(rcFile), 0)
        self.assertEqual(
            readDelivered(self.delivered),
            [crlfToLF(canonical(m)) for m in ORDINARY[:3] + [late]],
        )

    def trusting(self, server: RunningServer) -> str:
        """
        fetchmail options that verify popd's certificate (issued for C{localhost}).
        """
        assert server.certificate is not None
        certificate = shlex.quote(server.certificate.certificate.path)
        return f"sslcertck sslcertfile {certificate} sslcommonname localhost"

    async def test_stls(self) -> None:
        """
        R32: fetchmail upgrades with STLS (C{sslproto tls1.2+}), verifies popd's certificate
        and retrieves every message over TLS.
        """
        server = await startServer(self, {USER: ORDINARY}, tls=True)
        rcFile = self.rcFile(
            server.port, userOptions="fetchall", tls=f"sslproto tls1.2+ {self.trusting(server)}"
        )
        result = await self.runFetchmail(rcFile)
        self.assertEqual(result.code, 0, result.describe())
        self.assertIn(b"STLS", result.out + result.err)
        self.assertEqual(readDelivered(self.delivered), [crlfToLF(canonical(m)) for m in ORDINARY])

    async def test_implicitTLS(self) -> None:
        """
        R35: fetchmail over implicit TLS (C{ssl}) retrieves every message.
        """
        server = await startServer(self, {USER: ORDINARY}, tls=True)
        assert server.tlsPort is not None
        rcFile = self.rcFile(
            server.tlsPort, userOptions="fetchall", tls=f"ssl {self.trusting(server)}"
        )
        result = await self.runFetchmail(rcFile)
        self.assertEqual(result.code, 0, result.describe())
        self.assertNotIn(b"STLS", result.out + result.err)
        self.assertEqual(readDelivered(self.delivered), [crlfToLF(canonical(m)) for m in ORDINARY])


class MpopTests(TestCase):
    """
    C{mpop} against popd, without TLS.
    """

    async def test_fetchTwice(self) -> None:
        """
        R7, R19, R22: mpop retrieves every message (compared with LF line ends); a second
        run, after another agent renamed the files to add flags, fetches nothing new.  Without
        TLS mpop sends a password only when told to (C{auth user}); popd accepts USER/PASS on
        loopback.
        """
        server = await startServer(self, {USER: ORDINARY})
        account = MpopAccount(FilePath(self.mktemp()), server.port, "tls off\nauth user")
        await account.fetch()
        expected = sorted(crlfToLF(canonical(m)) for m in ORDINARY)
        self.assertEqual(account.delivered(), expected)
        await server.whenIdle()
        server.store.markSeen(USER)
        await account.fetch()
        self.assertEqual(account.delivered(), expected)
        await server.whenIdle()
        self.assertEqual(server.store.stored(USER), ORDINARY)


class CurlTests(TestCase):
    """
    C{curl}'s POP3 support against popd.
    """

    def setUp(self) -> None:
        requireProgram(CURL)
        self.home = FilePath(self.mktemp())

    async def test_list(self) -> None:
        """
        R19: C{curl pop3://host/} prints the C{LIST} scan listing with CRLF-canonical sizes.
        """
        server = await startServer(self, {USER: ORDINARY})
        result = await curl(self.home, f"pop3://{HOST}:{server.port}/")
        self.assertEqual(
            result.out,
            b"".join(b"%d %d\r\n" % (n, len(canonical(m))) for n, m in enumerate(ORDINARY, 1)),
        )

    async def test_retrieve(self) -> None:
        """
        R7: C{curl pop3://host/n} retrieves each message byte-exact.
        """
        messages = ORDINARY + EDGE_CASES
        server = await startServer(self, {USER: messages})
        for number, message in enumerate(messages, 1):
            result = await curl(self.home, f"pop3://{HOST}:{server.port}/{number}")
            self.assertEqual(result.out, canonical(message), f"message {number}")

    async def test_uidl(self) -> None:
        """
        R22: C{curl -X UIDL} prints one C{n uid} line per message, unique-ids unique.
        """
        server = await startServer(self, {USER: ORDINARY})
        result = await curl(self.home, f"pop3://{HOST}:{server.port}/", "-X", "UIDL")
        lines = result.out.split(CRLF)
        self.assertEqual(lines[-1], b"")
        pairs = [line.split(b" ") for line in lines[:-1]]
        self.assertEqual([int(n) for n, _ in pairs], list(range(1, len(ORDINARY) + 1)))
        self.assertEqual(len({uid for _, uid in pairs}), len(ORDINARY))

    async def test_top(self) -> None:
        """
        R21: C{curl -X 'TOP 1 0'} prints the header and the blank line that ends it.
        """
        server = await startServer(self, {USER: ORDINARY})
        result = await curl(self.home, f"pop3://{HOST}:{server.port}/", "-X", "TOP 1 0")
        self.assertEqual(result.out, b"Subject: CRLF\r\nFrom: a@example.com\r\n\r\n")

    async def test_apop(self) -> None:
        """
        R9, R13: with a plaintext-equivalent password on file, the greeting carries an APOP
        timestamp, and curl told to use APOP (C{AUTH=+APOP}) logs in with it.
        """
        server = await startServer(self, {USER: ORDINARY[:1]}, scheme="PLAIN")
        result = await curl(
            self.home, f"pop3://{HOST}:{server.port}/1", "--login-options", "AUTH=+APOP"
        )
        self.assertIn(f"> APOP {USER} ".encode(), result.err)
        self.assertEqual(result.out, canonical(ORDINARY[0]))

    async def test_sasl(self) -> None:
        """
        R31: curl logs in with each SASL mechanism popd offers for a plaintext-equivalent
        password (C{PLAIN}, C{LOGIN}, C{CRAM-MD5}).
        """
        server = await startServer(self, {USER: ORDINARY[:1]}, scheme="PLAIN")
        for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
            result = await curl(
                self.home,
                f"pop3://{HOST}:{server.port}/1",
                *("--login-options", f"AUTH={mechanism}"),
            )
            self.assertIn(f"> AUTH {mechanism}".encode(), result.err)
            self.assertEqual(result.out, canonical(ORDINARY[0]), mechanism)


class TLSTests(TestCase):
    """
    STLS (RFC 2595) and implicit TLS (RFC 8314) with the demo's self-signed certificate for
    C{localhost} and C{127.0.0.1}, which every client is told to trust and verifies.
    """

    async def startServer(self) -> RunningServer:
        server = await startServer(self, {USER: ORDINARY}, tls=True)
        assert server.certificate is not None
        self.certificate = server.certificate
        return server

    async def test_poplibSTLS(self) -> None:
        """
        R32: C{STLS} is advertised before TLS and not after; the session stays in
        AUTHORIZATION, a second C{STLS} is refused, and mail is retrieved byte-exact.
        """
        server = await self.startServer()

        def session() -> None:
            client = poplib.POP3(HOST, server.port, timeout=30)
            self.assertIn("STLS", client.capa())
            client.stls(self.certificate.clientContext())
            capabilities = client.capa()
            self.assertNotIn("STLS", capabilities)
            self.assertIn("USER", capabilities)
            # poplib refuses a second stls() itself: send the command as it is.
            sendCommand = client._shortcmd  # type: ignore[attr-defined]
            self.assertRaises(poplib.error_proto, sendCommand, "STLS")
            client.user(USER)
            client.pass_(PASSWORD)
            for number, message in enumerate(ORDINARY, 1):
                expected = canonical(message)
                self.assertEqual(retrieve(client, number), (expected, len(expected)))
            client.quit()

        await deferToThread(session)

    async def test_poplibImplicitTLS(self) -> None:
        """
        R35: on the implicit-TLS port C{STLS} is neither advertised nor accepted, and mail is
        retrieved byte-exact.
        """
        server = await self.startServer()
        assert server.tlsPort is not None
        port = server.tlsPort

        def session() -> None:
            context = self.certificate.clientContext()
            client = poplib.POP3_SSL(HOST, port, timeout=30, context=context)
            self.assertNotIn("STLS", client.capa())
            sendCommand = client._shortcmd  # type: ignore[attr-defined]
            self.assertRaises(poplib.error_proto, sendCommand, "STLS")
            client.user(USER)
            client.pass_(PASSWORD)
            for number, message in enumerate(ORDINARY, 1):
                self.assertEqual(retrieve(client, number)[0], canonical(message))
            client.quit()

        await deferToThread(session)

    async def test_stlsInjection(self) -> None:
        """
        R33: a command sent after C{STLS} in the same cleartext segment is discarded, not
        answered inside TLS; the TLS session then works normally.
        """
        server = await self.startServer()
        context = self.certificate.clientContext()

        def session() -> None:
            connection = RawConnection(server.port)
            self.assertTrue(connection.readLine().startswith(b"+OK"))
            connection.send(b"STLS\r\nCAPA\r\n")
            self.assertTrue(connection.readLine().startswith(b"+OK"))
            tls = context.wrap_socket(connection.sock, server_hostname=HOST)
            tls.settimeout(1)
            try:
                injected = tls.recv(4096)
            except TimeoutError:
                injected = b""
            self.assertEqual(injected, b"")
            tls.settimeout(30)
            connection.sock = tls
            connection.send(b"CAPA\r\n")
            self.assertTrue(connection.readLine().startswith(b"+OK"))
            self.assertNotIn(b"STLS", connection.readBody())
            self.assertTrue(connection.command(b"USER " + USER.encode()).startswith(b"+OK"))
            self.assertTrue(connection.command(b"PASS " + PASSWORD.encode()).startswith(b"+OK"))
            self.assertEqual(connection.command(b"NOOP"), b"+OK\r\n")
            self.assertTrue(connection.command(b"QUIT").startswith(b"+OK"))
            connection.close()

        await deferToThread(session)

    async def test_curlSTLS(self) -> None:
        """
        R32: C{curl --ssl-reqd pop3://...} upgrades with C{STLS}, verifies the certificate and
        retrieves the message byte-exact.
        """
        server = await self.startServer()
        result = await curl(
            FilePath(self.mktemp()),
            f"pop3://{HOST}:{server.port}/1",
            *("--ssl-reqd", "--cacert", self.certificate.certificate.path),
        )
        self.assertIn(b"> STLS", result.err)
        self.assertEqual(result.out, canonical(ORDINARY[0]))

    async def test_curlImplicitTLS(self) -> None:
        """
        R35: C{curl pop3s://...} retrieves the message byte-exact over implicit TLS.
        """
        server = await self.startServer()
        result = await curl(
            FilePath(self.mktemp()),
            f"pop3s://{HOST}:{server.tlsPort}/6",
            *("--cacert", self.certificate.certificate.path),
        )
        self.assertEqual(result.out, canonical(ORDINARY[5]))

    async def mpop(self, port: int, tls: str) -> list[bytes]:
        account = MpopAccount(
            FilePath(self.mktemp()),
            port,
            f"{tls}\ntls_trust_file {self.certificate.certificate.path}",
        )
        await account.fetch()
        return account.delivered()

    async def test_mpopSTLS(self) -> None:
        """
        R32: mpop with C{tls_starttls on} upgrades with C{STLS}, verifies the certificate,
        chooses its own authentication and retrieves every message.
        """
        server = await self.startServer()
        delivered = await self.mpop(server.port, "tls on\ntls_starttls on")
        self.assertEqual(delivered, sorted(crlfToLF(canonical(m)) for m in ORDINARY))

    async def test_mpopImplicitTLS(self) -> None:
        """
        R35: mpop with C{tls_starttls off} uses implicit TLS and retrieves every message.
        """
        server = await self.startServer()
        assert server.tlsPort is not None
        delivered = await self.mpop(server.tlsPort, "tls on\ntls_starttls off")
        self.assertEqual(delivered, sorted(crlfToLF(canonical(m)) for m in ORDINARY))


class CleartextPolicyTests(TestCase):
    """
    R34: USER/PASS refused from a non-loopback peer without TLS.
    """

    async def test_nonLoopbackCleartextRefused(self) -> None:
        """
        R34: from another host, without TLS, CAPA lists neither USER nor the cleartext SASL
        mechanisms and USER is refused with C{[AUTH]}; after STLS the same login works.
        """
        host = TestHost(self)
        server = await startServer(self, {USER: [b"Subject: x\n\nhi\n"]}, tls=True)
        listener = reactor.listenTCP(  # type: ignore[attr-defined]
            0, server.factory, interface=host.hostAddress
        )
        self.addCleanup(listener.stopListening)
        script = """
import json, poplib, ssl, sys
host, port, user, password = sys.argv[1:]
client = poplib.POP3(host, int(port), timeout=20)
before = client.capa()
try:
    client.user(user)
    refused = None
except poplib.error_proto as e:
    refused = e.args[0].decode()
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
client.stls(context)
after = client.capa()
client.user(user)
client.pass_(password)
stat = client.stat()
client.quit()
print(json.dumps({"before": sorted(before), "sasl": before.get("SASL", []),
                  "refused": refused, "after": sorted(after), "stat": stat}))
"""
        result = await host.run(
            [sys.executable, "-c", script, host.hostAddress, str(listener.getHost().port),
             USER, PASSWORD],
            FilePath(self.mktemp()),
        )  # fmt: skip
        self.assertEqual(result.code, 0, result.describe())
        report = json.loads(result.out)
        self.assertNotIn("USER", report["before"])
        self.assertFalse({"PLAIN", "LOGIN"} & set(report["sasl"]), report["sasl"])
        self.assertEqual(
            report["refused"], "-ERR [AUTH] Plaintext authentication is disallowed without TLS."
        )
        self.assertIn("USER", report["after"])
        self.assertEqual(report["stat"], [1, len(canonical(b"Subject: x\n\nhi\n"))])
