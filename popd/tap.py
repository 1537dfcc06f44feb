"""
C{twistd popd}: the command line, and the service it describes.

Parsing has no side effects: L{Options.postOptions} reads and checks every file and endpoint it
is given, so that a mistake is a usage error before anything listens, but it creates nothing.
L{makeService} imports the reactor, and in demo mode writes the demo's files.
"""

from __future__ import annotations

import math
import os
import re
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, cast

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IReactorFromThreads,
    IReactorProcess,
    IReactorThreads,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.web.server import Site

from popd import uidlmigration
from popd.cred import PasswdFileChecker, PasswdFileError
from popd.demo import DEMO_HOST, prepareDemo
from popd.maildir import MaildirRealm
from popd.metrics import MetricsResource
from popd.protocol import POP3ServerFactory
from popd.tls import TLS_VERSIONS, ReloadableTLSContext
from popd.workers import RecordingEndpoint, WorkerPool

_log = Logger()

#: Where the demo keeps its files, relative to the working directory.
DEMO_DIRECTORY = "popd-demo"

#: The demo's ports: plain POP3 with STLS, and implicit TLS.
DEMO_PORT = 1110
DEMO_TLS_PORT = 1995

#: The listener used when a store is given without any C{--listen}.
DEFAULT_LISTEN = "tcp:110"

# %u or %n, not preceded by an odd number of %: the placeholders that tell users apart.
_USER_PLACEHOLDER = re.compile(r"(?<!%)(?:%%)*%[un]")


def _seconds(value: str) -> float:
    """
    Coerce an option to a finite, non-negative number of seconds.

    @raise ValueError: for anything else.
    """
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{value!r} is not a number of seconds")
    return seconds


def _count(value: str) -> int:
    """
    Coerce an option to a positive integer.

    @raise ValueError: for anything else.
    """
    count = int(value)
    if count < 1:
        raise ValueError(f"{value!r} is not a positive number")
    return count


def _expireDays(value: str) -> int | None:
    """
    Coerce the EXPIRE policy: a number of days, or C{NEVER} (L{None}).

    @raise ValueError: for anything else.
    """
    if value.upper() == "NEVER":
        return None
    days = int(value)
    if days < 0:
        raise ValueError(f"{value!r} is neither a number of days nor NEVER")
    return days


def _tlsVersion(value: str) -> str:
    """
    Check a TLS version name (C{1.2}, C{1.3}).

    @raise ValueError: for anything else.
    """
    if value not in TLS_VERSIONS:
        raise ValueError(f"{value!r} is not a TLS version popd accepts (1.2, 1.3)")
    return value


def _perCPU(value: str) -> int:
    """
    Coerce a number of processes or threads: a positive number, or C{auto} for one per CPU.

    @raise ValueError: for anything else.
    """
    if value == "auto":
        return os.cpu_count() or 1
    return _count(value)


def _port(value: str) -> int:
    """
    Coerce an option to a TCP port number.

    @raise ValueError: for anything else.
    """
    port = int(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r} is not a port number (1-65535)")
    return port


