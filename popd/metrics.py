"""
Counters of what the server does, and a web resource that serves them in the Prometheus text
exposition format (version 0.0.4), for C{twistd popd --metrics ENDPOINT}.

A handful of counters and one histogram do not need a client library: they are plain numbers,
rendered on request.  Label values come from fixed sets (command keywords popd knows, login
outcomes), so what a client sends can never create new series.
"""

from __future__ import annotations

import bisect
from collections import Counter

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

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        contentType = b"text/plain; version=0.0.4; charset=utf-8"
        request.setHeader(b"content-type", contentType)  # type: ignore[no-untyped-call]
        return self._metrics.render()
