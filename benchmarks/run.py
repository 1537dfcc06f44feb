"""
The popd benchmark, in one command::

    python benchmarks/run.py [--quick] [--only SCENARIO] [--out DIR]

It starts popd (C{twistd -n --pidfile= popd ...}), Dovecot (Debian's C{dovecot-pop3d}, configured
here, on loopback) and C{twisted.mail.pop3}, each over its own copy of the same generated Maildirs
and the same passwd-file, runs every scenario against each of them in turn, and prints the
absolute numbers with the ratios popd/Dovecot and popd/twisted.mail, also saved as JSON and drawn
as a PNG chart.  See C{benchmarks/README.rst} for what each scenario measures.

It needs only popd installed (C{pip install .}: the chart is drawn with the standard library),
Dovecot for its part (C{apt-get install dovecot-pop3d}), and root (Dovecot drops privileges).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

import fixtures
import pngchart
import servers
from pop3load import (
    Account,
    Batch,
    LoadResult,
    POP3Error,
    clientTLSContext,
    closeAll,
    logInAll,
    openIdle,
    runSessions,
    timeCommands,
    timeRetrieve,
)

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = ("popd", "popd-2w", "dovecot", "twisted.mail")
#: popd with --workers 2, run in the session scenarios only, to show how it scales to 2 cores.
WORKERS_SERVER = "popd-2w"
WORKERS_SCENARIOS = ("sessions", "tls")
# The logins timed in the maildrop scenario (see Benchmark.scenario_maildrop).
MAILDROP_LOGINS = ("cold", "warm", "pagedOut")
SCENARIOS = ("ceiling", "sessions", "tls", "retr", "idle", "maildrop")
COLOURS: dict[str, pngchart.Colour] = {
    "popd": (31, 119, 180),
    "popd-2w": (23, 190, 207),
    "dovecot": (214, 39, 40),
    "twisted.mail": (127, 127, 127),
}
_MB = 1_000_000


@dataclass(frozen=True)
class Settings:
    """
    What to run, and how long: from the command line.

    @ivar clients: concurrent clients in the session scenarios, each with its own maildrop.
    @ivar messages: messages delivered to each client's maildrop before each session.
    @ivar messageSize: their size in octets (with LF line ends).
    @ivar warmup: seconds of load before the measurement window of a session scenario.
    @ivar duration: seconds of the measurement window.
    @ivar retrOctets: the size of the large message, in octets (with LF line ends).
    @ivar retrRepeat: how many times it is retrieved (the median rate is reported).
    @ivar idle: connections held open in the idle scenario.
    @ivar maildrop: messages in the large maildrop.
    @ivar maildropRounds: how many times each server's copy of it is made and listed (the
        medians are reported).
    @ivar scheme: how passwords are stored, for both popd and Dovecot.
    """

    servers: tuple[str, ...]
    scenarios: tuple[str, ...]
    out: str
    quick: bool
    clients: int
    messages: int
    messageSize: int
    warmup: float
    duration: float
    retrOctets: int
    retrRepeat: int
    idle: int
    maildrop: int
    maildropRounds: int
    scheme: str
    profile: bool
    popdOptions: tuple[str, ...]
    keep: bool


def parseSettings(argv: Sequence[str]) -> Settings:
    """
    Parse the command line.
    """
    parser = argparse.ArgumentParser(
        description="Benchmark popd against Dovecot and twisted.mail.pop3 on loopback.",
        epilog="Scenarios: " + ", ".join(SCENARIOS) + ". See benchmarks/README.rst.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short windows and small sizes: a smoke test (~1 min)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        metavar="SCENARIO",
        help="run only this scenario (repeatable): " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated servers to measure (default: all three)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join(HERE, "results"),
        help="where latest.json, latest.txt and latest.png go (default: benchmarks/results)",
    )
    parser.add_argument("--duration", type=float, help="seconds measured per session run")
    parser.add_argument("--idle", type=int, help="connections in the idle scenario")
    parser.add_argument("--maildrop", type=int, help="messages in the large maildrop")
    parser.add_argument(
        "--scheme",
        choices=fixtures.SCHEMES,
        default="SHA512-CRYPT",
        help="password storage scheme, for popd and Dovecot alike (default SHA512-CRYPT)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run popd under cProfile: profile-SCENARIO.pstats and .txt in --out",
    )
    parser.add_argument(
        "--popd-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="an extra popd option, such as --popd-option=--timeout=900 (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    options = parser.parse_args(argv)
    chosen = tuple(name.strip() for name in options.servers.split(",") if name.strip())
    unknown = set(chosen) - set(SERVERS)
    if unknown or not chosen:
        parser.error(f"--servers takes some of {', '.join(SERVERS)}")
    quick = options.quick
    return Settings(
        servers=tuple(name for name in SERVERS if name in chosen),
        scenarios=tuple(s for s in SCENARIOS if s in (options.only or SCENARIOS)),
        out=options.out,
        quick=quick,
        clients=16,
        messages=20,
        messageSize=4096,
        warmup=1.0 if quick else 2.0,
        duration=options.duration or (3.0 if quick else 15.0),
        retrOctets=50 * _MB,
        retrRepeat=1 if quick else 5,
        idle=options.idle or (200 if quick else 1000),
        maildrop=options.maildrop or (5000 if quick else 50_000),
        maildropRounds=1 if quick else 5,
        scheme=options.scheme,
        profile=options.profile,
        popdOptions=tuple(options.popd_option),
        keep=options.keep,
    )


def log(message: str) -> None:
    """
    Report progress on standard error.
    """
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


class Fixtures:
    """
    The shared files of one run: certificate, passwd-file and message templates, made once in
    the working directory; and each scenario's copy of the Maildirs for each server.
    """

    def __init__(self, directory: str, settings: Settings) -> None:
        self.directory = directory
        self.settings = settings
        self.certificate = os.path.join(directory, "cert.pem")
        self.key = os.path.join(directory, "key.pem")
        self.passwd = os.path.join(directory, "passwd")
        self.clients = fixtures.userNames("client", settings.clients)
        self.idleUsers = fixtures.userNames("idle", settings.idle)
        self.retrUser = "retr"
        self.maildropUser = "maildrop"
        # The same maildrop, for a first login once its messages are paged out.
        self.pagedOutUser = "pagedout"
        fixtures.writeCertificate(self.certificate, self.key)
        fixtures.writePasswd(
            self.passwd,
            [*self.clients, *self.idleUsers, self.retrUser, self.maildropUser, self.pagedOutUser],
            settings.scheme,
        )
        self.batch = fixtures.makeBatch(
            os.path.join(directory, "templates", "batch"), settings.messages, settings.messageSize
        )
        self._large: Batch | None = None
        self._maildrop: list[str] | None = None

    def large(self) -> Batch:
        """
        The large message (made on first use): byte-stuffing needed on one line in a thousand.
        """
        if self._large is None:
            text = fixtures.messageText(self.settings.retrOctets, 0, stuffedEvery=1000)
            directory = os.path.join(self.directory, "templates", "large")
            paths = fixtures.writeTemplates(directory, [text])
            self._large = Batch(paths, [fixtures.transmittedOctets(text)])
        return self._large

    def maildropTemplates(self) -> list[str]:
        """
        The messages of the large maildrop (made on first use): 1 to 4 KB each.
        """
        if self._maildrop is None:
            texts = [
                fixtures.messageText(1024 + (seed * 7919) % 3072, seed)
                for seed in range(self.settings.maildrop)
            ]
            self._maildrop = fixtures.writeTemplates(
                os.path.join(self.directory, "templates", "maildrop"), texts
            )
        return self._maildrop

    def serverDirectory(self, scenario: str, server: str) -> str:
        """
        A fresh directory for one server in one scenario: its logs and its Maildirs.
        """
        path = os.path.join(self.directory, scenario, server)
        os.makedirs(path)
        return path

    def start(
        self, scenario: str, name: str, users: fixtures.Users, directory: str, connections: int
    ) -> servers.Server:
        """
        Start server C{name} over the Maildirs of C{users}.

        @param connections: how many simultaneous connections it must hold.
        """
        settings = self.settings
        server: servers.Server
        if name in ("popd", WORKERS_SERVER):
            profile = os.path.join(directory, "popd.pstats") if settings.profile else None
            workers = ["--workers", "2"] if name == WORKERS_SERVER else []
            server = servers.popd(
                directory,
                users.maildirTemplate(),
                self.passwd,
                self.certificate,
                self.key,
                [*settings.popdOptions, *workers],
                profile,
            )
        elif name == "dovecot":
            servers.giveToMailUser(users.mailRoot)
            server = servers.dovecot(
                directory, users.mailRoot, self.passwd, self.certificate, self.key, connections
            )
        else:
            server = servers.twistedMail(
                directory, users.maildirTemplate(), self.passwd, self.certificate, self.key
            )
        server.start()
        return server


def stopServer(server: servers.Server, scenario: str, fixtures_: Fixtures) -> None:
    """
    Stop a server; for a profiled popd, save its profile in the output directory, with a
    summary of its top functions.
    """
    server.stop()
    if server.name != "popd" or not fixtures_.settings.profile:
        return
    source = os.path.join(fixtures_.directory, scenario, "popd", "popd.pstats")
    if not os.path.exists(source):
        log(f"no profile was written for {scenario}")
        return
    import pstats

    out = fixtures_.settings.out
    target = os.path.join(out, f"profile-{scenario}.pstats")
    shutil.copyfile(source, target)
    with open(os.path.join(out, f"profile-{scenario}.txt"), "w", encoding="utf-8") as f:
        stats = pstats.Stats(target, stream=f)
        stats.strip_dirs()
        for order in ("tottime", "cumulative"):
            f.write(f"\n===== popd, scenario {scenario}, top 40 by {order} =====\n")
            stats.sort_stats(order).print_stats(40)
    log(f"profile of popd in {scenario}: {target} (summary in profile-{scenario}.txt)")


def loadSummary(result: LoadResult, clients: int) -> dict[str, Any]:
    """
    The JSON form of a session run.
    """
    sessions = result.sessions or 1
    return {
        "sessionsPerSecond": round(result.rate, 2),
        "sessions": result.sessions,
        "seconds": round(result.seconds, 3),
        "concurrentClients": clients,
        "latencyP50Ms": round(result.percentile(0.5) * 1000, 2),
        "latencyP99Ms": round(result.percentile(0.99) * 1000, 2),
        "serverCpuMsPerSession": round(result.serverCpu * 1000 / sessions, 3),
        "serverCpuCores": round(result.serverCpu / result.seconds, 3) if result.seconds else 0,
        "generatorCpuMsPerSession": round(result.generatorCpu * 1000 / sessions, 3),
        "generatorCpuCores": round(result.generatorCpu / result.seconds, 3)
        if result.seconds
        else 0,
        # CPU that neither the server nor the generator used: other processes on the machine.
        "otherCpuCores": round(
            (result.machineCpu - result.serverCpu - result.generatorCpu) / result.seconds, 3
        )
        if result.seconds
        else 0,
        "errors": len(result.errors),
        "errorSamples": result.errors[:5],
        "tls": result.tls,
    }


class RssSampler:
    """
    Samples the resident set of one process every few milliseconds in a thread, to find its
    peak during an operation (VmHWM only keeps the peak of the process's whole life).
    """

    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self.pid = pid
        self.peak = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, servers.statusKiB(self.pid, "VmRSS"))
            time.sleep(self._interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        """
        Stop sampling.

        @return: the peak VmRSS seen, in KiB.
        """
        self._stop.set()
        self._thread.join()
        return self.peak


def _sessionProcess(server: servers.Server) -> int:
    """
    The process that serves the one logged-in session of C{server}: for Dovecot, its
    C{dovecot/pop3} process (a process per logged-in session); for the others, the server.
    """
    if server.name != "dovecot":
        return server.pid
    found = [
        pid for pid in server.tree() if servers.commandLine(pid).split(" ")[0] == "dovecot/pop3"
    ]
    if len(found) != 1:
        raise servers.ServerFailed(f"expected one dovecot/pop3 process, found {len(found)}")
    return found[0]


class Benchmark:
    """
    Runs the scenarios and collects their results.
    """

    def __init__(self, settings: Settings, fixtures_: Fixtures) -> None:
        self.settings = settings
        self.fixtures = fixtures_
        self.results: dict[str, dict[str, Any]] = {}

    def run(self) -> None:
        """
        Run the scenarios chosen, in the order of L{SCENARIOS}.
        """
        methods: dict[str, Callable[[], dict[str, Any]]] = {
            "ceiling": self.scenario_ceiling,
            "sessions": self.scenario_sessions,
            "tls": self.scenario_tls,
            "retr": self.scenario_retr,
            "idle": self.scenario_idle,
            "maildrop": self.scenario_maildrop,
        }
        for scenario in self.settings.scenarios:
            log(f"scenario {scenario}")
            self.results[scenario] = methods[scenario]()

    def _eachServer(
        self,
        scenario: str,
        prepare: Callable[[fixtures.Users], None],
        measure: Callable[[servers.Server, fixtures.Users], dict[str, Any]],
        connections: int = 100,
    ) -> dict[str, Any]:
        """
        For each server in turn: prepare its copy of the Maildirs, start it, measure, stop it.
        A server that fails is reported as such and the others still run.
        """
        results: dict[str, Any] = {}
        for name in self.settings.servers:
            if name == WORKERS_SERVER and scenario not in WORKERS_SCENARIOS:
                continue
            directory = self.fixtures.serverDirectory(scenario, name)
            users = fixtures.Users(os.path.join(directory, "mail"))
            prepare(users)
            # What prepare wrote reaches the disk now: writing back 50,000 fresh links during
            # a measurement would slow whichever server runs then, not all of them.
            os.sync()
            server: servers.Server | None = None
            try:
                server = self.fixtures.start(scenario, name, users, directory, connections)
                results[name] = measure(server, users)
                server.checkAlive()
            except (servers.ServerFailed, POP3Error, OSError, ValueError) as e:
                log(f"  {name}: FAILED: {e}")
                results[name] = {"error": str(e)}
            finally:
                if server is not None:
                    stopServer(server, scenario, self.fixtures)
            log(f"  {name}: {_brief(results[name])}")
        return results

    def _prepareClients(self, users: fixtures.Users) -> None:
        for user in self.fixtures.clients:
            fixtures.linkInto(users.account(user).maildir, self.fixtures.batch.templates)

    def _sessions(self, scenario: str, tls: bool) -> dict[str, Any]:
        settings = self.settings

        def measure(server: servers.Server, users: fixtures.Users) -> dict[str, Any]:
            address = server.tlsAddress if tls else server.address
            assert address is not None
            result = runSessions(
                address,
                clientTLSContext() if tls else None,
                [users.account(user) for user in self.fixtures.clients],
                self.fixtures.batch,
                settings.warmup,
                settings.duration,
                server.cpuSeconds,
            )
            return loadSummary(result, settings.clients)

        return self._eachServer(scenario, self._prepareClients, measure)

    def scenario_sessions(self) -> dict[str, Any]:
        """
        (a) Sessions per second, 16 concurrent clients, plain TCP.
        """
        return self._sessions("sessions", tls=False)

    def scenario_tls(self) -> dict[str, Any]:
        """
        (b) The same over implicit TLS, a full handshake per session.
        """
        return self._sessions("tls", tls=True)

    def scenario_retr(self) -> dict[str, Any]:
        """
        (c) RETR of one large message: MB/s, and the resident memory of the process serving
        the session before, at its peak during, and after the transfers.
        """
        large = self.fixtures.large()
        settings = self.settings

        def prepare(users: fixtures.Users) -> None:
            fixtures.linkInto(users.account(self.fixtures.retrUser).maildir, large.templates)

        def measure(server: servers.Server, users: fixtures.Users) -> dict[str, Any]:
            sampled: dict[str, Any] = {}

            def beforeFirst() -> None:
                pid = _sessionProcess(server)
                sampled["pid"] = pid
                sampled["process"] = servers.commandLine(pid)
                sampled["rssBefore"] = servers.statusKiB(pid, "VmRSS")
                sampled["hwmBefore"] = servers.statusKiB(pid, "VmHWM")
                sampler = RssSampler(pid)
                sampled["sampler"] = sampler
                sampler.start()

            def afterLast() -> None:
                sampled["hwmAfter"] = servers.statusKiB(sampled["pid"], "VmHWM")

            try:
                times = timeRetrieve(
                    server.address,
                    users.account(self.fixtures.retrUser),
                    large.octets,
                    settings.retrRepeat,
                    beforeFirst,
                    afterLast,
                )
            finally:
                sampler = sampled.get("sampler")
                peak = sampler.stop() if sampler is not None else 0
            rates = [large.octets / _MB / t for t in times]
            return {
                "mbPerSecond": round(statistics.median(rates), 1),
                "runsMbPerSecond": [round(rate, 1) for rate in rates],
                "octets": large.octets,
                "process": sampled["process"],
                "rssBeforeKiB": sampled["rssBefore"],
                "rssPeakKiB": peak,
                "rssGrowthKiB": max(0, peak - sampled["rssBefore"]),
                "hwmGrowthKiB": max(0, sampled["hwmAfter"] - sampled["hwmBefore"]),
            }

        return self._eachServer("retr", prepare, measure)

    def scenario_idle(self) -> dict[str, Any]:
        """
        (d) Idle connections: the server's memory (PSS summed over its processes) with none,
        with N connections that only got the greeting, then with the same N logged in (each
        as its own user, on its own maildrop).
        """
        idleUsers = self.fixtures.idleUsers
        count = len(idleUsers)
        small = self.fixtures.batch.templates[:1]

        def prepare(users: fixtures.Users) -> None:
            for user in idleUsers:
                fixtures.linkInto(users.account(user).maildir, small)

        def measure(server: servers.Server, users: fixtures.Users) -> dict[str, Any]:
            time.sleep(1)
            baseline = server.memory()
            connections = openIdle(server.address, count)
            try:
                time.sleep(1)
                preLogin = server.memory()
                logInAll(connections, [users.account(user) for user in idleUsers])
                time.sleep(1)
                loggedIn = server.memory()
            finally:
                closeAll(connections)
            return {
                "connections": count,
                "baseline": asdict(baseline),
                "preLogin": asdict(preLogin),
                "loggedIn": asdict(loggedIn),
                "preLoginKiBPerConnection": round((preLogin.pss - baseline.pss) / count, 2),
                "loggedInKiBPerConnection": round((loggedIn.pss - baseline.pss) / count, 2),
                "preLoginRssKiBPerConnection": round((preLogin.rss - baseline.rss) / count, 2),
                "loggedInRssKiBPerConnection": round((loggedIn.rss - baseline.rss) / count, 2),
            }

        return self._eachServer("idle", prepare, measure, connections=count)

    def scenario_maildrop(self) -> dict[str, Any]:
        """
        (e) A large maildrop: the time of USER, PASS, STAT, UIDL, LIST and QUIT, at the first
        login (no index of the server's yet: "cold") and at the three next ones ("warm"), with
        the messages in the page cache, as just delivered mail is; then at the first login on a
        copy of it whose messages were paged out ("pagedOut": as after a restart).  Each round
        makes new copies of the maildrop for each server and starts it anew; the medians over
        the rounds are reported, since one first login is one sample.
        """
        templates = self.fixtures.maildropTemplates()
        count = len(templates)

        def prepare(users: fixtures.Users) -> None:
            for user in (self.fixtures.maildropUser, self.fixtures.pagedOutUser):
                fixtures.linkInto(users.account(user).maildir, templates)

        def measure(server: servers.Server, users: fixtures.Users) -> dict[str, Any]:
            account = users.account(self.fixtures.maildropUser)
            runs = {
                login: [timeCommands(server.address, account, count) for _ in range(repeat)]
                for login, repeat in (("cold", 1), ("warm", 3))
            }
            fixtures.pageOut(templates)
            pagedOut = users.account(self.fixtures.pagedOutUser)
            runs["pagedOut"] = [timeCommands(server.address, pagedOut, count)]
            return {"messages": count, "runs": runs}

        rounds = [
            self._eachServer("maildrop" if n == 0 else f"maildrop-{n + 1}", prepare, measure)
            for n in range(self.settings.maildropRounds)
        ]
        return {name: _maildropMedians([r[name] for r in rounds]) for name in rounds[0]}

    def scenario_ceiling(self) -> dict[str, Any]:
        """
        The generator's own ceiling: the session scenarios and RETR against the trivial server,
        which answers from memory.
        """
        directory = self.fixtures.serverDirectory("ceiling", "trivial")
        users = fixtures.Users(os.path.join(directory, "mail"))
        self._prepareClients(users)
        result: dict[str, Any] = {}
        server = servers.trivial(
            directory, self.fixtures.certificate, self.fixtures.key, self.fixtures.batch.sizes
        )
        server.start()
        try:
            for name, tls in (("sessions", False), ("tls", True)):
                address = server.tlsAddress if tls else server.address
                assert address is not None
                load = runSessions(
                    address,
                    clientTLSContext() if tls else None,
                    [users.account(user) for user in self.fixtures.clients],
                    self.fixtures.batch,
                    self.settings.warmup,
                    self.settings.duration,
                    server.cpuSeconds,
                )
                result[name] = loadSummary(load, self.settings.clients)
                log(f"  trivial {name}: {_brief(result[name])}")
        finally:
            server.stop()
        large = self.fixtures.large()
        server = servers.trivial(
            directory, self.fixtures.certificate, self.fixtures.key, [large.octets]
        )
        server.start()
        try:
            times = timeRetrieve(
                server.address,
                Account(b"retr", fixtures.PASSWORD, ""),
                large.octets,
                max(3, self.settings.retrRepeat),
                lambda: None,
                lambda: None,
            )
        finally:
            server.stop()
        result["retrMbPerSecond"] = round(max(large.octets / _MB / t for t in times), 1)
        log(f"  trivial RETR: {result['retrMbPerSecond']} MB/s")
        return result


def _maildropMedians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """
    @return: one server's result of the maildrop scenario: the median time of each command at
        the first logins and at the next ones, over all the rounds (or the first error).
    """
    for result in rounds:
        if "error" in result:
            return result
    merged: dict[str, Any] = {"messages": rounds[0]["messages"], "rounds": len(rounds)}
    for login in MAILDROP_LOGINS:
        runs = [times for result in rounds for times in result["runs"][login]]
        for times in runs:
            times["PASS+STAT"] = times["PASS"] + times["STAT"]
        merged[login] = {
            name: round(statistics.median(times[name] for times in runs), 4) for name in runs[0]
        }
        merged[login]["runsPASS+STAT"] = [round(times["PASS+STAT"], 4) for times in runs]
    return merged


def _brief(result: dict[str, Any]) -> str:
    """
    A one-line progress summary of a result.
    """
    if "error" in result:
        return "error"
    for key in ("sessionsPerSecond", "mbPerSecond", "loggedInKiBPerConnection"):
        if key in result:
            extra = f", {result['errors']} errors" if result.get("errors") else ""
            return f"{key}={result[key]}{extra}"
    if "runs" in result:
        cold, warm, pagedOut = (result["runs"][login][0] for login in MAILDROP_LOGINS)
        return (
            f"cold PASS+STAT={cold['PASS'] + cold['STAT']:.4f}s"
            f" warm={warm['PASS'] + warm['STAT']:.4f}s"
            f" paged out={pagedOut['PASS'] + pagedOut['STAT']:.4f}s"
        )
    return json.dumps(result)[:100]


@dataclass(frozen=True)
class Metric:
    """
    One line of the summary: a number per server, the ratios, the issue's target.

    @ivar higherIsBetter: which way is better.
    @ivar target: the target of the issue, in words (empty for none).
    @ivar met: whether popd meets the target, from popd's and Dovecot's values.
    """

    scenario: str
    title: str
    unit: str
    value: Callable[[dict[str, Any]], float | None]
    higherIsBetter: bool
    target: str = ""
    met: Callable[[float, float | None], bool] | None = None


def _ratio(minimum: float) -> Callable[[float, float | None], bool]:
    return lambda popd, dovecot: dovecot is not None and dovecot > 0 and popd / dovecot >= minimum


def _atMostRatio(maximum: float) -> Callable[[float, float | None], bool]:
    return lambda popd, dovecot: dovecot is not None and dovecot > 0 and popd / dovecot <= maximum


def _key(*path: str) -> Callable[[dict[str, Any]], float | None]:
    def value(result: dict[str, Any]) -> float | None:
        for part in path:
            if not isinstance(result, dict) or part not in result:
                return None
            result = result[part]
        return float(result) if isinstance(result, (int, float)) else None

    return value


METRICS = (
    Metric(
        "sessions",
        "sessions/s, 16 clients",
        "/s",
        _key("sessionsPerSecond"),
        True,
        ">= 2x dovecot",
        _ratio(2),
    ),
    Metric("sessions", "server CPU per session", "ms", _key("serverCpuMsPerSession"), False),
    Metric(
        "tls",
        "TLS sessions/s, 16 clients",
        "/s",
        _key("sessionsPerSecond"),
        True,
        ">= 1.5x dovecot",
        _ratio(1.5),
    ),
    Metric("tls", "server CPU per TLS session", "ms", _key("serverCpuMsPerSession"), False),
    Metric("retr", "RETR 50 MB", "MB/s", _key("mbPerSecond"), True, ">= 1x dovecot", _ratio(1)),
    Metric(
        "retr",
        "RETR server RSS growth",
        "KiB",
        _key("rssGrowthKiB"),
        False,
        "< 10 MiB",
        lambda popd, _: popd < 10 * 1024,
    ),
    Metric("idle", "memory per pre-login conn", "KiB", _key("preLoginKiBPerConnection"), False),
    Metric(
        "idle",
        "memory per logged-in conn",
        "KiB",
        _key("loggedInKiBPerConnection"),
        False,
        "<= 4 KiB",
        lambda popd, _: popd <= 4,
    ),
    Metric(
        "maildrop",
        "maildrop PASS+STAT, cold",
        "s",
        _key("cold", "PASS+STAT"),
        False,
        "<= 0.25x dovecot",
        _atMostRatio(0.25),
    ),
    Metric(
        "maildrop",
        "maildrop PASS+STAT, warm",
        "s",
        _key("warm", "PASS+STAT"),
        False,
        "<= 0.25x dovecot",
        _atMostRatio(0.25),
    ),
    Metric(
        "maildrop",
        "maildrop UIDL, cold",
        "s",
        _key("cold", "UIDL"),
        False,
        "<= 1x dovecot",
        _atMostRatio(1),
    ),
    Metric(
        "maildrop",
        "maildrop UIDL, warm",
        "s",
        _key("warm", "UIDL"),
        False,
        "<= 1x dovecot",
        _atMostRatio(1),
    ),
    Metric("maildrop", "maildrop LIST, cold", "s", _key("cold", "LIST"), False),
    Metric("maildrop", "maildrop LIST, warm", "s", _key("warm", "LIST"), False),
    Metric("maildrop", "maildrop PASS+STAT, paged out", "s", _key("pagedOut", "PASS+STAT"), False),
)


def summarise(results: dict[str, dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """
    The summary lines of the metrics whose scenario ran: values, ratios, target.
    """
    lines = []
    for metric in METRICS:
        if metric.scenario not in results:
            continue
        values = {
            name: metric.value(results[metric.scenario].get(name, {})) for name in settings.servers
        }
        popd = values.get("popd")
        ratios = {}
        for mine in ("popd", WORKERS_SERVER):
            for other in ("dovecot", "twisted.mail"):
                value, reference = values.get(mine), values.get(other)
                if value is not None and reference:
                    ratios[f"{mine}/{other}"] = round(value / reference, 3)
        if popd is not None and values.get(WORKERS_SERVER) is not None:
            ratios["popd-2w/popd"] = round(values[WORKERS_SERVER] / popd, 3)
        # The target is met by popd as an admin can run it: with or without --workers.
        candidates = [v for v in (popd, values.get(WORKERS_SERVER)) if v is not None]
        best = None
        if candidates:
            best = max(candidates) if metric.higherIsBetter else min(candidates)
        met = None
        if metric.met is not None and best is not None:
            met = metric.met(best, values.get("dovecot"))
        lines.append(
            {
                "scenario": metric.scenario,
                "metric": metric.title,
                "unit": metric.unit,
                "higherIsBetter": metric.higherIsBetter,
                "values": values,
                "ratios": ratios,
                "target": metric.target,
                "met": met,
            }
        )
    return lines


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(summary: list[dict[str, Any]], settings: Settings) -> str:
    """
    The summary as a text table.
    """
    header = [
        "metric", "unit", *settings.servers,
        "popd/dovecot", "popd-2w/dovecot", "popd/twisted", "target", "met",
    ]  # fmt: skip
    rows = [header]
    for line in summary:
        met = {True: "yes", False: "NO", None: ""}[line["met"]]
        rows.append(
            [
                line["metric"],
                line["unit"],
                *(_number(line["values"].get(name)) for name in settings.servers),
                _ratio_text(line["ratios"].get("popd/dovecot")),
                _ratio_text(line["ratios"].get("popd-2w/dovecot")),
                _ratio_text(line["ratios"].get("popd/twisted.mail")),
                line["target"],
                met,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i in (0, 1, len(header) - 2) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


def _ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3f}x" if ratio < 0.1 else f"{ratio:.2f}x"


def chart(summary: list[dict[str, Any]], meta: dict[str, Any], settings: Settings) -> bytes:
    """
    The summary as a PNG bar chart: a panel per metric, a bar per server.
    """
    panels = []
    for line in summary:
        better = "higher is better" if line["higherIsBetter"] else "lower is better"
        note = f"({better}{'; target ' + line['target'] if line['target'] else ''})"
        bars = []
        for name in settings.servers:
            value = line["values"].get(name)
            shown = "-" if value is None else f"{_number(value)} {line['unit']}"
            ratio = line["ratios"].get(f"popd/{name}")
            if ratio is not None:
                shown += f"  (popd/{name} {_ratio_text(ratio)})"
            bars.append((name, value, shown))
        panels.append(pngchart.Panel(f"{line['metric']} ({line['unit']})", note, bars))
    subtitle = (
        f"{meta['date'][:16]}  {meta['cpus']} cpus  {' '.join(meta['dovecot'].split()[:2])}  "
        f"checkout {meta['checkoutCommit'][:8]}  popd source {meta['popdSourceDigest']}"
    )
    return pngchart.barChart("popd benchmark, loopback", subtitle, panels, COLOURS)


def _git(*args: str) -> str:
    """
    A read-only git query in the checkout holding this script ("" when it is not one).
    """
    try:
        return subprocess.run(
            ["git", "-C", HERE, *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def sourceDigest(directory: str) -> str:
    """
    A digest of the Python files under C{directory}: tells which popd code was measured, also
    when it was installed from a copy (compare with the digest of a checkout's C{popd/}).
    """
    digest = hashlib.sha256()
    for root, directories, files in os.walk(directory):
        directories.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    digest.update(os.path.relpath(path, directory).encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


def metadata(settings: Settings) -> dict[str, Any]:
    """
    What the run ran on and with.
    """
    import popd
    import twisted

    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpuModel": model,
        "memoryGiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "popdModule": os.path.dirname(popd.__file__),
        "popdSourceDigest": sourceDigest(os.path.dirname(popd.__file__)),
        "checkoutCommit": _git("rev-parse", "HEAD") or "unknown",
        "checkoutPopdModified": bool(_git("status", "--porcelain", "--", "popd")),
        "checkoutPopdDigest": sourceDigest(os.path.join(os.path.dirname(HERE), "popd")),
        "dovecot": "dovecot " + servers.dovecotVersion(),
        "settings": asdict(settings),
    }


def _raiseInterrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str]) -> int:
    settings = parseSettings(argv)
    if "dovecot" in settings.servers:
        if os.geteuid() != 0:
            log("Dovecot needs root: run as root, or give --servers popd,twisted.mail")
            return 2
        if not os.path.exists(servers.DOVECOT):
            log("Dovecot is not installed: apt-get install dovecot-pop3d")
            return 2
    # Every server holds two descriptors per idle connection, and popd a lock file per maildrop.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, _raiseInterrupt)
    os.makedirs(settings.out, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="popd-bench-")
    # Dovecot's unprivileged processes must reach the passwd-file and the Maildirs below.
    os.chmod(directory, 0o711)
    started = time.monotonic()
    try:
        log(f"working directory {directory}; preparing fixtures")
        benchmark = Benchmark(settings, Fixtures(directory, settings))
        meta = metadata(settings)
        benchmark.run()
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    finally:
        if settings.keep:
            log(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    meta["seconds"] = round(time.monotonic() - started, 1)
    summary = summarise(benchmark.results, settings)
    text = table(summary, settings)
    report = {"meta": meta, "summary": summary, "scenarios": benchmark.results}
    with open(os.path.join(settings.out, "latest.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with open(os.path.join(settings.out, "latest.txt"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(os.path.join(settings.out, "latest.png"), "wb") as f:
        f.write(chart(summary, meta, settings))
    print(text)
    ceiling = benchmark.results.get("ceiling")
    if ceiling:
        print(
            "\ngenerator ceiling (trivial server): "
            f"{ceiling['sessions']['sessionsPerSecond']} sessions/s "
            f"({ceiling['sessions']['generatorCpuMsPerSession']} ms generator CPU each), "
            f"{ceiling['tls']['sessionsPerSecond']} TLS sessions/s "
            f"({ceiling['tls']['generatorCpuMsPerSession']} ms each), "
            f"RETR {ceiling['retrMbPerSecond']} MB/s"
        )
    print(f"\nsaved in {settings.out}: latest.json, latest.txt, latest.png ({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