class Options(usage.Options, strcred.AuthOptionMixin):
    """
    The options of C{twistd popd}.

    After L{parseOptions}, C{self["demo"]} says whether to run the demo; otherwise
    C{self["listen"]}, C{self["tls-listen"]}, C{self["realm"]}, C{self["checker"]} and
    C{self["tlsContext"]}
    hold what the options describe, already loaded and checked.
    """

    longdesc = """\
popd serves Maildirs over POP3 (RFC 1939) with STLS and implicit TLS.

Given none of --listen, --maildir, --passwd, --auth, --tls-cert and --tls-key,
it runs a demo on 127.0.0.1 ports 1110 and 1995 with files in ./popd-demo, and
prints a user, a password and client commands to try.

Examples:

  Plain POP3 with STLS on port 110 and implicit TLS on port 995, Maildirs as
  Postfix or Dovecot's LDA write them, a Dovecot passwd-file:

    twistd popd --listen tcp:110 \\
        --tls-listen tcp:995 \\
        --tls-cert /etc/popd/cert.pem --tls-key /etc/popd/key.pem \\
        --maildir /var/mail/%d/%n/Maildir --passwd /etc/popd/passwd

  System accounts with Maildirs in their home directories, on a socket
  passed by systemd, offering STLS:

    twistd popd --listen systemd:domain=INET:index=0 \\
        --tls-cert /etc/popd/fullchain.pem --tls-key /etc/popd/privkey.pem \\
        --maildir /home/%u/Maildir --auth unix

  The demo on other ports:

    twistd -n popd --demo-port 2110 --demo-tls-port 2995
"""

    supportedInterfaces = (IUsernamePassword, IUsernameHashedPassword)

    optFlags = [
        [
            "enable-last",
            None,
            "Offer the LAST command of RFC 1460, for very old clients. Example: --enable-last",
        ],
        [
            "allow-cleartext",
            None,
            "Accept passwords in cleartext (USER/PASS) on connections that are neither TLS "
            "nor loopback; by default clients must use STLS or implicit TLS first. "
            "Example: --allow-cleartext",
        ],
    ]

    optParameters = [
        [
            "maildir",
            None,
            None,
            "Where each user's Maildir is: %u is the user name, %n its local part, %d its "
            "domain, %% a percent sign. Example: --maildir /var/mail/%d/%n/Maildir",
        ],
        [
            "passwd",
            None,
            None,
            "A Dovecot passwd-file (user:{SCHEME}hash per line) to check passwords. "
            "Example: --passwd /etc/popd/passwd",
        ],
        [
            "uidl-migration",
            None,
            None,
            "Keep the POP3 UIDLs that Dovecot or Courier gave out on these Maildirs (read from "
            "dovecot-uidlist or courierpop3dsizelist), so that clients do not download all mail "
            "again: dovecot, dovecot:FORMAT (Dovecot's pop3_uidl_format, when not the default) "
            "or courier. Example: --uidl-migration dovecot",
        ],
        [
            "passwd-scheme",
            None,
            "CRYPT",
            "The scheme of --passwd entries without a {SCHEME} prefix, as Dovecot's "
            "default_pass_scheme. Example: --passwd-scheme SHA512-CRYPT",
        ],
        [
            "tls-cert",
            None,
            None,
            "A PEM certificate (its chain may follow) for STLS on plain listeners. "
            "Needs --tls-key. Example: --tls-cert /etc/popd/cert.pem",
        ],
        [
            "tls-key",
            None,
            None,
            "The PEM private key of --tls-cert. Example: --tls-key /etc/popd/key.pem",
        ],
        [
            "timeout",
            None,
            600.0,
            "Seconds a logged-in client may stay idle; RFC 1939 requires at least 600. "
            "Example: --timeout 1800",
            _seconds,
        ],
        [
            "login-timeout",
            None,
            180.0,
            "Seconds a client may stay idle before logging in. Example: --login-timeout 60",
            _seconds,
        ],
        [
            "max-line-length",
            None,
            2048,
            "The longest command line accepted, in octets (at least 255, RFC 2449). "
            "Example: --max-line-length 4096",
            int,
        ],
        [
            "max-auth-failures",
            None,
            3,
            "Failed logins after which the connection is closed. Example: --max-auth-failures 5",
            _count,
        ],
        [
            "max-bad-commands",
            None,
            10,
            "Unknown or malformed commands after which the connection is closed. "
            "Example: --max-bad-commands 20",
            _count,
        ],
        [
            "auth-failure-delay",
            None,
            2.0,
            "Seconds before a failed login is answered, to slow password guessing. "
            "Example: --auth-failure-delay 5",
            _seconds,
        ],
        [
            "max-auth-failure-delay",
            None,
            15.0,
            "The longest wait for a failed login: a peer's delay doubles with each failure up "
            "to this. Example: --max-auth-failure-delay 30",
            _seconds,
        ],
        [
            "max-connections-per-ip",
            None,
            20,
            "Connections one IP address may hold at once. Example: --max-connections-per-ip 50",
            _count,
        ],
        [
            "max-sessions-per-user",
            None,
            10,
            "Logged-in sessions one user may hold at once (a Maildir is locked by one anyway). "
            "Example: --max-sessions-per-user 3",
            _count,
        ],
        [
            "login-delay",
            None,
            None,
            "Seconds a user must wait between two logins, advertised and enforced as "
            "LOGIN-DELAY (RFC 2449). Example: --login-delay 300",
            _count,
        ],
        [
            "expire",
            None,
            None,
            "Days a retrieved message may stay before popd removes it at a later QUIT, "
            "advertised as EXPIRE (RFC 2449); 0 removes retrieved messages at the end of the "
            "session; NEVER (the default) keeps them. Example: --expire 30",
            _expireDays,
        ],
        [
            "tls-min-version",
            None,
            "1.2",
            "The oldest TLS version accepted, 1.2 or 1.3. Example: --tls-min-version 1.3",
            _tlsVersion,
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics (connections, logins, commands, octets, session "
            "durations) over HTTP on this endpoint. "
            "Example: --metrics tcp:9110:interface=127.0.0.1",
        ],
        [
            "workers",
            None,
            1,
            "Processes serving the listening sockets, or auto for one per CPU; they share the "
            "Maildir locks. Example: --workers auto",
            _perCPU,
        ],
        [
            "auth-threads",
            None,
            None,
            "Threads that verify password hashes, or auto (the default) for one per CPU: "
            "hashing is CPU work, and each thread more costs memory. Example: --auth-threads 4",
            _perCPU,
        ],
        [
            "demo-port",
            None,
            None,
            "Demo only: the port of the plain listener, which offers STLS (default 1110). "
            "Example: --demo-port 2110",
            _port,
        ],
        [
            "demo-tls-port",
            None,
            None,
            "Demo only: the port of the implicit-TLS listener (default 1995). "
            "Example: --demo-tls-port 2995",
            _port,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []
        self["tls-listen"] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        # Worker processes are started with the same options.
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)  # type: ignore[no-untyped-call]

    def opt_listen(self, description: str) -> None:
        """Listen here (repeatable; default tcp:110). Example: --listen unix:/run/popd.sock"""
        self["listen"].append(description)

    def opt_tls_listen(self, description: str) -> None:
        """
        Listen here with implicit TLS (RFC 8314), using --tls-cert, which SIGHUP reloads
        (repeatable). Example: --tls-listen tcp:995
        """
        self["tls-listen"].append(description)

    def getUsage(self, width: int | None = None) -> str:
        """
        The options, then L{longdesc} as written.

        L{usage.Options.getUsage} re-wraps C{longdesc} into one paragraph, which would run the
        example commands together; so it is shown none, and C{longdesc} follows verbatim.
        """
        self.longdesc = ""
        try:
            return super().getUsage(width) + "\n" + Options.longdesc
        finally:
            del self.longdesc

    def postOptions(self) -> None:
        """
        Check the options together, and load what they name.

        @raise usage.UsageError: for options that contradict or miss each other, numbers out
            of range, and files, templates or endpoints that cannot be used.
        """
        if self["timeout"] < 600:
            raise usage.UsageError("--timeout must be at least 600 seconds (RFC 1939 section 3)")
        if self["login-timeout"] <= 0:
            raise usage.UsageError("--login-timeout must be more than 0 seconds")
        if self["max-line-length"] < 255:
            raise usage.UsageError(
                "--max-line-length must be at least 255 octets (RFC 2449 section 4)"
            )
        self["demo"] = not (
            self["listen"]
            or self["tls-listen"]
            or self["maildir"] is not None
            or self["uidl-migration"] is not None
            or self["passwd"] is not None
            or self.get("credCheckers")
            or self["tls-cert"] is not None
            or self["tls-key"] is not None
        )
        if self["demo"]:
            return
        for option in ("demo-port", "demo-tls-port"):
            if self[option] is not None:
                raise usage.UsageError(
                    f"--{option} applies only to the demo, which runs when no store is given"
                )
        self["realm"] = self._realm()
        self["checker"] = self._checker()
        self["tlsContext"] = self._tlsContext()
        if self["tls-listen"] and self["tlsContext"] is None:
            raise usage.UsageError("--tls-listen needs --tls-cert and --tls-key")
        if not (self["listen"] or self["tls-listen"]):
            self["listen"] = [DEFAULT_LISTEN]
        for description in self["listen"] + self["tls-listen"]:
            _checkEndpoint(description)
        if self["metrics"] is not None:
            _checkEndpoint(self["metrics"])

    def _checker(self) -> ICredentialsChecker:
        """
        The one password checker given by C{--passwd} or C{--auth}.

        Only one is accepted: a portal keeps a single checker per kind of credentials, so a
        second one would silently replace the first.

        @raise usage.UsageError: when there is none, more than one, or the passwd-file cannot
            be used.
        """
        checkers: list[ICredentialsChecker] = list(self.get("credCheckers", []))
        if self["passwd"] is not None:
            try:
                checkers.append(PasswdFileChecker(self["passwd"], self["passwd-scheme"]))
            except PasswdFileError as e:
                raise usage.UsageError(f"--passwd: {e}") from None
            except ValueError as e:
                raise usage.UsageError(f"--passwd-scheme: {e}") from None
        if not checkers:
            raise usage.UsageError("give --passwd or --auth, to check passwords")
        if len(checkers) > 1:
            raise usage.UsageError("give only one of --passwd and --auth, once")
        return checkers[0]

    def _realm(self) -> MaildirRealm:
        """
        The Maildir realm of C{--maildir}.

        @raise usage.UsageError: when the option is missing or its template is bad.
        """
        if self["maildir"] is None:
            raise usage.UsageError(
                "give --maildir, to say where mail is (or no store options at all, to run the demo)"
            )
        try:
            uidlmigration.checkSource(self["uidl-migration"])
        except ValueError as e:
            raise usage.UsageError(f"--uidl-migration: {e}") from None
        try:
            realm = MaildirRealm(self["maildir"], uidlMigration=self["uidl-migration"])
        except ValueError as e:
            raise usage.UsageError(f"--maildir: {e}") from None
        if not _USER_PLACEHOLDER.search(self["maildir"]):
            raise usage.UsageError(
                "--maildir needs %u or %n, or every user would read the same Maildir"
            )
        return realm

    def _tlsContext(self) -> ReloadableTLSContext | None:
        """
        The certificate for C{STLS} and C{--tls-listen}, from C{--tls-cert} and C{--tls-key}.

        @return: L{None} when neither is given.
        @raise usage.UsageError: when only one is given, or the files cannot be used.
        """
        certificate, key = self["tls-cert"], self["tls-key"]
        if certificate is None and key is None:
            return None
        if certificate is None or key is None:
            raise usage.UsageError("--tls-cert and --tls-key go together")
        try:
            return ReloadableTLSContext(certificate, key, TLS_VERSIONS[self["tls-min-version"]])
        except OSError as e:
            raise usage.UsageError(
                f"--tls-cert/--tls-key: cannot read {e.filename}: {e.strerror}"
            ) from None
        except ValueError as e:
            raise usage.UsageError(f"--tls-cert/--tls-key: {e}") from None


def _checkEndpoint(description: str) -> None:
    """
    Check an endpoint description by parsing it without a reactor.

    Twisted's parsers only keep the reactor for later, and read the files they name (the key
    and certificate of C{ssl:}, the descriptors passed by systemd), so this catches bad syntax,
    unknown types, bad numbers and unreadable files, and listens on nothing.

    @raise usage.UsageError: when the description cannot be parsed.
    """
    try:
        endpoints.serverFromString(None, description)  # type: ignore[no-untyped-call]
    except Exception as e:
        reason = str(e)
        if description.startswith("systemd:") and isinstance(e, (IndexError, KeyError)):
            # What the systemd parser raises for an index or a name it was not passed.
            reason = "systemd passed no such socket (see LISTEN_FDS in sd_listen_fds(3))"
        raise usage.UsageError(f"--listen {description}: {reason}") from None


@dataclass
class Server:
    """
    What the options describe, built: the factory, and where it listens.

    @ivar factory: the one factory of every POP3 listener.
    @ivar tlsContext: the certificate for STLS and implicit TLS, if any.
    @ivar listen: endpoints of plain listeners.
    @ivar tlsListen: endpoints of implicit-TLS listeners.
    @ivar reloads: what C{SIGHUP} reloads.
    """

    factory: POP3ServerFactory
    tlsContext: ReloadableTLSContext | None
    listen: list[str]
    tlsListen: list[str]
    reloads: list[Callable[[], object]]

    def implicitTLS(self) -> TLSMemoryBIOFactory:
        """
        The factory of implicit-TLS listeners: TLS around the POP3 factory.
        """
        assert self.tlsContext is not None
        return TLSMemoryBIOFactory(self.tlsContext, False, self.factory)


def buildServer(options: Options, reactor: IReactorTime, announce: bool = True) -> Server:
    """
    Build the factory and listener list that C{options} describe, without listening.

    In demo mode this prepares the demo's files in L{DEMO_DIRECTORY} and, if C{announce},
    prints (and logs) how to log in.
    """
    if options["demo"]:
        setup = prepareDemo(FilePath(DEMO_DIRECTORY))
        plainPort = options["demo-port"] or DEMO_PORT
        tlsPort = options["demo-tls-port"] or DEMO_TLS_PORT
        checker: ICredentialsChecker = PasswdFileChecker(setup.passwd.path)
        realm = MaildirRealm(setup.maildirTemplate)
        tlsContext: ReloadableTLSContext | None = ReloadableTLSContext(
            setup.tls.path, setup.tls.path, TLS_VERSIONS[options["tls-min-version"]]
        )
        listen = [f"tcp:{plainPort}:interface={DEMO_HOST}"]
        tlsListen = [f"tcp:{tlsPort}:interface={DEMO_HOST}"]
        if announce:
            sys.stdout.write(setup.instructions(plainPort, tlsPort))
            sys.stdout.flush()
            _log.info(
                "Demo: log in as {user} with password {password} on {host} ports {plainPort} "
                "(STLS) and {tlsPort} (TLS); files in {directory}",
                user=setup.user,
                password=setup.password,
                host=DEMO_HOST,
                plainPort=plainPort,
                tlsPort=tlsPort,
                directory=setup.directory.path,
            )
    else:
        checker = options["checker"]
        realm = options["realm"]
        tlsContext = options["tlsContext"]
        listen = options["listen"]
        tlsListen = options["tls-listen"]
    factory = POP3ServerFactory(
        Portal(realm, [checker]),
        tlsContextFactory=tlsContext,
        allowCleartext=bool(options["allow-cleartext"]),
        timeout=options["timeout"],
        authorizationTimeout=options["login-timeout"],
        enableLast=bool(options["enable-last"]),
        maxLineLength=options["max-line-length"],
        maxAuthFailures=options["max-auth-failures"],
        maxBadCommands=options["max-bad-commands"],
        authFailureDelay=options["auth-failure-delay"],
        maxAuthFailureDelay=options["max-auth-failure-delay"],
        maxConnectionsPerPeer=options["max-connections-per-ip"],
        maxSessionsPerUser=options["max-sessions-per-user"],
        loginDelay=options["login-delay"],
        expireDays=options["expire"],
        reactor=reactor,
    )
    reloads: list[Callable[[], object]] = []
    if tlsContext is not None:
        reloads.append(tlsContext.reload)
    if isinstance(checker, PasswdFileChecker):
        reloads.append(checker.reload)
    return Server(factory, tlsContext, listen, tlsListen, reloads)


def makeService(options: Options) -> IService:
    """
    Build the server that C{options} describe: one listening service per endpoint, all
    sharing one L{POP3ServerFactory}; a handler that reloads the certificate and the
    passwd-file on C{SIGHUP}; and, with C{--workers}, the worker processes that serve the
    same listening sockets.

    @param options: parsed options.
    @return: a L{MultiService} of the listeners.
    """
    from twisted.internet import reactor

    raiseFileLimit()
    # The reactor's threads only verify password hashes here.
    IReactorThreads(reactor).suggestThreadPoolSize(options["auth-threads"] or _perCPU("auto"))
    server = buildServer(options, reactor)
    workers = options["workers"] - 1
    service = MultiService()  # type: ignore[no-untyped-call]
    shared: list[tuple[RecordingEndpoint, bool]] = []
    kinds = [(d, False) for d in server.listen] + [(d, True) for d in server.tlsListen]
    for description, tls in kinds:
        endpoint = endpoints.serverFromString(reactor, description)  # type: ignore[no-untyped-call]
        if workers:
            endpoint = RecordingEndpoint(endpoint)
            shared.append((endpoint, tls))
        factory = server.implicitTLS() if tls else server.factory
        StreamServerEndpointService(endpoint, factory).setServiceParent(service)  # type: ignore[no-untyped-call]
    metrics = options["metrics"]
    pool = None
    if workers:
        pool = WorkerPool(
            cast(IReactorProcess, reactor), options.arguments, shared, workers, metrics is not None
        )
        pool.setServiceParent(service)  # type: ignore[no-untyped-call]
        server.reloads.append(pool.hangup)
    if metrics is not None:
        # With workers, the sum of every process's counters.
        resource = MetricsResource(server.factory.metrics, None if pool is None else pool.metrics)
        site = Site(resource)  # type: ignore[no-untyped-call]
        strports.service(metrics, site, reactor).setServiceParent(service)  # type: ignore[no-untyped-call]
    ReloadOnHangup(cast(IReactorFromThreads, reactor), server.reloads).setServiceParent(service)  # type: ignore[no-untyped-call]
    return service


def raiseFileLimit() -> None:
    """
    Raise the soft limit of open files to the hard one, where allowed: every connection takes
    a descriptor, and distributions default to 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError) as e:
        _log.warn("Could not raise the open file limit from {soft}: {error}", soft=soft, error=e)
        return
    _log.info("Raised the open file limit from {soft} to {wanted}", soft=soft, wanted=wanted)


class ReloadOnHangup(Service):
    """
    Reloads files (certificates, password files) when the process gets C{SIGHUP}, as mail
    daemons do, without touching open sessions.
    """

    def __init__(
        self, reactor: IReactorFromThreads, reloads: Sequence[Callable[[], object]]
    ) -> None:
        self._reactor = reactor
        self._reloads = reloads
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> Deferred[None] | None:
        signal.signal(signal.SIGHUP, self._previous)
        return super().stopService()  # type: ignore[no-any-return, no-untyped-call]

    def _hangup(self, signalNumber: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt the reactor anywhere: do the work in its loop.
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        _log.info("SIGHUP: reloading")
        for reload in self._reloads:
            reload()
