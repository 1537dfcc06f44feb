"""
Tests for L{popd.testing} and L{popd.pytest_plugin}: in-process servers for the tests of POP3
clients, driven here with Python's own C{poplib}, in trial, in a plain Python process, and in
pytest.
"""

from __future__ import annotations

import os
import poplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Generator
from importlib.metadata import entry_points
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from popd import testing
from popd.demo import selfSignedCertificate
from popd.testing import serve, serveInReactor
from popd.tls import ReloadableTLSContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HI = b"Subject: hi\r\n\r\nbody\r\n"
LATER = b"Subject: later\r\n\r\nmore\r\n"


def login(host: str, port: int, user: str = "bob", password: str = "secret") -> poplib.POP3:
    client = poplib.POP3(host, port, timeout=10)
    client.user(user)
    client.pass_(password)
    return client


def runPython(
    arguments: list[str], cwd: str, **environment: str
) -> subprocess.CompletedProcess[str]:
    """
    Run Python in a subprocess that imports popd from this tree.
    """
    env = dict(os.environ, PYTHONPATH=ROOT, **environment)
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class ServeTests(SynchronousTestCase):
    """
    L{serve} runs a server in a thread of its own, so that blocking clients work from the test's
    thread, here trial's main thread, where the global reactor is not running.
    """

    def test_retrieveDeleteQuit(self) -> None:
        """
        A client logs in, retrieves, deletes and quits; L{Server.mailbox} then shows the
        message gone.
        """
        with serve(users={"bob": "secret"}, mailboxes={"bob": [HI, LATER]}) as server:
            self.assertEqual((server.host, server.caFile), ("127.0.0.1", None))
            client = login(server.host, server.port)
            self.assertEqual(client.retr(1)[1], [b"Subject: hi", b"", b"body"])
            client.dele(1)
            client.quit()
            self.assertEqual(server.mailbox("bob"), [LATER])

    def test_deletionNeedsQuit(self) -> None:
        """
        A session that ends without C{QUIT} removes nothing.
        """
        with serve(users={"bob": "secret"}, mailboxes={"bob": [HI]}) as server:
            client = login(server.host, server.port)
            client.dele(1)
            client.close()
            self.assertEqual(server.mailbox("bob"), [HI])

    def test_deliver(self) -> None:
        """
        A message delivered with L{Server.deliver} is listed by the next session; users
        without a mailbox entry start with an empty mailbox.
        """
        with serve(users={"bob": "secret"}) as server:
            self.assertEqual(server.mailbox("bob"), [])
            server.deliver("bob", LATER)
            client = login(server.host, server.port)
            self.assertEqual(client.stat(), (1, len(LATER)))
            self.assertEqual(client.retr(1)[1], [b"Subject: later", b"", b"more"])
            client.quit()
            self.assertEqual(server.mailbox("bob"), [LATER])

    def test_utf8(self) -> None:
        """
        User names and passwords are given as C{str} and sent as UTF-8.
        """
        with serve(users={"jürgen": "pässwörd"}) as server:
            login(server.host, server.port, "jürgen", "pässwörd").quit()
            self.assertRaises(
                poplib.error_proto, login, server.host, server.port, "jürgen", "passwörd"
            )

    def test_stls(self) -> None:
        """
        With C{stls=True} the server offers C{STLS} with a certificate of its own, which
        clients verify with L{Server.sslContext}; with C{tlsContextFactory}, with the test's.
        Twisted's global reactor, which is not running here, is still its own clock in this
        thread.
        """
        from twisted.protocols import tls

        with serve(users={"bob": "secret"}, mailboxes={"bob": [HI]}, stls=True) as server:
            client = poplib.POP3(server.host, server.port, timeout=10)
            self.assertIn("STLS", client.capa())
            client.stls(server.sslContext())
            client.user("bob")
            client.pass_("secret")
            self.assertEqual(client.stat(), (1, len(HI)))
            client.quit()
        self.assertIs(tls._get_default_clock(), reactor)
        pem = FilePath(self.mktemp())
        pem.setContent(selfSignedCertificate())
        context = ReloadableTLSContext(pem.path, pem.path)
        with serve(users={"bob": "secret"}, tlsContextFactory=context) as server:
            self.assertIsNone(server.caFile)
            client = poplib.POP3(server.host, server.port, timeout=10)
            client.stls(ssl.create_default_context(cafile=pem.path))
            client.user("bob")
            client.pass_("secret")
            self.assertEqual(client.stat(), (0, 0))
            client.quit()

    def test_tls(self) -> None:
        """
        With C{tls=True} the server speaks implicit TLS with a certificate that clients verify
        through L{Server.caFile} or L{Server.sslContext}, and that no one else trusts; the
        file holds no private key, and is removed when the server stops.
        """
        with serve(users={"bob": "secret"}, mailboxes={"bob": [HI]}, tls=True) as server:
            assert server.caFile is not None
            self.assertNotIn(b"PRIVATE KEY", FilePath(server.caFile).getContent())
            for context in [
                server.sslContext(),
                ssl.create_default_context(cafile=server.caFile),
            ]:
                client = poplib.POP3_SSL(server.host, server.port, context=context, timeout=10)
                client.user("bob")
                client.pass_("secret")
                self.assertEqual(client.stat(), (1, len(HI)))
                client.quit()
            self.assertRaises(
                ssl.SSLCertVerificationError,
                poplib.POP3_SSL,
                server.host,
                server.port,
                context=ssl.create_default_context(),
                timeout=10,
            )
        self.assertFalse(os.path.exists(server.caFile))

    def test_sslContextWithoutTLS(self) -> None:
        """
        A server without TLS has no certificate to offer clients.
        """
        with serve() as server:
            self.assertRaises(ValueError, server.sslContext)

    def test_twoAtOnce(self) -> None:
        """
        Servers may run at the same time, each with its own port, users and mailboxes.
        """
        with (
            serve(users={"bob": "secret"}, mailboxes={"bob": [HI]}) as first,
            serve(users={"bob": "other"}, tls=True) as second,
        ):
            self.assertNotEqual(first.port, second.port)
            second.deliver("bob", LATER)
            client = login(first.host, first.port)
            client.dele(1)
            client.quit()
            self.assertEqual(first.mailbox("bob"), [])
            self.assertEqual(second.mailbox("bob"), [LATER])

    def test_sequential(self) -> None:
        """
        Servers may be started one after another; each stops listening when its block ends,
        and its mailboxes can still be read.
        """
        for _ in range(3):
            with serve(users={"bob": "secret"}, mailboxes={"bob": [HI]}) as server:
                client = login(server.host, server.port)
                client.dele(1)
                client.quit()
            self.assertRaises(
                ConnectionRefusedError, socket.create_connection, (server.host, server.port)
            )
            self.assertEqual(server.mailbox("bob"), [])

    def test_stopEndsSessions(self) -> None:
        """
        Stopping a server ends its open sessions without UPDATE; stopping again does nothing.
        """
        server = serve(users={"bob": "secret"}, mailboxes={"bob": [HI]})
        client = login(server.host, server.port)
        client.dele(1)
        server.stop()
        self.assertRaises((poplib.error_proto, OSError), client.noop)
        client.close()
        server.stop()
        self.assertEqual(server.mailbox("bob"), [HI])

    def test_factoryOptions(self) -> None:
        """
        Other keyword arguments go to L{popd.POP3ServerFactory}: with C{expireDays=0}, a
        message retrieved is removed when the session quits.
        """
        with serve(users={"bob": "secret"}, mailboxes={"bob": [HI]}, expireDays=0) as server:
            client = login(server.host, server.port)
            client.retr(1)
            client.quit()
            self.assertEqual(server.mailbox("bob"), [])
        self.assertRaises(TypeError, serve, noSuchOption=True)

    def test_noAuthFailureDelay(self) -> None:
        """
        A failed login is answered at once unless C{authFailureDelay} says otherwise (the
        factory's default is 2 seconds).
        """
        with serve(users={"bob": "secret"}) as server:
            started = time.monotonic()
            self.assertRaises(poplib.error_proto, login, server.host, server.port, "bob", "x")
            self.assertLess(time.monotonic() - started, 1.5)

    def test_badArguments(self) -> None:
        """
        Mailboxes of users that do not exist, and messages that are not C{bytes}, are refused;
        so are unknown users in L{Server.mailbox} and L{Server.deliver}, and more than one way
        of TLS.
        """
        self.assertRaises(ValueError, serve, users={"bob": "x"}, mailboxes={"alice": [HI]})
        self.assertRaises(TypeError, serve, users={"bob": "x"}, mailboxes={"bob": ["text"]})
        self.assertRaises(ValueError, serve, tls=True, stls=True)
        self.assertRaises(ValueError, serve, stls=True, tlsContextFactory=object())
        with serve(users={"bob": "secret"}) as server:
            self.assertRaises(KeyError, server.mailbox, "alice")
            self.assertRaises(KeyError, server.deliver, "alice", HI)
            self.assertRaises(TypeError, server.deliver, "bob", "text")
            self.assertEqual(server.mailbox("bob"), [])

    def test_fromServerThread(self) -> None:
        """
        L{serve} and a server's methods, called from the thread that runs the servers (where
        waiting for it would never end), raise L{RuntimeError}.
        """
        thread = testing._theReactorThread()
        with serve(users={"bob": "secret"}) as server:
            for call in [serve, lambda: server.mailbox("bob")]:
                error = self.assertRaises(
                    RuntimeError, blockingCallFromThread, thread.reactor, call
                )
                self.assertIn("serveInReactor", str(error))


