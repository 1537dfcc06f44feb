"""
Counters of what the server does, and a web resource that serves them in the Prometheus text
exposition format (version 0.0.4), for C{twistd popd --metrics ENDPOINT}.

A handful of counters and one histogram do not need a client library: they are plain numbers,
rendered on request.  Label values come from fixed sets (command keywords popd knows, login
outcomes), so what a client sends can never create new series.  With C{--workers}, each worker
reports its counters to the main process (see L{Metrics.snapshot}), which serves their sum.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

#: Upper bounds of the session duration histogram, in seconds.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0)


class Metrics:
    """
    The counters of one server (one L{popd.protocol.POP3ServerFactory}).
    """

    def __init__(self) -> None:
        self.connections = 0
        self.openConnections = 0
        self.logins: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.sessions: Counter[str] = Counter()
        self.octetsSent = 0
        self._durationCounts = [0] * (len(DURATION_BUCKETS) + 1)
        self._durationSum = 0.0

    def connected(self) -> None:
        self.connections += 1
        self.openConnections += 1

    def sessionEnded(self, outcome: str, duration: float) -> None:
        """
        Count an ended connection, its outcome (such as C{committed}, C{timeout}) and how
        long it lasted.
        """
        self.openConnections -= 1
        self.sessions[outcome] += 1
        self._durationCounts[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self._durationSum += duration

    def snapshot(self) -> dict[str, Any]:
        """
        @return: the counters, as JSON can carry them to another process (see L{fromSnapshot}).
        """
        return {
            "connections": self.connections,
            "openConnections": self.openConnections,
            "logins": dict(self.logins),
            "commands": dict(self.commands),
            "sessions": dict(self.sessions),
            "octetsSent": self.octetsSent,
            "durationCounts": list(self._durationCounts),
            "durationSum": self._durationSum,
        }

    @classmethod
    def fromSnapshot(cls, snapshot: object) -> Metrics:
        """
        @param snapshot: what L{snapshot} gave, through JSON.
        @raise ValueError: it is not such a snapshot.
        """
        metrics = cls()
        if not isinstance(snapshot, dict) or snapshot.keys() != metrics.snapshot().keys():
            raise ValueError(f"not a metrics snapshot: {snapshot!r}")
        metrics.connections = _count(snapshot["connections"])
        metrics.openConnections = _count(snapshot["openConnections"])
        metrics.octetsSent = _count(snapshot["octetsSent"])
        for name in ("logins", "commands", "sessions"):
            counts = snapshot[name]
            if not isinstance(counts, dict):
                raise ValueError(f"not counts by label: {counts!r}")
            getattr(metrics, name).update(
                {_label(value): _count(count) for value, count in counts.items()}
            )
        durations = snapshot["durationCounts"]
        if not isinstance(durations, list) or len(durations) != len(metrics._durationCounts):
            raise ValueError(f"not the histogram's buckets: {durations!r}")
        metrics._durationCounts = [_count(count) for count in durations]
        durationSum = snapshot["durationSum"]
        if not isinstance(durationSum, (int, float)) or isinstance(durationSum, bool):
            raise ValueError(f"not a sum of durations: {durationSum!r}")
        metrics._durationSum = float(durationSum)
        return metrics

    def add(self, other: Metrics) -> None:
        """
        Add the counters of C{other} (another process's) to these.
        """
        self.connections += other.connections
        self.openConnections += other.openConnections
        self.logins.update(other.logins)
        self.commands.update(other.commands)
        self.sessions.update(other.sessions)
        self.octetsSent += other.octetsSent
        self._durationCounts = [
            mine + theirs
            for mine, theirs in zip(self._durationCounts, other._durationCounts, strict=True)
        ]
        self._durationSum += other._durationSum

    def render(self) -> bytes:
        """
        The counters in the Prometheus text format.
        """
        lines = [
            *_metric(
                "popd_connections_total", "counter", "Connections accepted.",
                [("", self.connections)],
            ),
            *_metric(
                "popd_connections_open", "gauge", "Connections open now.",
                [("", self.openConnections)],
            ),
            *_metric(
                "popd_logins_total", "counter", "Login attempts by outcome.",
                _labelled("outcome", self.logins),
            ),
            *_metric(
                "popd_commands_total", "counter", "Commands received, by keyword.",
                _labelled("command", self.commands),
            ),
            *_metric(
                "popd_sessions_total", "counter", "Ended sessions by outcome.",
                _labelled("outcome", self.sessions),
            ),
            *_metric(
                "popd_sent_octets_total", "counter", "Message octets sent by RETR and TOP.",
                [("", self.octetsSent)],
            ),
        ]  # fmt: skip
        lines += [
            "# HELP popd_session_duration_seconds How long sessions lasted.",
            "# TYPE popd_session_duration_seconds histogram",
        ]
        cumulative = 0
        bounds = [*(repr(bound) for bound in DURATION_BUCKETS), "+Inf"]
        for bound, count in zip(bounds, self._durationCounts, strict=True):
            cumulative += count
            lines.append(f'popd_session_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f"popd_session_duration_seconds_sum {self._durationSum!r}")
        lines.append(f"popd_session_duration_seconds_count {cumulative}")
        return ("\n".join(lines) + "\n").encode("ascii")


def _count(value: object) -> int:
    """
    @return: C{value}, a count from a snapshot.
    @raise ValueError: it is not a whole number.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"not a count: {value!r}")
    return value


def _label(value: object) -> str:
    """
    @return: C{value}, a label value from a snapshot.
    @raise ValueError: it is not text that can be quoted as a label value as it is (printable
        ASCII without quotes or backslashes), as popd's own label values are.
    """
    if (
        not isinstance(value, str)
        or not (value.isascii() and value.isprintable())
        or '"' in value
        or "\\" in value
    ):
        raise ValueError(f"not a label value: {value!r}")
    return value


def _labelled(label: str, counts: Counter[str]) -> list[tuple[str, int]]:
    return [(f'{{{label}="{value}"}}', count) for value, count in sorted(counts.items())]


def _metric(name: str, kind: str, help: str, samples: list[tuple[str, int]]) -> list[str]:
    return [
        f"# HELP {name} {help}",
        f"# TYPE {name} {kind}",
        *(f"{name}{labels} {value}" for labels, value in samples),
    ]


class MetricsResource(Resource):
    """
    Serves L{Metrics} at C{/metrics} (and at any path: the endpoint is the server's alone).
    """

    isLeaf = True

    def __init__(
        self, metrics: Metrics, others: Callable[[], Iterable[Metrics]] | None = None
    ) -> None:
        """
        @param metrics: this process's counters.
        @param others: gives the counters of the other processes that serve the same sockets
            (the workers), added to these.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self._metrics = metrics
        self._others = others

    def render_GET(self, request: Request) -> bytes:
        contentType = b"text/plain; version=0.0.4; charset=utf-8"
        request.setHeader(b"content-type", contentType)  # type: ignore[no-untyped-call]
        if self._others is None:
            return self._metrics.render()
        total = Metrics()
        for metrics in [self._metrics, *self._others()]:
            total.add(metrics)
        return total.render()
