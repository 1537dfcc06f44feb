"""
The code examples of README.rst that show popd used from Python are run, so that they cannot
rot: those of the sections L{TESTED_SECTIONS}, where each literal block follows an RST comment
C{.. readme-test: NAME} that names how this module runs it.

Server programs, which listen on a fixed port and run the reactor, run in a subprocess with
their paths and port replaced (L{SERVER_RUNNER} reports the port they listen on), and are
checked with C{poplib}.  Test examples run under the tool they are written for.
"""

from __future__ import annotations

import os
import poplib
import re
import select
import subprocess
import sys
import textwrap
from dataclasses import dataclass

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from popd.cred import hashPassword
from tests.test_testing import ROOT, runPython

README = FilePath(ROOT).child("README.rst")

TESTED_SECTIONS = (
    "Embedding popd in a Twisted application",
    "Testing your POP3 client with popd",
)

_MARKER = re.compile(r"\.\. readme-test: (\S+)$")

# Runs a server example given as its first argument, printing the port of each listenTCP.
SERVER_RUNNER = """
import sys

from twisted.internet import reactor

listenTCP = reactor.listenTCP


def announcingListenTCP(*args, **kwargs):
    port = listenTCP(*args, **kwargs)
    print(port.getHost().port, flush=True)
    return port


reactor.listenTCP = announcingListenTCP
exec(compile(sys.argv[1], "README.rst", "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class Example:
    """
    A literal block of README.rst.

    @ivar section: the title of the top-level section it is in.
    @ivar name: the name of its C{readme-test} comment, if it has one.
    @ivar line: the line number of its first line.
    @ivar code: its text, dedented.
    """

    section: str
    name: str | None
    line: int
    code: str


def literalBlocks(text: str) -> list[Example]:
    """
    Find the literal blocks (those after a paragraph ending with C{::}) of an RST document.
    """
    lines = text.splitlines()
    examples = []
    section = ""
    name = None
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        marker = _MARKER.match(line)
        if line.strip() and following.startswith("---") and set(following) == {"-"}:
            section, name = line, None
        elif marker:
            name = marker.group(1)
        elif line.endswith("::") and not line.startswith("..") and not following.strip():
            end = index + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][0].isspace()):
                end += 1
            code = textwrap.dedent("\n".join(lines[index + 1 : end])).strip("\n") + "\n"
            examples.append(Example(section, name, index + 3, code))
            name = None
            index = end
            continue
        index += 1
    return examples


def readmeExample(name: str) -> str:
    """
    The code of the README example named C{name}.
    """
    codes = [e.code for e in literalBlocks(README.getContent().decode("utf-8")) if e.name == name]
    if len(codes) != 1:
        raise AssertionError(f"README.rst has {len(codes)} examples named {name}, not one")
    return codes[0]


class MarkersTests(SynchronousTestCase):
    def test_everyBlockRun(self) -> None:
        """
        Every literal block of the tested sections, and no other, names how it is run, with a
        name that this module runs exactly once.
        """
        examples = literalBlocks(README.getContent().decode("utf-8"))
        named = sorted(e.name for e in examples if e.name is not None)
        self.assertEqual(
            named, ["maildir-server", "memory-server", "pytest", "serve", "serve-tls", "trial"]
        )
        for example in examples:
            tested = example.section in TESTED_SECTIONS
            self.assertEqual(
                example.name is not None,
                tested,
                f"README.rst line {example.line}: the code blocks of {TESTED_SECTIONS}, and "
                "only they, follow a readme-test comment",
            )


class ServerExampleTests(SynchronousTestCase):
    """
    The programs of "Embedding popd in a Twisted application" serve POP3.
    """

    def startServer(self, name: str, substitutions: dict[str, str]) -> int:
        """
        Run a server example in a subprocess, on a free loopback port instead of its own,
        with its paths replaced.

        @param substitutions: texts of the example, each with its replacement.
        @return: the port it listens on.
        """
        code = readmeExample(name)
        for old, new in substitutions.items():
            self.assertIn(old, code, f"update {__name__} for the new README example {name}")
            code = code.replace(old, new)
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER_RUNNER, code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        self.process = process
        self.addCleanup(self.kill)
        assert process.stdout is not None and process.stderr is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        port = process.stdout.readline().strip() if ready else ""
        if not port.isdigit():
            self.kill()
            self.fail(f"the example did not listen: {process.stderr.read()}")
        return int(port)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()

    def stopServer(self) -> None:
        """
        Stop the server example as an administrator would, and check that it ended cleanly.
        """
        self.process.terminate()
        stderr = self.process.communicate(timeout=30)[1]
        self.assertEqual(self.process.returncode, 0, stderr)
        self.assertNotIn("Traceback", stderr)

    def retrieveFirst(self, port: int, user: str) -> list[bytes]:
        client = poplib.POP3("127.0.0.1", port, timeout=30)
        client.user(user)
        client.pass_("secret")
        lines = client.retr(1)[1]
        client.quit()
        return lines

    def test_maildirServer(self) -> None:
        """
        The Maildir example serves a Maildir to a user of a passwd-file.
        """
        root = FilePath(self.mktemp())
        maildir = root.descendant(["mail", "example.org", "alice", "Maildir"])
        for subdirectory in ["tmp", "new", "cur"]:
            maildir.child(subdirectory).makedirs()
        maildir.descendant(["new", "1700000000.M1P1.test"]).setContent(b"Subject: hi\n\nHi.\n")
        passwd = root.child("passwd")
        passwd.setContent(f"alice@example.org:{hashPassword('secret')}\n".encode("ascii"))
        port = self.startServer(
            "maildir-server",
            {
                '"/var/mail/%d/%n/Maildir"': repr(root.child("mail").path + "/%d/%n/Maildir"),
                '"/etc/popd/passwd"': repr(passwd.path),
                '"tcp:1110"': '"tcp:0:interface=127.0.0.1"',
            },
        )
        lines = self.retrieveFirst(port, "alice@example.org")
        self.assertEqual(lines, [b"Subject: hi", b"", b"Hi."])
        self.stopServer()

    def test_memoryServer(self) -> None:
        """
        The in-memory example serves Alice's message.
        """
        port = self.startServer("memory-server", {'"tcp:1110"': '"tcp:0:interface=127.0.0.1"'})
        lines = self.retrieveFirst(port, "alice")
        self.assertEqual(lines, [b"Subject: hi", b"", b"Hello, Alice."])
        self.stopServer()


class TestingExampleTests(SynchronousTestCase):
    """
    The examples of "Testing your POP3 client with popd" pass under Python, pytest and trial.
    """

    def directory(self) -> FilePath[str]:
        directory = FilePath(self.mktemp())
        directory.makedirs()
        return directory

    def test_serve(self) -> None:
        """
        The C{serve()} examples run as scripts.
        """
        for name in ["serve", "serve-tls"]:
            result = runPython(["-c", readmeExample(name)], self.directory().path)
            self.assertEqual(result.returncode, 0, f"{name}: {result.stderr}")

    def test_pytest(self) -> None:
        """
        The pytest example passes with the plugin.
        """
        directory = self.directory()
        directory.child("test_readme_example.py").setContent(readmeExample("pytest").encode())
        result = runPython(
            ["-m", "pytest", "-p", "popd.pytest_plugin", "-p", "no:cacheprovider", "-q"],
            directory.path,
            PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("2 passed", result.stdout)

    def test_trial(self) -> None:
        """
        The trial example passes.
        """
        directory = self.directory()
        directory.child("readme_example.py").setContent(readmeExample("trial").encode())
        result = runPython(
            ["-m", "twisted.trial", "--temp-directory", "_trial_temp", "readme_example"],
            directory.path,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("PASSED (successes=1)", result.stdout)