class ServeInRunningReactorTests(TestCase):
    """
    L{serve} also works while trial runs the global reactor.
    """

    @inlineCallbacks
    def test_serve(self) -> Generator[Deferred[Any], Any, None]:
        """
        From a callback of the running global reactor, L{serve} starts a server and blocking
        clients use it.
        """
        yield deferLater(reactor, 0, lambda: None)
        self.assertTrue(reactor.running)
        with serve(users={"bob": "secret"}, mailboxes={"bob": [HI]}) as server:
            client = login(server.host, server.port)
            client.dele(1)
            client.quit()
            self.assertEqual(server.mailbox("bob"), [])


class ServeInReactorTests(TestCase):
    """
    L{serveInReactor} serves in trial's reactor; clients run in threads here, as Twisted
    clients would run in the reactor.  Trial checks that stopping leaves the reactor clean.
    """

    @inlineCallbacks
    def test_session(self) -> Generator[Deferred[Any], Any, None]:
        """
        The server's methods are plain calls; a deletion shows once the session quits, a
        delivery in the next session.
        """
        server = serveInReactor(users={"bob": "secret"}, mailboxes={"bob": [HI]})
        self.addCleanup(server.stop)

        def deleteFirst() -> None:
            client = login(server.host, server.port)
            client.dele(1)
            client.quit()

        yield deferToThread(deleteFirst)
        self.assertEqual(server.mailbox("bob"), [])
        server.deliver("bob", LATER)

        def stat() -> tuple[int, int]:
            client = login(server.host, server.port)
            try:
                return client.stat()
            finally:
                client.quit()

        self.assertEqual((yield deferToThread(stat)), (1, len(LATER)))

    @inlineCallbacks
    def test_stopEndsSessions(self) -> Generator[Deferred[Any], Any, None]:
        """
        L{ReactorServer.stop} ends open sessions without UPDATE, and fires when they have
        ended; calling it again does nothing.
        """
        server = serveInReactor(users={"bob": "secret"}, mailboxes={"bob": [HI]})

        def deleteFirst() -> poplib.POP3:
            client = login(server.host, server.port)
            client.dele(1)
            return client

        client = yield deferToThread(deleteFirst)
        yield server.stop()
        yield server.stop()
        yield self.assertFailure(deferToThread(client.noop), poplib.error_proto, OSError)
        client.close()
        self.assertEqual(server.mailbox("bob"), [HI])

    @inlineCallbacks
    def test_tls(self) -> Generator[Deferred[Any], Any, None]:
        """
        With C{tls=True}, clients verify the server with L{ReactorServer.sslContext}.
        """
        server = serveInReactor(users={"bob": "secret"}, tls=True)
        self.addCleanup(server.stop)

        def stat() -> tuple[int, int]:
            context = server.sslContext()
            client = poplib.POP3_SSL(server.host, server.port, context=context, timeout=10)
            client.user("bob")
            client.pass_("secret")
            return client.stat()

        self.assertEqual((yield deferToThread(stat)), (0, 0))

    @inlineCallbacks
    def test_stls(self) -> Generator[Deferred[Any], Any, None]:
        """
        In the global reactor, C{tlsContextFactory} offers C{STLS}.
        """
        pem = FilePath(self.mktemp())
        pem.setContent(selfSignedCertificate())
        context = ReloadableTLSContext(pem.path, pem.path)
        server = serveInReactor(users={"bob": "secret"}, tlsContextFactory=context)
        self.addCleanup(server.stop)

        def stat() -> tuple[int, int]:
            client = poplib.POP3(server.host, server.port, timeout=10)
            client.stls(ssl.create_default_context(cafile=pem.path))
            client.user("bob")
            client.pass_("secret")
            return client.stat()

        self.assertEqual((yield deferToThread(stat)), (0, 0))


