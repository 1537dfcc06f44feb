"""
Tests for L{popd.passwd}, the C{popd-passwd} command: its lines are read back by
L{popd.cred.PasswdFileChecker}, and every mistake ends with a message and a status, never a
traceback.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Generator
from importlib.metadata import entry_points
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from popd import passwd
from popd.cred import SCHEMES, PasswdFileChecker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Low costs for the schemes that take one, so that the round trips are fast.
LOW_ROUNDS = {
    "SHA256-CRYPT": 1000,
    "SHA512-CRYPT": 1000,
    "BLF-CRYPT": 4,
    "CRYPT": 4,
    "ARGON2": 1,
    "ARGON2I": 1,
    "ARGON2ID": 1,
    "SCRAM-SHA-1": 4096,
    "SCRAM-SHA-256": 4096,
}


class _Terminal(io.StringIO):
    """
    Standard input that is a terminal.
    """

    def isatty(self) -> bool:
        return True


class Run:
    """
    One in-process run of L{passwd.main}, with its standard streams and password prompts.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        arguments: list[str],
        stdin: str = "",
        typed: list[str] | None = None,
    ) -> None:
        """
        @param stdin: standard input, which is not a terminal unless C{typed} is given.
        @param typed: the answers to the password prompts of a terminal.
        """
        self.prompts: list[str] = []
        answers = list(typed or [])

        def getpass(prompt: str) -> str:
            self.prompts.append(prompt)
            if not answers:
                raise EOFError()
            return answers.pop(0)

        stdout, stderr = io.StringIO(), io.StringIO()
        testCase.patch(passwd, "getpass", getpass)
        testCase.patch(sys, "stdin", io.StringIO(stdin) if typed is None else _Terminal())
        testCase.patch(sys, "stdout", stdout)
        testCase.patch(sys, "stderr", stderr)
        self.status = passwd.main(arguments)
        self.stdout = stdout.getvalue()
        self.stderr = stderr.getvalue()


class RoundTripTests(TestCase):
    """
    What C{popd-passwd} prints is a passwd-file line that L{PasswdFileChecker} accepts.
    """

    @inlineCallbacks
    def test_everyScheme(self) -> Generator[Deferred[Any], Any, None]:
        """
        For every scheme (and an encoding suffix), the printed line lets its user in with the
        password, and not with another.
        """
        for scheme in [*SCHEMES, "SSHA256.hex", "PLAIN.b64"]:
            arguments = ["-s", scheme, "-p", "s3cret", "alice@example.org"]
            if scheme in LOW_ROUNDS:
                arguments += ["-r", str(LOW_ROUNDS[scheme])]
            run = Run(self, arguments)
            self.assertEqual(run.status, 0, run.stderr)
            self.assertTrue(run.stdout.startswith(f"alice@example.org:{{{scheme.upper()}}}"))
            path = FilePath(self.mktemp())
            path.setContent(run.stdout.encode("utf-8"))
            checker = PasswdFileChecker(path)
            user = yield checker.requestAvatarId(UsernamePassword(b"alice@example.org", b"s3cret"))
            self.assertEqual(user, b"alice@example.org", scheme)
            wrong = checker.requestAvatarId(UsernamePassword(b"alice@example.org", b"s3cres"))
            yield self.assertFailure(wrong, UnauthorizedLogin)


class PasswordInputTests(SynchronousTestCase):
    """
    The password comes from C{-p}, from two prompts on a terminal, or from one line of
    standard input.
    """

    def test_option(self) -> None:
        """
        C{-p} gives the password; nothing is asked.
        """
        run = Run(self, ["-s", "PLAIN", "-p", "secret", "alice"])
        self.assertEqual((run.status, run.stdout, run.stderr), (0, "alice:{PLAIN}secret\n", ""))
        self.assertEqual(run.prompts, [])

    def test_withoutUser(self) -> None:
        """
        Without a user, only the password field is printed, as C{doveadm pw} does; the
        default scheme is C{SHA512-CRYPT}.
        """
        run = Run(self, ["-p", "secret"])
        self.assertEqual(run.status, 0)
        self.assertTrue(run.stdout.startswith("{SHA512-CRYPT}$6$"), run.stdout)

    def test_stdin(self) -> None:
        """
        When standard input is not a terminal, its first line is the password, spaces kept.
        """
        run = Run(self, ["-s", "PLAIN", "bob"], stdin=" two words \nignored\n")
        self.assertEqual((run.status, run.stdout), (0, "bob:{PLAIN} two words \n"))
        self.assertEqual(run.prompts, [])

    def test_terminal(self) -> None:
        """
        On a terminal the password is asked twice.
        """
        run = Run(self, ["-s", "PLAIN", "bob"], typed=["secret", "secret"])
        self.assertEqual((run.status, run.stdout), (0, "bob:{PLAIN}secret\n"))
        self.assertEqual(len(run.prompts), 2)

    def test_mismatch(self) -> None:
        """
        Two different entries print nothing and end with status 1.
        """
        run = Run(self, ["bob"], typed=["secret", "secreT"])
        self.assertEqual((run.status, run.stdout), (1, ""))
        self.assertEqual(run.stderr, "popd-passwd: the passwords do not match\n")

    def test_noPassword(self) -> None:
        """
        An empty password, the end of input at a prompt, and an empty standard input end
        with status 1.
        """
        for run in [
            Run(self, ["bob"], typed=["", ""]),
            Run(self, ["bob"], typed=[]),
            Run(self, ["bob"], stdin=""),
            Run(self, ["bob"], stdin="\n"),
        ]:
            self.assertEqual((run.status, run.stdout), (1, ""))
            self.assertTrue(run.stderr.startswith("popd-passwd: "), run.stderr)


