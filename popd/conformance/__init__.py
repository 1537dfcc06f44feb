"""
A server-agnostic POP3 conformance suite: black-box checks of the rules R1-R38 of popd's
STANDARDS.md (RFC 1939, 2449, 2595, 3206, 5034, 6856, 8314) against any server.

Run it with C{python -m popd.conformance --host H --port P --user U --password W}, or from
Python with L{run}.  Each check is named after the rule it verifies (C{R5.extraArgument}) and
reports PASS, FAIL or SKIP with one line of detail; checks of what a server does not advertise
are skipped.  The main user's maildrop is only read; checks that delete, lock or UPDATE use a
scratch user.  Every read has a timeout, so a server that hangs fails instead of hanging the
suite.

The suite is a plain blocking client on the standard library's C{socket} and C{ssl}: it shares
no code with popd's server.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

# Imported for their checks, which register themselves, in this order: the order they run in.
from popd.conformance import (
    authorization,  # noqa: F401
    extensions,  # noqa: F401
    grammar,  # noqa: F401
    transaction,  # noqa: F401
    update,  # noqa: F401
)
from popd.conformance._client import ServerError
from popd.conformance._context import (
    CHECKS,
    Check,
    Config,
    Context,
    Fail,
    Outcome,
    Security,
    Skip,
    Verdict,
)

__all__ = ["Config", "Outcome", "Report", "Result", "Security", "run"]


@dataclass(frozen=True)
class Result:
    """
    The verdict of one check.

    @ivar identifier: the check's id, C{R<rule>.<name>}.
    """

    identifier: str
    outcome: Outcome
    detail: str

    def __str__(self) -> str:
        return f"{self.outcome.value}  {self.identifier}  {self.detail}"


@dataclass(frozen=True)
class Report:
    """
    The results of a run, ordered by rule.
    """

    results: tuple[Result, ...]

    def count(self, outcome: Outcome) -> int:
        """
        @return: how many checks had C{outcome}.
        """
        return Counter(result.outcome for result in self.results)[outcome]

    @property
    def ok(self) -> bool:
        """
        Whether no check failed.
        """
        return self.count(Outcome.FAIL) == 0

    def failures(self) -> set[str]:
        """
        @return: the ids of the checks that failed.
        """
        return {r.identifier for r in self.results if r.outcome is Outcome.FAIL}

    def summary(self) -> str:
        """
        @return: the last line of the report, C{N passed, N failed, N skipped}.
        """
        return (
            f"{self.count(Outcome.PASS)} passed, {self.count(Outcome.FAIL)} failed, "
            f"{self.count(Outcome.SKIP)} skipped"
        )

    def lines(self) -> list[str]:
        """
        The report as printed: one line per check, then the summary.
        """
        return [str(result) for result in self.results] + [self.summary()]


def _judge(check: Check, context: Context) -> Verdict:
    """
    Run one check, turning what it raises into a verdict: a server that broke the conversation
    fails the check; an error of the suite itself fails it too, saying so, rather than pass.
    """
    context.startCheck(context.config.checkTimeout)
    try:
        return check.function(context)
    except Skip as e:
        return Verdict(Outcome.SKIP, str(e))
    except (Fail, ServerError) as e:
        return Verdict(Outcome.FAIL, str(e))
    except OSError as e:
        return Verdict(Outcome.FAIL, f"network error: {e}")
    except Exception as e:  # noqa: BLE001 - a bug of the suite must not stop the run
        return Verdict(Outcome.FAIL, f"error in the suite: {type(e).__name__}: {e}")


def _selects(prefix: str, check: Check) -> bool:
    """
    Whether C{--check prefix} selects C{check}: C{R1} selects the checks of rule 1, not those
    of rule 10; C{R22.stable} selects that check.
    """
    return check.identifier == prefix or check.identifier.startswith(prefix.rstrip(".") + ".")


def run(config: Config) -> Report:
    """
    Run the checks against the server C{config} describes.

    Checks that judge the whole run's traffic (R2, R3, R7...) run after the others; results
    are reported in rule order.

    @return: the results.
    """
    context = Context(config)
    selected = [
        (index, check)
        for index, check in enumerate(CHECKS)
        if not config.select or any(_selects(prefix, check) for prefix in config.select)
    ]
    results: list[tuple[tuple[int, int], Result]] = []
    for index, check in sorted(selected, key=lambda item: item[1].afterAll):
        started = time.monotonic()
        verdict = _judge(check, context)
        detail = verdict.detail.replace("\r", " ").replace("\n", " ")
        if verdict.outcome is Outcome.FAIL and time.monotonic() - started > config.timeout:
            detail += f" ({time.monotonic() - started:.0f} s)"
        results.append(((check.rule, index), Result(check.identifier, verdict.outcome, detail)))
    return Report(tuple(result for _, result in sorted(results, key=lambda item: item[0])))
