"""
Security and availability under abuse, against real C{twistd popd} processes: user names that
try to leave the mail root, hostile input (a 1 MB line, NUL octets, invalid UTF-8, 5,000
pipelined commands), slowloris clients, 10,000 idle connections, file descriptor exhaustion,
a connection flood from one address, and privilege dropping with C{twistd --uid --gid}.

Nobody gets in who should not, nothing outside the mail root is touched, and the server keeps
serving: after each attack a new session is served within a generous bound (10 s; what a
person would still call prompt, and far above what any CI machine needs).
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.servers import (
    Client,
    Expected,
    Sandbox,
    ServerProcess,
    abortSocket,
    abortSockets,
    checkSession,
    messageName,
    raiseFileLimit,
    sampleMessage,
    tree,
    waitFor,
)
from tests.support import CRLF, TestHost

# How long a new session may take to be served after an attack: generous, see above.
_PROMPT = 10.0


def _deliver(sandbox: Sandbox, user: str = "bob", count: int = 3) -> list[Expected]:
    maildir = sandbox.maildir(user)
    messages = []
    for serial in range(1, count + 1):
        message = Expected(messageName(serial), sampleMessage(serial))
        maildir.deliver(message.base, message.stored)
        messages.append(message)
    return messages


def _servedPromptly(
    testCase: SynchronousTestCase,
    server: ServerProcess,
    messages: list[Expected],
    user: str = "bob",
    source: str | None = None,
) -> None:
    """
    A new session logs in and retrieves every message within L{_PROMPT} seconds.
    """
    started = time.monotonic()
    client = Client(server.host, server.port, source=source, timeout=_PROMPT)
    try:
        testCase.assertTrue(client.readLine().startswith(b"+OK"))
        client.login(user, server.sandbox.users[user])
        checkSession(testCase, client, messages, None)
        testCase.assertTrue(client.quit().startswith(b"+OK"))
    finally:
        client.close()
    testCase.assertLess(time.monotonic() - started, _PROMPT)


# User names


# Names that try to leave the mail root, or hide what they are: none may log in.
_TRAVERSAL = [
    "..", ".", "../evil", "../../evil", "../../../../../../tmp/popd-evil", "a/../../evil",
    "/etc", "/tmp/popd-evil", "evil/..", "evil/", "a/b", "..\\evil", "a\\b", ".hidden",
    "..@example.org", "x@..", "x@.", "x@../evil", "x@example.org/../..", "a@b@c", "@", "x@",
    "bob\x01", "bob\x1b[31m", "bob\x7f", "bob\t", "bob\x0b", "\x85bob", "bob\u2028",
    "bob\u202e", "bob\ufeff", "bob\u200b", "bob\ud7ff\U000e0001", "a" * 256, "../" * 90 + "x",
]  # fmt: skip

# The same, encoded: percent-encoding (once and twice), fullwidth and other look-alike dots
# and slashes that Unicode normalisation (NFKC) turns into C{.} and C{/}.
_ENCODED = [
    "%2e%2e", "%2E%2E", "%2e%2e%2fevil", "%2fetc", "%252e%252e", "%252e%252e%252fevil",
    "evil%2f..%2f..", "%00bob", "\uff0e\uff0e", "\uff0e\uff0e\uff0fevil", "a\uff0fb",
    "\u2024\u2024", "\u2025", "a\uff3cb", "\ufe52\ufe52",
]  # fmt: skip


class UserNameTests(SynchronousTestCase):
    """
    User names that try to leave the mail root never log in, whatever the password-file
    says, and never make the server touch the filesystem outside the root (DESIGN: "a name
    with C{/}, C{..}, NUL or control characters can never log in").
    """

    def _attempt(self, server: ServerProcess, name: str) -> list[bytes]:
        """
        Try to log in as C{name} with its right password, with USER/PASS and AUTH PLAIN.

        @return: the answers to PASS and AUTH.
        """
        encoded = name.encode("utf-8", "surrogatepass")
        password = server.sandbox.users[name].encode("utf-8")
        client = server.connect()
        answers = []
        user = client.command(b"USER " + encoded)
        if user.startswith(b"+OK"):
            answers.append(client.command(b"PASS " + password))
        else:
            answers.append(user)
        if not answers[-1].startswith(b"+OK"):
            plain = base64.b64encode(b"\0" + encoded + b"\0" + password)
            answers.append(client.command(b"AUTH PLAIN " + plain))
        if not answers[-1].startswith(b"+OK"):
            # As an authorization identity, next to a valid user.
            plain = base64.b64encode(encoded + b"\0bob\0secret")
            answers.append(client.command(b"AUTH PLAIN " + plain))
        client.close()
        return answers

    def _check(self, names: list[str]) -> None:
        sandbox = Sandbox(self)
        users = {"bob": "secret"}
        users.update({name: f"pw{number}" for number, name in enumerate(names)})
        sandbox.setUsers(users)
        messages = _deliver(sandbox)
        # The test's temporary tree around the sandbox, but for the servers' logs and the
        # mail root, and the mail root itself.
        outside = sandbox.directory.parent().parent()
        root = os.path.relpath(sandbox.root.path, outside.path)

        def snapshot() -> dict[str, tuple[int, bytes]]:
            return {
                path: entry
                for path, entry in tree(outside).items()
                if not os.path.basename(path).startswith("server-")
                and not path.startswith(root + os.sep)
            }

        before = snapshot()
        rootBefore = tree(sandbox.root)
        server = sandbox.server("--max-auth-failures", "50", "--max-bad-commands", "50")
        loggedIn = []
        for name in names:
            answers = self._attempt(server, name)
            if any(answer.startswith(b"+OK") for answer in answers):
                loggedIn.append(name)
        server.stop()
        # Nothing was created or changed outside the root, whatever happened.
        self.assertEqual(sorted(set(snapshot()) ^ set(before)), [])
        self.assertEqual(snapshot(), before)
        self.assertEqual([name for name in os.listdir("/tmp") if "evil" in name], [])
        self.assertEqual(loggedIn, [], "these names logged in")
        # Nor in it: no Maildir was created for any of the names.
        self.assertEqual(sorted(tree(sandbox.root)), sorted(rootBefore))
        server = sandbox.server()
        _servedPromptly(self, server, messages)

    def test_traversalNamesRefused(self) -> None:
        """
        Names with C{..}, C{/}, C{\\}, a leading dot, several C{@}, control, format or line
        separator characters, or over 255 octets, each in the passwd-file with a password,
        are refused with USER/PASS and with AUTH PLAIN (as authentication and as
        authorization identity); nothing outside the root, nor in it, is created.

        Rules: R30 ([AUTH]); DESIGN, Maildir store.
        """
        self._check(_TRAVERSAL)

    def test_nulAndInvalidUtf8Names(self) -> None:
        """
        Names with NUL or bytes that are not UTF-8 (overlong encodings of C{.} and C{/}
        among them) never log in, and touch nothing.

        Rules: R30 ([AUTH]); DESIGN, Maildir store.
        """
        sandbox = Sandbox(self)
        sandbox.passwd.setContent(
            b"bob:{PLAIN}secret\n"
            b"bob\0evil:{PLAIN}pw\n"
            b"\xc0\xae\xc0\xae:{PLAIN}pw\n"
            b"\xc0\xae\xc0\xae\xc0\xafevil:{PLAIN}pw\n"
            b"\xff\xfe:{PLAIN}pw\n"
        )
        messages = _deliver(sandbox)
        rootBefore = tree(sandbox.root)
        server = sandbox.server("--max-auth-failures", "50", "--max-bad-commands", "50")
        for name in [b"bob\0evil", b"\0", b"\xc0\xae\xc0\xae", b"\xc0\xae\xc0\xae\xc0\xafevil",
                     b"\xff\xfe"]:  # fmt: skip
            client = server.connect()
            first = client.command(b"USER " + name)
            if first.startswith(b"+OK"):
                self.assertTrue(client.command(b"PASS pw").startswith(b"-ERR"), name)
            plain = base64.b64encode(b"\0" + name + b"\0pw")
            self.assertTrue(client.command(b"AUTH PLAIN " + plain).startswith(b"-ERR"), name)
            client.close()
        self.assertEqual(tree(sandbox.root), rootBefore)
        _servedPromptly(self, server, messages)

    def test_lookAlikeNamesStayApart(self) -> None:
        """
        Names that decode or normalise to another user's name (C{%62ob}, fullwidth
        C{\uff42\uff4f\uff42}), if they log in at all, never reach that user's Maildir:
        they see no message of bob's, and bob's Maildir is unchanged.

        Rules: R10, R22.
        """
        sandbox = Sandbox(self)
        lookAlikes = ["%62ob", "%2562ob", "\uff42\uff4f\uff42", "BOB", "bob@"]
        sandbox.setUsers({"bob": "secret", **{name: "pw" for name in lookAlikes}})
        messages = _deliver(sandbox)
        bob = tree(sandbox.maildir().path)
        server = sandbox.server("--max-auth-failures", "50")
        for name in lookAlikes:
            client = server.connect()
            client.ok(b"USER " + name.encode("utf-8"))
            answer = client.command(b"PASS pw")
            if answer.startswith(b"+OK"):
                self.assertEqual(client.ok(b"STAT"), b"+OK 0 0", name)
                self.assertTrue(client.quit().startswith(b"+OK"))
            client.close()
        self.assertEqual(tree(sandbox.maildir().path), bob)
        _servedPromptly(self, server, messages)

    def test_encodedTraversalNamesRefused(self) -> None:
        """
        Encoded variants of traversal names (percent-encoded once or twice; fullwidth and
        other look-alike dots and slashes that NFKC normalises to C{.} and C{/}) are refused
        too, as Dovecot's default C{auth_username_chars} refuses them: another program that
        decodes or normalises the name (a log analyser, a backup or quota script, a
        filesystem that normalises) must not see a path outside the root.

        Rules: R30 ([AUTH]); the issue: encoded variants never log in.
        """
        self._check(_ENCODED)


# Hostile input


class InputTests(SynchronousTestCase):
    """
    Hostile input is answered C{-ERR} without echo (R3, R5), never crashes the session or the
    server, and pipelined commands are answered in order (R26).
    """

    def setUp(self) -> None:
        self.sandbox = Sandbox(self, {"bob": "secret", "b\u00f6b": "secret2"})
        self.messages = _deliver(self.sandbox)
        self.server = self.sandbox.server("--max-auth-failures", "20", "--max-bad-commands", "20")

    def test_megabyteLine(self) -> None:
        """
        A 1 MB command line, before and after login, is answered C{-ERR Line too long.} (a
        short fixed text, not an echo), and the session goes on; a 1 MB line cut by the
        client's close leaves the server serving.

        Rules: R3, R4, R5.
        """
        line = b"x" * (1 << 20)
        client = self.server.connect()
        self.assertEqual(client.command(b"USER " + line), b"-ERR Line too long.")
        self.assertEqual(client.command(b"CAPA"), b"+OK Capability list follows.")
        client.readBody()
        client.login("bob", "secret")
        for command in (b"NOOP " + line, b"RETR " + line, line):
            self.assertEqual(client.command(command), b"-ERR Line too long.")
            self.assertEqual(client.command(b"NOOP"), b"+OK")
        self.assertEqual(client.retrieve(1), self.messages[0].transmitted)
        self.assertTrue(client.quit().startswith(b"+OK"))
        for _ in range(3):
            cut = self.server.connect()
            cut.send(b"USER " + line)
            cut.abort()
        _servedPromptly(self, self.server, self.messages)

    def test_nulOctets(self) -> None:
        """
        Lines with NUL octets are refused with C{-ERR} (the keyword, the argument, the
        password, the whole line), the session goes on, and after too many bad commands the
        server closes the connection.

        Rules: R5; STANDARDS practices: reject NUL octets.
        """
        client = self.server.connect()
        for line in [b"NO\0OP", b"USER bob\0", b"\0" * 1000, b"CAPA\0"]:
            self.assertEqual(client.command(line), b"-ERR NUL octets are not allowed.")
        client.ok(b"USER bob")
        self.assertEqual(client.command(b"PASS \0secret"), b"-ERR NUL octets are not allowed.")
        self.assertEqual(client.command(b"PASS secret\0"), b"-ERR NUL octets are not allowed.")
        client.ok(b"PASS secret")
        self.assertEqual(client.command(b"RETR\0 1"), b"-ERR NUL octets are not allowed.")
        self.assertEqual(client.retrieve(1), self.messages[0].transmitted)
        # 7 bad commands so far; the 21st (over --max-bad-commands 20) ends the session.
        for _ in range(13):
            self.assertEqual(client.command(b"\0"), b"-ERR NUL octets are not allowed.")
        self.assertEqual(
            client.command(b"\0"), b"-ERR Too many bad commands; closing the connection."
        )
        self.assertTrue(client.closed(_PROMPT))
        _servedPromptly(self, self.server, self.messages)

    def test_invalidUtf8(self) -> None:
        """
        Invalid UTF-8 in keywords, user names, passwords and SASL responses is refused with
        C{-ERR}, the session goes on, and a UTF-8 user name logs in after C{UTF8} (R36).
        """
        client = self.server.connect()
        for line in [b"\xff\xfe", b"ST\xc3AT", b"\xc0\xaeUSER bob"]:
            self.assertEqual(client.command(line), b"-ERR Unknown command.")
        for user, password in [(b"\xff\xfe", b"secret"), (b"bob", b"\xff\xfe"),
                               (b"b\xc3\xb6b\xff", b"secret2")]:  # fmt: skip
            client.ok(b"USER " + user)
            self.assertTrue(client.command(b"PASS " + password).startswith(b"-ERR [AUTH]"))
        plain = base64.b64encode(b"\0\xc3\x28\0secret")
        self.assertTrue(client.command(b"AUTH PLAIN " + plain).startswith(b"-ERR"))
        self.assertTrue(client.command(b"AUTH PLAIN \xff\xfe").startswith(b"-ERR"))
        client.ok(b"UTF8")
        client.login("b\u00f6b", "secret2")
        self.assertEqual(client.ok(b"STAT"), b"+OK 0 0")
        self.assertTrue(client.quit().startswith(b"+OK"))
        _servedPromptly(self, self.server, self.messages)

    def test_fiveThousandPipelinedCommands(self) -> None:
        """
        5,000 commands sent in one write after login (RETR and TOP among them, and DELE and
        RSET) are answered completely and in order (R26), and a QUIT that follows them
        removes nothing (the last RSET cleared the marks).
        """
        messages = self.messages
        header = messages[1].transmitted.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        total = sum(m.size for m in messages)
        cycle = [
            (b"NOOP", b"+OK", None),
            (b"STAT", b"+OK 3 %d" % (total,), None),
            (b"LIST 1", b"+OK 1 %d" % (messages[0].size,), None),
            (b"UIDL 2", b"+OK 2 " + messages[1].base.encode("ascii"), None),
            (b"RETR 1", b"+OK %d octets" % (messages[0].size,), messages[0].transmitted),
            (b"TOP 2 0", b"+OK", header),
            (b"DELE 3", b"+OK Message 3 deleted.", None),
            (b"STAT", b"+OK 2 %d" % (total - messages[2].size,), None),
            (b"LIST", b"+OK 2 messages (%d octets)" % (total - messages[2].size,),
             b"1 %d\r\n2 %d\r\n" % (messages[0].size, messages[1].size)),
            (b"RSET", b"+OK 3 messages.", None),
        ]  # fmt: skip
        commands = cycle * 500
        self.assertEqual(len(commands), 5000)
        client = self.server.connect()
        client.login("bob", "secret")
        payload = b"".join(command + CRLF for command, _, _ in commands) + b"QUIT\r\n"
        sender = threading.Thread(target=client.send, args=(payload,))
        sender.start()
        try:
            for number, (command, first, body) in enumerate(commands):
                self.assertEqual(client.readLine(), first, f"command {number}: {command!r}")
                if body is not None:
                    received = client.readBody()
                    if command.startswith(b"RETR"):
                        received = received.replace(b"\r\n..", b"\r\n.")
                    self.assertEqual(received, body, f"command {number}: {command!r}")
            self.assertEqual(client.readLine(), b"+OK Bye; 0 messages removed.")
        finally:
            sender.join(_PROMPT)
        self.assertEqual(self.sandbox.maildir().contents(), {m.base: m.stored for m in messages})


# Many connections


def _openMany(
    server: ServerProcess, count: int, sources: list[str], perSource: int, batch: int = 25
) -> tuple[list[socket.socket], int]:
    """
    Open C{count} connections, C{perSource} from each address of C{sources} in turn, and
    read their greetings, C{batch} at a time; stop at the first batch where the server
    closed a connection without greeting it (when it is out of file descriptors, Twisted
    accepts and closes at once).

    @return: the sockets, and how many connections were not greeted.
    """
    sockets: list[socket.socket] = []
    refused = 0
    while len(sockets) < count and not refused:
        opened = []
        for number in range(len(sockets), min(count, len(sockets) + batch)):
            sock = socket.socket()
            sockets.append(sock)
            opened.append(sock)
            sock.settimeout(_PROMPT)
            sock.bind((sources[number // perSource], 0))
            sock.connect((server.host, server.port))
        for sock in opened:
            try:
                greeting = sock.recv(512)
            except (TimeoutError, ConnectionResetError):
                greeting = b""
            if not greeting.startswith(b"+OK"):
                refused += 1
    return sockets, refused


class ConnectionTests(SynchronousTestCase):
    """
    Many connections, idle, slow or from one address, cannot deny service to others: slow
    clients are cut off by the login timeout, the per-IP limit holds, file descriptors are
    raised to what the system allows and their exhaustion does not kill the server.
    """

    def test_slowloris(self) -> None:
        """
        300 slowloris connections from 15 addresses (20 each, the default per-IP limit) that
        keep trickling a byte every 0.3 s without ever ending a line do not stop a new
        session from being served; the login timeout (3 s here) closes them all although
        they keep sending.

        Rules: R8; STANDARDS practices: pre-login timeout.
        """
        sandbox = Sandbox(self)
        messages = _deliver(sandbox)
        server = sandbox.server("--login-timeout", "3")
        sources = [f"127.0.1.{n}" for n in range(1, 16)]
        sockets, refused = _openMany(server, 300, sources, 20)
        self.addCleanup(abortSockets, sockets)
        self.assertEqual(refused, 0)
        for sock in sockets:
            sock.setblocking(False)
        open_ = set(sockets)
        started = time.monotonic()
        served = False
        while open_ and time.monotonic() - started < 3 + 2 * _PROMPT:
            for sock in list(open_):
                try:
                    sock.send(b"U")
                    if sock.recv(4096) == b"":
                        open_.discard(sock)
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(sock)
            if not served:
                _servedPromptly(self, server, messages)
                served = True
            time.sleep(0.3)
        self.assertTrue(served)
        self.assertEqual(len(open_), 0, "slowloris connections outlived the login timeout")
        self.assertTrue(server.running())

    def test_tenThousandIdleConnections(self) -> None:
        """
        10,000 idle connections from 500 addresses (20 each) are all greeted and held,
        although the server was started with a soft file descriptor limit of 1,024: it raises
        its soft limit to the hard one where allowed.  A new session is still served
        promptly; the server is still running after they all reset.

        Rules: STANDARDS practices: limits; R30.
        """
        count = 10_000
        raiseFileLimit(count + 500)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        sandbox = Sandbox(self)
        messages = _deliver(sandbox)
        server = sandbox.server(fileLimit=(1024, hard))
        sources = [f"127.0.{2 + n // 250}.{1 + n % 250}" for n in range(count // 20)]
        sockets, refused = _openMany(server, count, sources, 20)
        self.addCleanup(abortSockets, sockets)
        self.assertEqual(
            refused,
            0,
            f"{refused} of the first {len(sockets)} connections were not greeted: is the soft"
            " limit raised?",
        )
        _servedPromptly(self, server, messages)
        for sock in sockets:
            abortSocket(sock)
        del sockets[:]
        _servedPromptly(self, server, messages)
        self.assertTrue(server.running())

    def test_fileDescriptorExhaustion(self) -> None:
        """
        With a hard file descriptor limit of 128, connections are accepted until C{accept}
        fails with C{EMFILE}; the server survives: a logged-in session is answered
        C{-ERR [SYS/TEMP]} when a message cannot be opened and goes on, and once the idle
        connections close, a new session is served promptly and the first one reads its
        message.

        Rules: R30.
        """
        sandbox = Sandbox(self, {"bob": "secret", "alice": "secret2"})
        messages = _deliver(sandbox)
        alices = _deliver(sandbox, "alice", 2)
        server = sandbox.server("--max-connections-per-ip", "1000", fileLimit=(128, 128))
        bob = server.session()
        idle: list[socket.socket] = []
        self.addCleanup(abortSockets, idle)
        exhausted = False
        while len(idle) < 200 and not exhausted:
            sock = socket.create_connection((server.host, server.port), timeout=_PROMPT)
            idle.append(sock)
            try:
                exhausted = not sock.recv(512).startswith(b"+OK")
            except (TimeoutError, ConnectionResetError):
                exhausted = True
        self.assertTrue(exhausted, "128 file descriptors were never exhausted")
        self.assertTrue(server.running())
        self.assertTrue(bob.command(b"RETR 1").startswith(b"-ERR [SYS/TEMP]"))
        self.assertEqual(bob.command(b"NOOP"), b"+OK")
        for sock in idle:
            abortSocket(sock)
        del idle[:]
        waitFor(lambda: self._greets(server), _PROMPT, "the server to accept again")
        _servedPromptly(self, server, alices, "alice")
        self.assertEqual(bob.retrieve(1), messages[0].transmitted)
        self.assertTrue(bob.quit().startswith(b"+OK"))
        self.assertTrue(server.running())

    @staticmethod
    def _greets(server: ServerProcess) -> bool:
        try:
            with socket.create_connection((server.host, server.port), timeout=_PROMPT) as sock:
                return sock.recv(512).startswith(b"+OK")
        except OSError:
            return False

    def test_floodFromOneAddress(self) -> None:
        """
        With C{--max-connections-per-ip 5}, a flood of 200 connections from 127.0.0.1 gets
        five greetings, and every other connection C{-ERR [SYS/TEMP] Too many connections
        from your address.}, then a close; 127.0.0.2 is served meanwhile, and a slot freed
        is taken again.

        Rules: R30; STANDARDS practices: per-IP limits.
        """
        sandbox = Sandbox(self)
        messages = _deliver(sandbox)
        server = sandbox.server("--max-connections-per-ip", "5")
        held = [server.connect() for _ in range(5)]
        refusal = b"-ERR [SYS/TEMP] Too many connections from your address."
        for _ in range(200):
            flood = Client(server.host, server.port)
            self.assertEqual(flood.readLine(), refusal)
            self.assertTrue(flood.closed(_PROMPT))
            flood.close()
        _servedPromptly(self, server, messages, source="127.0.0.2")
        held.pop().close()
        waitFor(lambda: self._greets(server), _PROMPT, "the freed slot")
        for client in held:
            self.assertEqual(client.command(b"CAPA"), b"+OK Capability list follows.")
            client.readBody()

    def test_floodFromOneHostOtherHostServed(self) -> None:
        """
        While one address holds all its connections (limit 3) and is refused more, a client
        on another host (a network namespace joined by a veth pair) is served.

        Rules: R30, R34.
        """
        sandbox = Sandbox(self)
        messages = _deliver(sandbox)
        # TestHost only needs addCleanup, which synchronous test cases have too.
        host = TestHost(self)  # type: ignore[arg-type]
        server = sandbox.server(
            "--max-connections-per-ip", "3", "--allow-cleartext", host=host.hostAddress
        )
        held = [server.connect() for _ in range(3)]
        flood = Client(server.host, server.port)
        self.assertTrue(flood.readLine().startswith(b"-ERR [SYS/TEMP]"))
        script = (
            "import socket, sys\n"
            "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n"
            "f = s.makefile('rb')\n"
            "out = [f.readline()]\n"
            "for line in (b'USER bob', b'PASS secret', b'STAT', b'QUIT'):\n"
            "    s.sendall(line + b'\\r\\n'); out.append(f.readline())\n"
            "sys.stdout.write(repr(out))\n"
        )
        result = subprocess.run(
            [host._ip, "netns", "exec", host.name, sys.executable, "-c", script,
             host.hostAddress, str(server.port)],
            capture_output=True, timeout=30,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        answers = eval(result.stdout)
        self.assertTrue(answers[0].startswith(b"+OK"))
        self.assertEqual(answers[2], b"+OK Logged in.\r\n")
        self.assertEqual(answers[3], b"+OK 3 %d\r\n" % (sum(m.size for m in messages),))
        for client in held:
            client.close()


# Privileges


class PrivilegeDropTests(SynchronousTestCase):
    """
    Started as root with C{twistd --uid --gid}, popd serves Maildirs owned by that user, and
    what it creates (lock, index) belongs to that user: it never runs sessions as root.
    """

    def test_servesAsUnprivilegedUser(self) -> None:
        """
        As C{nobody:nogroup}, the server reads and deletes a message in a Maildir owned by
        C{nobody}; its lock file and index are owned by C{nobody}; the process has no root
        identity left.

        Rules: STANDARDS practices: twistd --uid/--gid.
        """
        if os.geteuid() != 0:
            raise SkipTest("dropping privileges needs root")
        try:
            uid = pwd.getpwnam("nobody").pw_uid
            gid = grp.getgrnam("nogroup").gr_gid
        except KeyError:
            raise SkipTest("no nobody:nogroup on this system") from None
        # A directory every user can traverse, whatever the mode of the test's own tree.
        base = tempfile.mkdtemp(prefix="popd-privileges-")
        self.addCleanup(shutil.rmtree, base, True)
        os.chmod(base, 0o755)
        sandbox = Sandbox(self, directory=FilePath(base).child("sandbox"))
        messages = _deliver(sandbox, count=2)
        for path, _, files in os.walk(sandbox.root.path):
            os.chown(path, uid, gid)
            for name in files:
                os.chown(os.path.join(path, name), uid, gid)
        os.chown(sandbox.passwd.path, uid, gid)
        os.chmod(sandbox.passwd.path, 0o600)
        os.chmod(sandbox.directory.path, 0o755)
        server = sandbox.server(privileges=(uid, gid))
        status = FilePath(f"/proc/{server.pid}/status").getContent().decode("ascii")
        ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
        self.assertEqual(ids["Uid"], [str(uid)] * 4)
        self.assertEqual(ids["Gid"], [str(gid)] * 4)
        client = server.session()
        self.assertEqual(client.retrieve(1), messages[0].transmitted)
        client.ok(b"DELE 1")
        self.assertEqual(client.quit(), b"+OK Bye; 1 messages removed.")
        maildir = sandbox.maildir()
        self.assertEqual(list(maildir.contents()), [messages[1].base])
        for name in ("popd.lock", "popd-index"):
            info = os.stat(maildir.path.child(name).path)
            self.assertEqual((info.st_uid, info.st_gid), (uid, gid), name)
        seen = maildir.find(messages[1].base)
        self.assertEqual(os.stat(seen.path).st_uid, uid)