PLAIN_PROCESS_TEST = """
import poplib
import sys
import unittest

from popd.testing import serve


class PlainTests(unittest.TestCase):
    def test_serve(self):
        message = b"Subject: hi\\r\\n\\r\\nhi\\r\\n"
        with serve(users={"bob": "secret"}, mailboxes={"bob": [message]}) as server:
            client = poplib.POP3(server.host, server.port, timeout=10)
            client.user("bob")
            client.pass_("secret")
            self.assertEqual(client.retr(1)[1], [b"Subject: hi", b"", b"hi"])
            client.dele(1)
            client.quit()
            self.assertEqual(server.mailbox("bob"), [])
        with serve(users={"bob": "secret"}, tls=True) as server:
            client = poplib.POP3_SSL(server.host, server.port, context=server.sslContext())
            client.user("bob")
            client.pass_("secret")
            self.assertEqual(client.stat(), (0, 0))
            client.quit()
        # The application keeps the global reactor: serve() never ran it.
        from twisted.internet import reactor

        reactor.callWhenRunning(reactor.stop)
        reactor.run()


unittest.main()
"""

PYTEST_TEST = """
import poplib
import socket

import pytest


def test_default(pop3_server):
    client = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
    client.user("user")
    client.pass_("password")
    assert client.stat() == (0, 0)
    client.quit()


@pytest.mark.parametrize(
    "pop3_server",
    [
        {"mailboxes": {"user": [b"Subject: hi\\r\\n\\r\\nhi\\r\\n"]}},
        {"users": {"bob": "secret"}, "mailboxes": {"bob": [b"x\\r\\n"]}, "tls": True},
    ],
    indirect=True,
)
def test_parametrized(pop3_server):
    user, password = ("bob", "secret") if pop3_server.caFile else ("user", "password")
    if pop3_server.caFile:
        context = pop3_server.sslContext()
        client = poplib.POP3_SSL(pop3_server.host, pop3_server.port, context=context)
    else:
        client = poplib.POP3(pop3_server.host, pop3_server.port)
    client.user(user)
    client.pass_(password)
    client.dele(1)
    client.quit()
    assert pop3_server.mailbox(user) == []


PORTS = []


def test_factory(pop3_server_factory):
    first = pop3_server_factory()
    second = pop3_server_factory({"bob": "secret"}, maxAuthFailures=1)
    assert first.port != second.port
    assert first.mailbox("user") == second.mailbox("bob") == []
    PORTS.extend([first.port, second.port])


def test_stoppedAfterTest():
    assert PORTS
    for port in PORTS:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port))
"""


