"""
Tests for L{popd.tap} and the C{twistd popd} plugin: option parsing, the service they build, and
C{twistd} itself run as a subprocess, up to retrieving the demo's message with C{poplib}.
"""

from __future__ import annotations

import ast
import os
import poplib
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from io import StringIO
from urllib.request import urlopen

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.plugin import getPlugins
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site

import popd
from popd.cred import PasswdFileChecker
from popd.demo import prepareDemo
from popd.maildir import MaildirRealm
from popd.metrics import MetricsResource
from popd.protocol import POP3ServerFactory
from popd.tap import Options, ReloadOnHangup, makeService
from popd.tls import ReloadableTLSContext

# The directory holding the popd package (and, in a checkout, twisted/plugins/popd_plugin.py).
_SOURCE = FilePath(popd.__file__).parent().parent()

# How long a twistd subprocess may take to start or to exit.
_PROCESS_TIMEOUT = 60.0


def _factoryOf(service: object) -> POP3ServerFactory:
    """
    The POP3 factory behind the first listener of a service made by L{makeService}.
    """
    for child in service:  # type: ignore[attr-defined]
        if isinstance(child, StreamServerEndpointService):
            factory = child.factory
            assert isinstance(factory, POP3ServerFactory)
            return factory
    raise AssertionError("no listener")


def _parse(*arguments: str) -> Options:
    """
    Parse C{twistd popd} options.
    """
    options = Options()
    options.parseOptions(list(arguments))
    return options


def _twistd(*arguments: str) -> list[str]:
    """
    The command line that runs C{twistd} with this Python and these arguments.
    """
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *arguments]


