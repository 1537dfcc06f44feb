"""
Tests for L{popd.tls}: certificates loaded from PEM files, reloaded on C{SIGHUP} without
dropping sessions, and implicit TLS (RFC 8314, rule R35) over real sockets.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
from collections.abc import Generator
from typing import Any, cast

from cryptography import x509
from OpenSSL import SSL
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.ssl import TLSVersion
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from popd.demo import selfSignedCertificate
from popd.memory import MemoryMailbox, MemoryRealm
from popd.protocol import POP3ServerFactory
from popd.tap import ReloadOnHangup
from popd.tls import ReloadableTLSContext


def serialOf(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


class ReloadableTLSContextTests(SynchronousTestCase):
    """
    L{ReloadableTLSContext} serves the certificate last loaded successfully.
    """

    def setUp(self) -> None:
        self.path = FilePath(self.mktemp())
        self.path.setContent(selfSignedCertificate())
        self.context = ReloadableTLSContext(self.path.path, self.path.path)

    def servedSerial(self) -> int:
        certificate = self.context.options.certificate
        return int(certificate.get_serial_number())

    def test_minimumVersion(self) -> None:
        """
        TLS 1.2 is the default minimum; 1.3 can be required.
        """
        flags = self.context.getContext().set_options(0)
        self.assertTrue(flags & SSL.OP_NO_TLSv1_1)
        self.assertFalse(flags & SSL.OP_NO_TLSv1_2)
        strict = ReloadableTLSContext(self.path.path, self.path.path, TLSVersion.TLSv1_3)
        self.assertTrue(strict.getContext().set_options(0) & SSL.OP_NO_TLSv1_2)

    def test_reload(self) -> None:
        """
        After the files change, L{ReloadableTLSContext.reload} serves the new certificate.
        """
        self.path.setContent(selfSignedCertificate())
        self.assertTrue(self.context.reload())
        self.assertEqual(self.servedSerial(), serialOf(self.path.getContent()))

    def test_badReloadKeepsCurrent(self) -> None:
        """
        A broken or missing file on reload keeps the current certificate, and logs why.
        """
        before = self.servedSerial()
        self.path.setContent(b"not a certificate")
        self.assertFalse(self.context.reload())
        self.path.remove()
        self.assertFalse(self.context.reload())
        self.assertEqual(self.servedSerial(), before)
        self.assertEqual(len(self.flushLoggedErrors(ValueError, OSError)), 2)

    def test_badFileAtStart(self) -> None:
        """
        At start, a bad file is an error, so the admin hears of it before anything listens.
        """
        self.path.setContent(b"junk")
        self.assertRaises(ValueError, ReloadableTLSContext, self.path.path, self.path.path)


class ImplicitTLSTests(TestCase):
    """
    R35: implicit TLS through L{TLSMemoryBIOFactory} with a L{ReloadableTLSContext}, over
    loopback, with Python's TLS client.
    """

    def setUp(self) -> None:
        self.path = FilePath(self.mktemp())
        self.path.setContent(selfSignedCertificate())
        self.context = ReloadableTLSContext(self.path.path, self.path.path)
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"secret")
        portal = Portal(MemoryRealm({b"bob": MemoryMailbox([b"Subject: x\n\nhi\n"])}), [checker])
        self.factory = POP3ServerFactory(portal, tlsContextFactory=self.context)
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, TLSMemoryBIOFactory(self.context, False, self.factory), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def connect(self) -> ssl.SSLSocket:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return context.wrap_socket(raw, server_hostname="localhost")

    def exchange(self, connection: ssl.SSLSocket, command: bytes) -> bytes:
        connection.sendall(command + b"\r\n")
        return connection.recv(4096)

    @inlineCallbacks
    def test_reloadKeepsSessions(self) -> Generator[Deferred[Any], Any, None]:
        """
        A session opened before a reload goes on with the old certificate; a new connection
        gets the new one.  On TLS, the capabilities offer USER and SASL PLAIN but not STLS.
        """
        first = yield deferToThread(self.connect)
        self.addCleanup(first.close)
        greeting = yield deferToThread(first.recv, 4096)
        self.assertTrue(greeting.startswith(b"+OK"))
        capabilities = yield deferToThread(self.exchange, first, b"CAPA")
        self.assertIn(b"\r\nUSER\r\n", capabilities)
        self.assertIn(b"PLAIN", capabilities)
        self.assertNotIn(b"STLS", capabilities)
        oldSerial = x509.load_der_x509_certificate(first.getpeercert(True)).serial_number
        self.path.setContent(selfSignedCertificate())
        self.assertTrue(self.context.reload())
        second = yield deferToThread(self.connect)
        self.addCleanup(second.close)
        newSerial = x509.load_der_x509_certificate(second.getpeercert(True)).serial_number
        self.assertEqual(newSerial, serialOf(self.path.getContent()))
        self.assertNotEqual(newSerial, oldSerial)
        answer = yield deferToThread(self.exchange, first, b"NOOP")
        self.assertEqual(answer, b"-ERR Command not valid in this state.\r\n")

    @inlineCallbacks
    def test_hangupReloads(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{SIGHUP} reloads the certificate through L{ReloadOnHangup}.
        """
        service = ReloadOnHangup(cast(IReactorFromThreads, reactor), [self.context.reload])
        service.startService()
        self.addCleanup(service.stopService)
        self.path.setContent(selfSignedCertificate())
        os.kill(os.getpid(), signal.SIGHUP)
        yield deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
        served = int(self.context.options.certificate.get_serial_number())
        self.assertEqual(served, serialOf(self.path.getContent()))