class UsageTests(SynchronousTestCase):
    """
    Usage errors end with status 2 and a one-line reason after the usage, before any password
    is asked for.
    """

    def assertUsageError(self, arguments: list[str], reason: str) -> None:
        run = Run(self, arguments, typed=["secret", "secret"])
        self.assertEqual((run.status, run.stdout, run.prompts), (2, "", []))
        self.assertTrue(run.stderr.startswith("usage: popd-passwd"), run.stderr)
        error = run.stderr.splitlines()[-1]
        self.assertTrue(error.startswith("popd-passwd: error: "), error)
        self.assertIn(reason, error)
        self.assertNotIn("Traceback", run.stderr)

    def test_list(self) -> None:
        """
        C{-l} lists the schemes, one a line.
        """
        run = Run(self, ["-l"])
        self.assertEqual((run.status, run.stdout.split()), (0, list(SCHEMES)))

    def test_help(self) -> None:
        """
        C{-h} explains the command, its exit statuses included, and ends with status 0.
        """
        run = Run(self, ["-h"])
        self.assertEqual(run.status, 0)
        self.assertIn("exit status", run.stdout)

    def test_badScheme(self) -> None:
        """
        An unknown scheme is refused.
        """
        self.assertUsageError(["-s", "ROT13", "bob"], "unknown scheme 'ROT13'")

    def test_badEncoding(self) -> None:
        """
        An unknown encoding suffix is refused.
        """
        self.assertUsageError(["-s", "SSHA.rot13", "-p", "x"], "unknown password scheme")

    def test_badRounds(self) -> None:
        """
        A cost that is not a number, outside the scheme's range, or for a scheme without one
        is refused.
        """
        self.assertUsageError(["-r", "many", "bob"], "argument -r/--rounds")
        self.assertUsageError(
            ["-s", "SHA512-CRYPT", "-r", "10", "-p", "x"], "rounds must be between"
        )
        self.assertUsageError(["-s", "PLAIN", "-r", "10", "-p", "x"], "takes no rounds")

    def test_badUserName(self) -> None:
        """
        User names that a passwd-file line cannot hold are refused.
        """
        for user in ["a:b", "a\nb", "a\rb", "", "#a"]:
            self.assertUsageError(["-p", "x", user], "")

    def test_unstorablePassword(self) -> None:
        """
        A password its scheme cannot store, or an empty one given with C{-p}, is refused.
        """
        self.assertUsageError(["-s", "PLAIN", "-p", "a:b"], "PLAIN cannot store ':'")
        self.assertUsageError(["-p", ""], "empty passwords are not allowed")

    def test_unknownOption(self) -> None:
        """
        An unknown option is refused.
        """
        self.assertUsageError(["--salt", "x"], "unrecognized arguments")


class CommandTests(SynchronousTestCase):
    """
    C{popd-passwd} as a program.
    """

    def runCommand(self, arguments: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "popd.passwd", *arguments],
            input=stdin,
            env=dict(os.environ, PYTHONPATH=ROOT),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_module(self) -> None:
        """
        C{python -m popd.passwd} reads the password from a pipe, and reports a usage error
        with status 2.
        """
        result = self.runCommand(["-s", "SSHA512", "alice"], "secret\n")
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertRegex(result.stdout, r"^alice:\{SSHA512\}[A-Za-z0-9+/=]+\n$")
        result = self.runCommand(["-s", "NOPE", "alice"], "secret\n")
        self.assertEqual((result.returncode, result.stdout), (2, ""))
        self.assertNotIn("Traceback", result.stderr)

    def test_entryPoint(self) -> None:
        """
        An installed popd provides the C{popd-passwd} console script.
        """
        scripts = entry_points(group="console_scripts", name="popd-passwd")
        if not scripts:
            raise self.skipTest("popd is not installed with its console scripts")
        self.assertEqual([script.value for script in scripts], ["popd.passwd:main"])