def _environment() -> dict[str, str]:
    """
    The environment for a C{twistd} subprocess: this one, with popd and its plugin importable
    whether they are installed or run from a checkout.
    """
    environment = dict(os.environ)
    paths = [_SOURCE.path, *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


def _freePorts(count: int) -> list[int]:
    """
    Find TCP ports on 127.0.0.1 that nothing listens on, for a subprocess to listen on.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


class _Files:
    """
    The files a test's options name: a passwd-file, a Maildir root, a key and certificates.
    """

    def __init__(self, directory: FilePath[str]) -> None:
        directory.makedirs()
        self.passwd = directory.child("passwd")
        self.passwd.setContent(b"bob:{PLAIN}secret\n")
        self.maildir = directory.child("mail").path + "/%u/Maildir"
        pem = prepareDemo(directory.child("demo")).tls.getContent()
        blocks = pem.split(b"-----END PRIVATE KEY-----\n")
        self.key = directory.child("key.pem")
        self.key.setContent(blocks[0] + b"-----END PRIVATE KEY-----\n")
        self.certificate = directory.child("cert.pem")
        self.certificate.setContent(blocks[1])
        self.chain = directory.child("chain.pem")
        self.chain.setContent(blocks[1] * 2)
        self.combined = directory.child("combined.pem")
        self.combined.setContent(pem)
        self.otherKey = directory.child("other-key.pem")
        self.otherKey.setContent(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.missing = directory.child("missing").path

    def store(self) -> list[str]:
        """
        The options of a Maildir store checked by the passwd-file.
        """
        return ["--maildir", self.maildir, "--passwd", self.passwd.path]


class PluginTests(SynchronousTestCase):
    """
    The C{twisted.plugins.popd_plugin} module makes C{twistd popd}.
    """

    def test_discovered(self) -> None:
        """
        Twisted's plugin system finds a service maker named C{popd} for L{popd.tap}.
        """
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        maker = makers["popd"]
        self.assertIs(maker.options, Options)
        self.assertIs(maker.makeService, makeService)
        self.assertTrue(maker.description)

    def test_importsNothing(self) -> None:
        """
        The plugin module imports only L{ServiceMaker}: Twisted imports it whenever it lists
        plugins, so it must not load popd or install a reactor.
        """
        plugin = _SOURCE.descendant(["twisted", "plugins", "popd_plugin.py"])
        if not plugin.exists():
            raise self.failureException(f"{plugin.path} is missing")
        tree = ast.parse(plugin.getContent())
        imported = [
            (node.module if isinstance(node, ast.ImportFrom) else None, alias.name)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        ]
        self.assertEqual(imported, [("twisted.application.service", "ServiceMaker")])

    def test_noPackageInit(self) -> None:
        """
        C{twisted/plugins} has no C{__init__.py}, which would hide Twisted's own plugins.
        """
        for directory in (["twisted"], ["twisted", "plugins"]):
            self.assertFalse(_SOURCE.descendant([*directory, "__init__.py"]).exists())


class OptionsTests(SynchronousTestCase):
    """
    L{Options} parses and checks the command line of C{twistd popd}.
    """

    def setUp(self) -> None:
        self.files = _Files(FilePath(self.mktemp()))

    def test_demoWithoutStore(self) -> None:
        """
        Without store options, the options select the demo, on its usual ports.
        """
        self.assertTrue(_parse()["demo"])
        self.assertTrue(_parse("--enable-last", "--timeout", "900")["demo"])

    def test_demoPorts(self) -> None:
        """
        C{--demo-port} and C{--demo-tls-port} choose the demo's ports.
        """
        options = _parse("--demo-port", "2110", "--demo-tls-port", "2995")
        self.assertTrue(options["demo"])
        self.assertEqual((options["demo-port"], options["demo-tls-port"]), (2110, 2995))

    def test_store(self) -> None:
        """
        C{--maildir} and C{--passwd} give a Maildir realm and a passwd-file checker, listening
        on C{tcp:110} unless told otherwise, without TLS.
        """
        options = _parse(*self.files.store())
        self.assertFalse(options["demo"])
        self.assertIsInstance(options["realm"], MaildirRealm)
        self.assertIsInstance(options["checker"], PasswdFileChecker)
        self.assertEqual(options["listen"], ["tcp:110"])
        self.assertIsNone(options["tlsContext"])

    def test_listenRepeatable(self) -> None:
        """
        C{--listen} may be given several times; every endpoint is kept, in order.
        """
        options = _parse(
            *self.files.store(),
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--listen",
            f"ssl:0:privateKey={self.files.combined.path}",
            "--listen",
            "unix:popd.sock",
        )
        self.assertEqual(
            options["listen"],
            [
                "tcp:0:interface=127.0.0.1",
                f"ssl:0:privateKey={self.files.combined.path}",
                "unix:popd.sock",
            ],
        )

    def test_auth(self) -> None:
        """
        C{--auth} supplies the checker instead of C{--passwd}.
        """
        options = _parse("--maildir", self.files.maildir, "--auth", "memory:bob:secret")
        self.assertFalse(options["demo"])
        self.assertIs(options["checker"], options["credCheckers"][0])

    def test_tuning(self) -> None:
        """
        The limits and flags are parsed into numbers and flags.
        """
        options = _parse(
            *self.files.store(),
            "--timeout", "1800",
            "--login-timeout", "30",
            "--max-line-length", "4096",
            "--max-auth-failures", "5",
            "--max-bad-commands", "20",
            "--auth-failure-delay", "0.5",
            "--enable-last",
            "--allow-cleartext",
        )  # fmt: skip
        self.assertEqual(
            [
                options[name]
                for name in (
                    "timeout", "login-timeout", "max-line-length", "max-auth-failures",
                    "max-bad-commands", "auth-failure-delay", "enable-last", "allow-cleartext",
                )
            ],
            [1800.0, 30.0, 4096, 5, 20, 0.5, 1, 1],
        )  # fmt: skip

    def test_defaults(self) -> None:
        """
        The defaults are RFC 1939's ten minutes after login, three minutes before, and the
        documented limits.
        """
        options = _parse()
        self.assertEqual(
            [
                options[name]
                for name in (
                    "timeout", "login-timeout", "max-line-length", "max-auth-failures",
                    "max-bad-commands", "auth-failure-delay", "enable-last", "allow-cleartext",
                )
            ],
            [600.0, 180.0, 2048, 3, 10, 2.0, 0, 0],
        )  # fmt: skip

    def test_tls(self) -> None:
        """
        C{--tls-cert} and C{--tls-key} load TLS settings for STLS, with TLS 1.2 as the
        minimum version.
        """
        options = _parse(
            *self.files.store(),
            "--tls-cert", self.files.certificate.path,
            "--tls-key", self.files.key.path,
        )  # fmt: skip
        tls = options["tlsContext"]
        self.assertIsInstance(tls, ReloadableTLSContext)
        flags = tls.getContext().set_options(0)
        self.assertTrue(flags & SSL.OP_NO_TLSv1)
        self.assertTrue(flags & SSL.OP_NO_TLSv1_1)

    def test_tlsChainAndCombined(self) -> None:
        """
        The certificate file may hold a chain after the server's certificate, and the key may
        share a file with the certificate.
        """
        options = _parse(
            *self.files.store(),
            "--tls-cert", self.files.chain.path,
            "--tls-key", self.files.combined.path,
        )  # fmt: skip
        self.assertEqual(len(options["tlsContext"].options.extraCertChain), 1)

    def test_policies(self) -> None:
        """
        The policy options reach the factory: limits, LOGIN-DELAY, EXPIRE, TLS version.
        """
        options = _parse(
            *self.files.store(),
            "--max-auth-failure-delay", "30",
            "--max-connections-per-ip", "50",
            "--max-sessions-per-user", "2",
            "--login-delay", "300",
            "--expire", "7",
            "--tls-min-version", "1.3",
        )  # fmt: skip
        self.assertEqual(
            [options[name] for name in (
                "max-auth-failure-delay", "max-connections-per-ip", "max-sessions-per-user",
                "login-delay", "expire", "tls-min-version",
            )],
            [30.0, 50, 2, 300, 7, "1.3"],
        )  # fmt: skip
        factory = _factoryOf(makeService(options))
        self.assertEqual(
            (factory.penalty.cap, factory.peerConnections.limit, factory.userSessions.limit),
            (30.0, 50, 2),
        )
        assert factory.loginDelay is not None
        self.assertEqual((factory.loginDelay.seconds, factory.expireDays), (300, 7))

    def test_metrics(self) -> None:
        """
        C{--metrics} serves the factory's counters over HTTP on its endpoint, and is checked
        like any endpoint.
        """
        self.assertUsageError("--listen nonsense:", *self.files.store(), "--metrics", "nonsense:")
        options = _parse(*self.files.store(), "--metrics", "tcp:0:interface=127.0.0.1")
        service = makeService(options)
        sites = [
            c for c in service
            if isinstance(c, StreamServerEndpointService) and isinstance(c.factory, Site)
        ]  # fmt: skip
        self.assertEqual(len(sites), 1)
        resource = sites[0].factory.resource
        assert isinstance(resource, MetricsResource)
        self.assertIs(resource._metrics, _factoryOf(service).metrics)

    def test_authThreads(self) -> None:
        """
        C{--auth-threads} sizes the reactor's thread pool, where password hashes are verified:
        one thread per CPU unless told otherwise, since more cost memory and hash no faster.
        """
        pool = reactor.getThreadPool()  # type: ignore[attr-defined]
        self.addCleanup(reactor.suggestThreadPoolSize, pool.max)  # type: ignore[attr-defined]
        for given, expected in [((), os.cpu_count()), (("--auth-threads", "3"), 3)]:
            makeService(_parse(*self.files.store(), *given))
            self.assertEqual(pool.max, expected)
        self.assertEqual(_parse("--auth-threads", "auto")["auth-threads"], os.cpu_count())
        for value in ("0", "-1", "many"):
            self.assertUsageError("", "--auth-threads", value)

    def test_expireNever(self) -> None:
        """
        C{--expire NEVER} (any case) is the default: no expiry.
        """
        self.assertIsNone(_parse(*self.files.store())["expire"])
        self.assertIsNone(_parse(*self.files.store(), "--expire", "never")["expire"])
        self.assertEqual(_parse(*self.files.store(), "--expire", "0")["expire"], 0)

    def test_badPolicies(self) -> None:
        for arguments in [
            ("--expire", "-1"),
            ("--expire", "soon"),
            ("--login-delay", "0"),
            ("--tls-min-version", "1.1"),
            ("--max-connections-per-ip", "0"),
        ]:
            self.assertRaises(usage.UsageError, _parse, *self.files.store(), *arguments)

    def test_tlsListen(self) -> None:
        """
        C{--tls-listen} serves implicit TLS with the C{--tls-cert} certificate, and needs it.
        """
        self.assertUsageError(
            "--tls-listen needs --tls-cert", *self.files.store(), "--tls-listen", "tcp:0"
        )
        options = _parse(
            *self.files.store(),
            "--tls-listen", "tcp:0:interface=127.0.0.1",
            "--tls-cert", self.files.certificate.path,
            "--tls-key", self.files.key.path,
        )  # fmt: skip
        self.assertEqual(options["listen"], [])
        service = makeService(options)
        listeners = [c for c in service if isinstance(c, StreamServerEndpointService)]
        self.assertEqual(len(listeners), 1)
        wrapper = listeners[0].factory
        assert isinstance(wrapper, TLSMemoryBIOFactory)
        factory = wrapper.wrappedFactory
        assert isinstance(factory, POP3ServerFactory)
        self.assertIs(factory.tlsContextFactory, options["tlsContext"])

    def assertUsageError(self, message: str, *arguments: str) -> None:
        """
        Assert that parsing C{arguments} is a usage error whose message contains C{message}.
        """
        error = self.assertRaises(usage.UsageError, _parse, *arguments)
        self.assertIn(message, str(error))

    def test_unknownOption(self) -> None:
        """
        An unknown option is a usage error.
        """
        self.assertUsageError("bogus", "--bogus")

    def test_maildirWithoutChecker(self) -> None:
        """
        C{--maildir} without C{--passwd} or C{--auth} is a usage error.
        """
        self.assertUsageError("--passwd or --auth", "--maildir", self.files.maildir)

    def test_checkerWithoutMaildir(self) -> None:
        """
        C{--passwd} or C{--auth} without C{--maildir} is a usage error.
        """
        self.assertUsageError("--maildir", "--passwd", self.files.passwd.path)
        self.assertUsageError("--maildir", "--auth", "memory:bob:secret")

    def test_listenWithoutStore(self) -> None:
        """
        C{--listen} alone is a usage error, not the demo.
        """
        self.assertUsageError("--maildir", "--listen", "tcp:0")

    def test_twoCheckers(self) -> None:
        """
        C{--passwd} and C{--auth} together (or C{--auth} twice) are a usage error: a portal
        would use only the last.
        """
        self.assertUsageError("only one", *self.files.store(), "--auth", "memory:bob:secret")
        self.assertUsageError(
            "only one",
            "--maildir", self.files.maildir,
            "--auth", "memory:bob:secret",
            "--auth", "memory:alice:secret",
        )  # fmt: skip

    def test_missingPasswd(self) -> None:
        """
        A passwd-file that cannot be read is a usage error naming it.
        """
        self.assertUsageError(
            self.files.missing, "--maildir", self.files.maildir, "--passwd", self.files.missing
        )

    def test_badPasswdScheme(self) -> None:
        """
        An unknown C{--passwd-scheme} is a usage error.
        """
        self.assertUsageError("--passwd-scheme", *self.files.store(), "--passwd-scheme", "ROT13")

    def test_badTemplate(self) -> None:
        """
        A Maildir template with an unknown placeholder is a usage error.
        """
        self.assertUsageError("%x", "--maildir", "/var/mail/%x", "--passwd", self.files.passwd.path)

    def test_sharedTemplate(self) -> None:
        """
        A Maildir template without C{%u} or C{%n} would give every user the same Maildir: a
        usage error.
        """
        for template in ("/var/mail/Maildir", "/var/mail/%d/Maildir", "/var/mail/%%u"):
            self.assertUsageError(
                "%u or %n", "--maildir", template, "--passwd", self.files.passwd.path
            )

    def test_badEndpoint(self) -> None:
        """
        An endpoint description that does not parse is a usage error naming it.
        """
        for description in ("tcp:port", "bogus:110", "tcp:110:color=blue"):
            self.assertUsageError(description, *self.files.store(), "--listen", description)

    def test_endpointFiles(self) -> None:
        """
        An C{ssl:} endpoint whose key cannot be read is a usage error.
        """
        description = f"ssl:0:privateKey={self.files.missing}"
        self.assertUsageError(self.files.missing, *self.files.store(), "--listen", description)

    def test_systemdEndpoint(self) -> None:
        """
        A C{systemd:} endpoint for a socket systemd did not pass is a usage error that says so.
        """
        self.assertUsageError(
            "systemd passed no such socket",
            *self.files.store(),
            "--listen",
            "systemd:domain=INET:index=7",
        )

    def test_shortTimeout(self) -> None:
        """
        A C{--timeout} under RFC 1939's ten minutes is a usage error.
        """
        self.assertUsageError("at least 600", "--timeout", "599")

    def test_badNumbers(self) -> None:
        """
        Numbers that are not numbers, or out of range, are usage errors.
        """
        for option, value in [
            ("--timeout", "ten"),
            ("--timeout", "inf"),
            ("--login-timeout", "0"),
            ("--login-timeout", "-1"),
            ("--login-timeout", "nan"),
            ("--max-line-length", "254"),
            ("--max-auth-failures", "0"),
            ("--max-bad-commands", "-3"),
            ("--auth-failure-delay", "-1"),
            ("--demo-port", "0"),
            ("--demo-tls-port", "65536"),
        ]:
            self.assertUsageError("", option, value)

    def test_demoPortWithStore(self) -> None:
        """
        The demo's port options with a store are a usage error, not silently ignored.
        """
        self.assertUsageError("demo", *self.files.store(), "--demo-port", "2110")

    def test_certificateWithoutKey(self) -> None:
        """
        C{--tls-cert} without C{--tls-key}, or the reverse, is a usage error.
        """
        self.assertUsageError(
            "go together", *self.files.store(), "--tls-cert", self.files.certificate.path
        )
        self.assertUsageError("go together", *self.files.store(), "--tls-key", self.files.key.path)

    def test_unreadableCertificate(self) -> None:
        """
        A certificate or key file that cannot be read, or holds no PEM certificate or key, is
        a usage error naming it.
        """
        for certificate, key, named in [
            (self.files.missing, self.files.key.path, self.files.missing),
            (self.files.certificate.path, self.files.missing, self.files.missing),
            (self.files.passwd.path, self.files.key.path, self.files.passwd.path),
            (self.files.certificate.path, self.files.certificate.path, self.files.certificate.path),
        ]:
            self.assertUsageError(
                named, *self.files.store(), "--tls-cert", certificate, "--tls-key", key
            )

    def test_mismatchedKey(self) -> None:
        """
        A key that is not the certificate's is a usage error.
        """
        self.assertUsageError(
            "does not match",
            *self.files.store(),
            "--tls-cert", self.files.certificate.path,
            "--tls-key", self.files.otherKey.path,
        )  # fmt: skip

    def test_usageShowsExamples(self) -> None:
        """
        The usage text keeps the example commands of C{longdesc} on their own lines.
        """
        text = str(Options())
        self.assertIn("\n    twistd popd --listen tcp:110 \\\n", text)
        self.assertIn("--demo-tls-port", text)


class MakeServiceTests(TestCase):
    """
    L{makeService} builds one listening service per endpoint, all sharing one factory.
    """

    def setUp(self) -> None:
        self.files = _Files(FilePath(self.mktemp()))

    def test_listeners(self) -> Deferred[None]:
        """
        Each C{--listen} becomes a child service with that endpoint, serving one shared
        L{POP3ServerFactory} configured by the options; the services listen when started.
        """
        options = _parse(
            *self.files.store(),
            "--listen", "tcp:0:interface=127.0.0.1",
            "--listen", f"ssl:0:interface=127.0.0.1:privateKey={self.files.combined.path}",
            "--tls-cert", self.files.certificate.path,
            "--tls-key", self.files.key.path,
            "--timeout", "1200",
            "--login-timeout", "60",
            "--enable-last",
        )  # fmt: skip
        service = makeService(options)
        self.assertIsInstance(service, MultiService)
        assert isinstance(service, MultiService)
        children = [c for c in service if not isinstance(c, ReloadOnHangup)]
        self.assertEqual(len(children), 2)
        for child in children:
            self.assertIsInstance(child, StreamServerEndpointService)
        plain, tls = children
        assert isinstance(plain, StreamServerEndpointService)
        assert isinstance(tls, StreamServerEndpointService)
        self.assertIsInstance(plain.endpoint, TCP4ServerEndpoint)
        self.assertIsInstance(tls.endpoint, SSL4ServerEndpoint)
        factory = plain.factory
        self.assertIs(tls.factory, factory)
        assert isinstance(factory, POP3ServerFactory)
        self.assertIs(factory.tlsContextFactory, options["tlsContext"])
        self.assertEqual(
            (factory.timeout, factory.authorizationTimeout, factory.enableLast),
            (1200.0, 60.0, True),
        )
        service.startService()
        self.assertTrue(service.running)
        stopped: Deferred[None] = service.stopService()
        return stopped

    def test_demo(self) -> Deferred[None]:
        """
        In demo mode, L{makeService} prepares C{./popd-demo}, prints the password, and listens
        on 127.0.0.1 with plain POP3 (offering STLS) and implicit TLS.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory.path)
        output = StringIO()
        self.patch(sys, "stdout", output)
        plainPort, tlsPort = _freePorts(2)
        service = makeService(
            _parse("--demo-port", str(plainPort), "--demo-tls-port", str(tlsPort))
        )
        assert isinstance(service, MultiService)
        plain, tls, reloader = list(service)
        assert isinstance(plain, StreamServerEndpointService)
        assert isinstance(tls, StreamServerEndpointService)
        self.assertIsInstance(plain.endpoint, TCP4ServerEndpoint)
        self.assertIsInstance(tls.endpoint, TCP4ServerEndpoint)
        self.assertIsInstance(tls.factory, TLSMemoryBIOFactory)
        self.assertIsInstance(reloader, ReloadOnHangup)
        factory = plain.factory
        assert isinstance(factory, POP3ServerFactory)
        self.assertIsInstance(factory.tlsContextFactory, ReloadableTLSContext)
        password = directory.descendant(["popd-demo", "demo-password"]).getContent().strip()
        self.assertIn(f"password:  {password.decode('ascii')}\n", output.getvalue())
        service.startService()
        for port in (plainPort, tlsPort):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        stopped: Deferred[None] = service.stopService()
        return stopped


