"""
The package's type annotations and its lint and format rules are checked as part of the suite,
so that a change that breaks them fails CI like any other defect.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MypyTests(SynchronousTestCase):
    def test_strict(self) -> None:
        """
        C{mypy --strict} (configured in pyproject.toml, with the mypy-zope plugin) finds no
        error in popd or its twistd plugin.
        """
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--no-error-summary"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)


#: What ruff checks: all the Python of the project.
_SOURCES = ("popd", "tests", "twisted", "benchmarks")


class RuffTests(SynchronousTestCase):
    def ruff(self, *arguments: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *arguments, "--no-cache", *_SOURCES],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_lint(self) -> None:
        """
        C{ruff check} (rules in pyproject.toml) finds nothing.
        """
        self.ruff("check")

    def test_format(self) -> None:
        """
        The code is formatted as C{ruff format} formats it.
        """
        self.ruff("format", "--check")