class ProcessTests(SynchronousTestCase):
    """
    L{serve} in processes that are not trial: a plain C{unittest} run and pytest.
    """

    def test_plainProcess(self) -> None:
        """
        In a process where no reactor runs, L{serve} works from a plain C{unittest} test, and
        leaves the global reactor free for the application.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("plain_test.py").setContent(PLAIN_PROCESS_TEST.encode("utf-8"))
        result = runPython(["plain_test.py"], directory.path)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("Ran 1 test", result.stderr)

    def test_pluginImportsLittle(self) -> None:
        """
        pytest loads the plugin in every session: importing it does not import the server.
        """
        code = "import sys, popd.pytest_plugin; assert 'popd.testing' not in sys.modules"
        result = runPython(["-c", code], ROOT)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_entryPoint(self) -> None:
        """
        An installed popd registers the plugin with pytest.
        """
        plugins = entry_points(group="pytest11", name="popd")
        if not plugins:
            raise self.skipTest("popd is not installed with its entry points")
        self.assertEqual([plugin.value for plugin in plugins], ["popd.pytest_plugin"])

    def test_pytestPlugin(self) -> None:
        """
        With the plugin, pytest tests get C{pop3_server} (user C{user}, password C{password},
        empty mailbox; parametrized indirectly with L{serve}'s arguments) and
        C{pop3_server_factory}; the servers stop after each test.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("test_client.py").setContent(PYTEST_TEST.encode("utf-8"))
        result = runPython(
            ["-m", "pytest", "-p", "popd.pytest_plugin", "-p", "no:cacheprovider", "-q"],
            directory.path,
            # Only this plugin, whatever else is installed, popd's own entry point included.
            PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("5 passed", result.stdout)