class TwistdTests(SynchronousTestCase):
    """
    C{twistd popd} as an administrator runs it: a subprocess.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        self.files = _Files(self.directory)

    def assertRefused(self, message: str, *arguments: str) -> None:
        """
        Assert that C{twistd -n popd arguments} exits at once with an error, shows
        C{message}, and has started nothing (not even the demo).
        """
        result = subprocess.run(
            _twistd("-n", "--pidfile=", "popd", *arguments),
            cwd=self.directory.path,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROCESS_TIMEOUT,
        )
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        self.assertNotEqual(result.returncode, 0, output)
        self.assertIn(message, output)
        self.assertNotIn("Traceback", output)
        self.assertFalse(self.directory.child("popd-demo").exists())

    def test_unknownOption(self) -> None:
        """
        An unknown option stops C{twistd}.
        """
        self.assertRefused("option --bogus not recognized", "--bogus")

    def test_badEndpoint(self) -> None:
        """
        A bad endpoint stops C{twistd}.
        """
        self.assertRefused("--listen tcp:port", *self.files.store(), "--listen", "tcp:port")

    def test_missingPasswd(self) -> None:
        """
        A missing passwd-file stops C{twistd}.
        """
        self.assertRefused(
            self.files.missing, "--maildir", self.files.maildir, "--passwd", self.files.missing
        )

    def test_badTemplate(self) -> None:
        """
        A bad Maildir template stops C{twistd}.
        """
        self.assertRefused("%x", "--maildir", "/var/mail/%x", "--passwd", self.files.passwd.path)

    def test_shortTimeout(self) -> None:
        """
        A C{--timeout} under ten minutes stops C{twistd}.
        """
        self.assertRefused("at least 600", *self.files.store(), "--timeout", "60")

    def test_certificateWithoutKey(self) -> None:
        """
        A certificate without its key stops C{twistd}.
        """
        self.assertRefused(
            "go together", *self.files.store(), "--tls-cert", self.files.certificate.path
        )

    def test_unreadableKey(self) -> None:
        """
        A key that cannot be read stops C{twistd}.
        """
        self.assertRefused(
            self.files.missing,
            *self.files.store(),
            "--tls-cert", self.files.certificate.path,
            "--tls-key", self.files.missing,
        )  # fmt: skip


class DemoEndToEndTests(SynchronousTestCase):
    """
    C{twistd -n popd} without a store runs the demo, and its welcome message can be read with
    the printed password, over implicit TLS and over STLS, verifying the demo's certificate.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        self.directory.makedirs()
        self.plainPort, self.tlsPort = _freePorts(2)
        self.output = self.directory.child("twistd.out")
        with self.output.open("w") as outputFile:
            process = subprocess.Popen(
                _twistd(
                    "-n", "--pidfile=", "popd",
                    "--demo-port", str(self.plainPort),
                    "--demo-tls-port", str(self.tlsPort),
                ),
                cwd=self.directory.path,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=outputFile,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.addCleanup(self._stop, process)
        self.password = self._waitForDemo(process)
        self.context = ssl.create_default_context(
            cafile=self.directory.descendant(["popd-demo", "tls.pem"]).path
        )

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        """
        Stop C{twistd} as an init system would, and check that it shuts down cleanly: it
        stops its services, then ends itself with the same signal, as Twisted does.
        """
        process.terminate()
        try:
            process.wait(_PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        self.assertEqual(process.returncode, -signal.SIGTERM, self._log())
        self.assertIn("Server Shut Down.", self._log())

    def _log(self) -> str:
        """
        What C{twistd} has written so far.
        """
        return self.output.getContent().decode("utf-8", "replace")

    def _waitForDemo(self, process: subprocess.Popen[bytes]) -> str:
        """
        Wait until the demo listens on both ports.

        @return: the password it printed.
        """
        deadline = time.monotonic() + _PROCESS_TIMEOUT
        ports = {self.plainPort, self.tlsPort}
        while ports:
            if process.poll() is not None:
                self.fail(f"twistd exited with {process.returncode}:\n{self._log()}")
            if time.monotonic() > deadline:
                self.fail(f"the demo did not listen on {sorted(ports)}:\n{self._log()}")
            for port in sorted(ports):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    time.sleep(0.1)
                else:
                    ports.discard(port)
        (line,) = [line for line in self._log().splitlines() if line.startswith("  password:")]
        return line.split()[-1]

    def _readWelcome(self, client: poplib.POP3) -> None:
        """
        Log in with the printed password and check the one message is the welcome message,
        its dotted line unstuffed again.
        """
        client.user("demo")
        client.pass_(self.password)
        self.assertEqual(client.stat()[0], 1)
        lines = client.retr(1)[1]
        self.assertIn(b"Subject: Welcome to popd", lines)
        self.assertTrue([line for line in lines if line.startswith(b".forward")])
        client.quit()

    def _checked(self, connect: Callable[[], poplib.POP3]) -> poplib.POP3:
        """
        Connect, with the connection closed at the end of the test whatever happens.
        """
        client = connect()
        self.addCleanup(client.close)
        return client

    def test_printed(self) -> None:
        """
        The printed password is the demo's, and the client commands name the chosen ports.
        """
        stored = self.directory.descendant(["popd-demo", "demo-password"]).getContent()
        self.assertEqual(stored.decode("ascii").strip(), self.password)
        log = self._log()
        self.assertIn(f"curl -k pop3s://demo:{self.password}@127.0.0.1:{self.tlsPort}/1", log)
        self.assertIn(f"pop3://demo:{self.password}@127.0.0.1:{self.plainPort}/1", log)

    def test_implicitTLS(self) -> None:
        """
        The welcome message can be read over implicit TLS, the certificate verified for
        C{localhost}; C{STLS} is not offered on a connection that is already TLS.
        """
        client = self._checked(
            lambda: poplib.POP3_SSL("localhost", self.tlsPort, context=self.context, timeout=10)
        )
        self.assertNotIn("STLS", client.capa())
        self._readWelcome(client)

    def test_startTLS(self) -> None:
        """
        The plain listener offers C{STLS}; after it, the certificate verified for
        C{127.0.0.1}, the welcome message can be read.
        """
        client = self._checked(lambda: poplib.POP3("127.0.0.1", self.plainPort, timeout=10))
        self.assertIn("STLS", client.capa())
        client.stls(self.context)
        self.assertNotIn("STLS", client.capa())
        self._readWelcome(client)


class SystemdTests(SynchronousTestCase):
    """
    C{twistd popd --listen systemd:...} serves a socket that systemd passed (socket activation,
    C{sd_listen_fds(3)}): the socket is bound before popd starts, as a socket unit does.
    """

    def test_socketActivation(self) -> None:
        """
        popd serves the passed socket: a client connected to it reads a message from a
        Maildir, with the password of the passwd-file.
        """
        directory = FilePath(self.mktemp())
        files = _Files(directory)
        maildir = directory.descendant(["mail", "bob", "Maildir"])
        for name in ("new", "cur", "tmp"):
            maildir.child(name).makedirs()
        maildir.child("new").child("1700000000.M1P1.test").setContent(b"Subject: hi\n\nbody\n")
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(5)
        # As systemd (227 or later): the socket is descriptor 3, named in LISTEN_FDNAMES,
        # and LISTEN_PID names the process that serves it, so that process sets it itself
        # before it becomes twistd.
        launcher = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', "
            "LISTEN_FDNAMES='pop3'); "
            "os.execv(sys.executable, [sys.executable] + sys.argv[2:])"
        )
        output = directory.child("twistd.out")
        with output.open("w") as outputFile:
            process = subprocess.Popen(
                [sys.executable, "-c", launcher, str(listening.fileno()),
                 *_twistd("-n", "--pidfile=", "popd", "--listen", "systemd:domain=INET:index=0",
                          *files.store())[1:]],
                cwd=directory.path,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=outputFile,
                stderr=subprocess.STDOUT,
                pass_fds=(listening.fileno(),),
            )  # fmt: skip
        self.addCleanup(process.wait, _PROCESS_TIMEOUT)
        self.addCleanup(process.terminate)
        port = listening.getsockname()[1]
        client = poplib.POP3("127.0.0.1", port, timeout=_PROCESS_TIMEOUT)
        try:
            client.user("bob")
            client.pass_("secret")
            self.assertEqual(client.retr(1)[1], [b"Subject: hi", b"", b"body"])
            client.quit()
        except (poplib.error_proto, OSError) as e:
            self.fail(f"{e}\n{output.getContent().decode('utf-8', 'replace')}")


class UIDLMigrationOptionTests(SynchronousTestCase):
    """
    C{--uidl-migration} reaches the Maildir realm, and only known sources are accepted.
    """

    def test_option(self) -> None:
        files = _Files(FilePath(self.mktemp()))
        for source in ("dovecot", "dovecot:%v.%u", "courier"):
            options = _parse(*files.store(), "--uidl-migration", source)
            self.assertEqual(options["realm"]._uidlMigration, source)
        for source in ("cyrus", "dovecot:%m"):
            error = self.assertRaises(
                usage.UsageError, _parse, *files.store(), "--uidl-migration", source
            )
            self.assertIn(repr(source.partition(":")[2] or source), str(error))


def _children(pid: int) -> list[int]:
    """
    The processes whose parent is C{pid}.
    """
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


class WorkersTests(SynchronousTestCase):
    """
    C{--workers N}: N processes serve the same listening socket.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        files = _Files(self.directory)
        maildir = self.directory.descendant(["mail", "bob", "Maildir"])
        for name in ("new", "cur", "tmp"):
            maildir.child(name).makedirs()
        maildir.child("new").child("1700000000.M1P1.test").setContent(b"Subject: hi\n\nbody\n")
        self.port, self.metricsPort = _freePorts(2)
        # Sessions that _serves made.
        self.served = 0
        self.output = self.directory.child("twistd.out")
        with self.output.open("w") as outputFile:
            self.process = subprocess.Popen(
                _twistd("-n", "--pidfile=", "popd", "--workers", "2",
                        "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                        "--metrics", f"tcp:{self.metricsPort}:interface=127.0.0.1",
                        *files.store()),
                cwd=self.directory.path,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=outputFile,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.addCleanup(self._stop)
        self.worker = self._waitForWorker(())

    def _stop(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self.process.terminate()
        self.process.wait(_PROCESS_TIMEOUT)
        deadline = time.monotonic() + _PROCESS_TIMEOUT
        while os.path.exists(f"/proc/{self.worker}") and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(os.path.exists(f"/proc/{self.worker}"), "the worker outlived twistd")

    def _waitForWorker(self, notThese: Sequence[int]) -> int:
        deadline = time.monotonic() + _PROCESS_TIMEOUT
        while time.monotonic() < deadline:
            workers = [p for p in _children(self.process.pid) if p not in notThese]
            if workers and self._serves():
                return workers[0]
            time.sleep(0.1)
        self.fail("no worker started:\n" + self.output.getContent().decode("utf-8", "replace"))

    def _serves(self) -> bool:
        try:
            client = poplib.POP3("127.0.0.1", self.port, timeout=10)
        except OSError:
            return False
        client.user("bob")
        client.pass_("secret")
        self.assertEqual(client.retr(1)[1], [b"Subject: hi", b"", b"body"])
        client.quit()
        self.served += 1
        return True

    def test_workerServes(self) -> None:
        """
        While the main process is stopped (C{SIGSTOP}), the worker still serves sessions
        from the shared socket.
        """
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            self.assertTrue(self._serves())
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def test_restarted(self) -> None:
        """
        A worker that dies is replaced.
        """
        os.kill(self.worker, signal.SIGKILL)
        self.worker = self._waitForWorker((self.worker,))

    def _committed(self) -> int:
        """
        @return: the sessions that committed, as the main process's metrics count them.
        """
        with urlopen(f"http://127.0.0.1:{self.metricsPort}/metrics", timeout=10) as response:
            lines = response.read().decode("ascii").splitlines()
        prefix = 'popd_sessions_total{outcome="committed"} '
        return sum(int(line[len(prefix) :]) for line in lines if line.startswith(prefix))

    def test_metricsOfWorkers(self) -> None:
        """
        The main process's metrics count the sessions the worker served too (within a report's
        interval).
        """
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            self.assertTrue(self._serves())
        finally:
            os.kill(self.process.pid, signal.SIGCONT)
        deadline = time.monotonic() + _PROCESS_TIMEOUT
        while self._committed() != self.served and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(self._committed(), self.served)
