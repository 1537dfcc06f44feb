"""
Tests for L{popd.metrics}: what the server counts, and the Prometheus text it serves.
"""

from __future__ import annotations

import json

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from popd.memory import MemoryMailbox, MemoryRealm
from popd.metrics import Metrics, MetricsResource
from popd.protocol import POP3ServerFactory
from tests.test_protocol import Session


class ProtocolMetricsTests(SynchronousTestCase):
    """
    Sessions update the factory's L{Metrics}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")
        realm = MemoryRealm({b"bob": MemoryMailbox([b"Subject: x\n\nhello\n"])})
        self.factory = POP3ServerFactory(
            Portal(realm, [checker]), reactor=self.clock, authFailureDelay=0
        )
        self.metrics = self.factory.metrics

    def test_session(self) -> None:
        """
        Connections, login outcomes, commands by keyword (unknown ones in one bucket), octets
        sent, and ended sessions by outcome and duration are counted.
        """
        session = Session(self.factory)
        session.login(password=b"wrong")
        self.clock.advance(0)
        session.login()
        session.command(b"RETR 1")
        session.command(b"X-SECRET-" + b"A" * 20)
        session.command(b"FOO")
        self.clock.advance(2)
        session.command(b"QUIT")
        session.drop()
        self.assertEqual((self.metrics.connections, self.metrics.openConnections), (1, 0))
        self.assertEqual(dict(self.metrics.logins), {"failure": 1, "success": 1})
        self.assertEqual(
            dict(self.metrics.commands),
            {"USER": 2, "PASS": 2, "RETR": 1, "QUIT": 1, "unknown": 2},
        )
        self.assertEqual(self.metrics.octetsSent, len(b"Subject: x\r\n\r\nhello\r\n"))
        self.assertEqual(dict(self.metrics.sessions), {"committed": 1})
        text = self.metrics.render().decode("ascii")
        self.assertIn('popd_session_duration_seconds_bucket{le="5.0"} 1\n', text)
        self.assertIn('popd_session_duration_seconds_bucket{le="1.0"} 0\n', text)


class RenderTests(SynchronousTestCase):
    """
    The Prometheus text exposition format.
    """

    def test_format(self) -> None:
        """
        Every metric has its HELP and TYPE lines, labelled samples are sorted, the histogram
        is cumulative and ends with C{+Inf}, C{_sum} and C{_count}.
        """
        metrics = Metrics()
        metrics.connected()
        metrics.logins["success"] += 2
        metrics.logins["failure"] += 1
        metrics.sessionEnded("quit", 0.05)
        metrics.sessionEnded("timeout", 4000.0)
        lines = metrics.render().decode("ascii").splitlines()
        self.assertIn("# TYPE popd_logins_total counter", lines)
        self.assertEqual(
            [line for line in lines if line.startswith("popd_logins_total")],
            ['popd_logins_total{outcome="failure"} 1', 'popd_logins_total{outcome="success"} 2'],
        )
        self.assertIn('popd_session_duration_seconds_bucket{le="0.1"} 1', lines)
        self.assertIn('popd_session_duration_seconds_bucket{le="3600.0"} 1', lines)
        self.assertIn('popd_session_duration_seconds_bucket{le="+Inf"} 2', lines)
        self.assertIn("popd_session_duration_seconds_count 2", lines)
        self.assertIn("popd_connections_open -1", lines)

    def test_resource(self) -> None:
        """
        L{MetricsResource} serves the text with Prometheus's content type.
        """
        metrics = Metrics()
        metrics.connected()
        request = DummyRequest([b"metrics"])
        body = MetricsResource(metrics).render_GET(request)  # type: ignore[arg-type]
        self.assertIn(b"popd_connections_total 1\n", body)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"text/plain; version=0.0.4; charset=utf-8"],
        )


class SumTests(SynchronousTestCase):
    """
    The counters of several processes: carried as snapshots, summed, and served as one.
    """

    def counted(self) -> Metrics:
        metrics = Metrics()
        metrics.connected()
        metrics.connected()
        metrics.logins["success"] += 1
        metrics.commands["RETR"] += 3
        metrics.octetsSent += 100
        metrics.sessionEnded("too many connections", 0.05)
        return metrics

    def test_snapshot(self) -> None:
        """
        A snapshot carried through JSON gives back the same counters.
        """
        metrics = self.counted()
        again = Metrics.fromSnapshot(json.loads(json.dumps(metrics.snapshot())))
        self.assertEqual(again.snapshot(), metrics.snapshot())
        self.assertEqual(again.render(), metrics.render())

    def test_notSnapshot(self) -> None:
        """
        Anything else is refused, rather than served: a missing or unknown field, a count that
        is not a whole number, a label that could not be quoted as it is, a wrong histogram.
        """
        good = self.counted().snapshot()
        bad: list[object] = [
            [],
            {**good, "connections": "1"},
            {**good, "connections": True},
            {**good, "extra": 1},
            {key: value for key, value in good.items() if key != "sessions"},
            {**good, "logins": {'a"b': 1}},
            {**good, "logins": {"a\nb": 1}},
            {**good, "commands": [1]},
            {**good, "durationCounts": [0]},
            {**good, "durationSum": "0"},
        ]
        for snapshot in bad:
            self.assertRaises(ValueError, Metrics.fromSnapshot, snapshot)

    def test_add(self) -> None:
        """
        Adding sums every counter, label by label, and the histogram bucket by bucket.
        """
        total = self.counted()
        other = self.counted()
        other.logins["failure"] += 2
        other.sessionEnded("quit", 4000.0)
        total.add(other)
        self.assertEqual((total.connections, total.openConnections), (4, 1))
        self.assertEqual(dict(total.logins), {"success": 2, "failure": 2})
        self.assertEqual(total.octetsSent, 200)
        lines = total.render().decode("ascii").splitlines()
        self.assertIn('popd_sessions_total{outcome="too many connections"} 2', lines)
        self.assertIn('popd_session_duration_seconds_bucket{le="0.1"} 2', lines)
        self.assertIn('popd_session_duration_seconds_bucket{le="+Inf"} 3', lines)

    def test_resourceSums(self) -> None:
        """
        L{MetricsResource} serves its process's counters plus the others' as they are now.
        """
        others: list[Metrics] = []
        resource = MetricsResource(self.counted(), lambda: others)
        body = resource.render_GET(DummyRequest([b""]))  # type: ignore[arg-type]
        self.assertIn(b"popd_connections_total 2\n", body)
        others += [self.counted(), self.counted()]
        body = resource.render_GET(DummyRequest([b""]))  # type: ignore[arg-type]
        self.assertIn(b"popd_connections_total 6\n", body)
