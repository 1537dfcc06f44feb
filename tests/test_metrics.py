"""
Tests for L{popd.metrics}: what the server counts, and the Prometheus text it serves.
"""

from __future__ import annotations

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
