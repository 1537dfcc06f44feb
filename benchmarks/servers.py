"""
The servers under test, started and stopped by the benchmark, and what it reads of their
processes in C{/proc}: memory (RSS and PSS, summed over the process tree) and CPU time.

Each server runs in its own session (process group), so that stopping it reaches every process it
started, and nothing else.  All listen on 127.0.0.1 only, on free ports chosen at start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pop3load import Connection, POP3Error

_HERE = os.path.dirname(os.path.abspath(__file__))
_TICKS = os.sysconf("SC_CLK_TCK")
#: Where Debian's dovecot-core installs the master.
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
#: The user Dovecot accesses mail as.
MAIL_USER = pwd.getpwnam("nobody")


def freePort() -> int:
    """
    A TCP port free on 127.0.0.1 now (the kernel's choice; another process could take it before
    the server binds it, which the benchmark would report as a failed start).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _parents() -> dict[int, int]:
    """
    The parent of every process, from C{/proc/PID/stat}.
    """
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces or parentheses itself.
        parents[int(entry)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    return parents


def processTree(root: int) -> list[int]:
    """
    C{root} and all its descendants alive now.
    """
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True)
class Memory:
    """
    The memory of a set of processes, in KiB.

    @ivar rss: the sum of their resident sets: counts pages shared between them once per
        process, so it overstates a multi-process server.
    @ivar pss: the sum of their proportional sets: a page shared by n processes counts 1/n in
        each, so the sum is what the set of processes really occupies.
    @ivar processes: how many processes were summed.
    """

    rss: int
    pss: int
    processes: int


def memoryOf(pids: Sequence[int]) -> Memory:
    """
    Sum the memory of C{pids} (those that ended meanwhile count for nothing).
    """
    rss = pss = counted = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                rollup = f.read()
        except OSError:
            continue
        counted += 1
        for line in rollup.splitlines():
            if line.startswith(b"Rss:"):
                rss += int(line.split()[1])
            elif line.startswith(b"Pss:"):
                pss += int(line.split()[1])
    return Memory(rss, pss, counted)


def statusKiB(pid: int, field: str) -> int:
    """
    A C{/proc/PID/status} value in KiB, such as C{VmRSS} or C{VmHWM} (0 once the process ended).
    """
    prefix = field.encode("ascii") + b":"
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(prefix):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpuSecondsOf(pids: Sequence[int]) -> float:
    """
    The CPU time used by C{pids}, user and system, including that of their children already
    reaped: a master that reaps its workers (Dovecot) accounts for processes that ended.
    """
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        # utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 12 to 15 after the name.
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / _TICKS


def commandLine(pid: int) -> str:
    """
    The command line (or process title) of C{pid}, arguments separated by spaces.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


class ServerFailed(Exception):
    """
    A server did not start, or died.
    """


class Server:
    """
    A server process (and its children) started for one scenario.

    @ivar name: how results call it: C{popd}, C{dovecot}, C{twisted.mail} or C{trivial}.
    @ivar address: its plain POP3 listener.
    @ivar tlsAddress: its implicit-TLS listener, if it has one.
    @ivar logPath: where its standard output and error go.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        address: tuple[str, int],
        tlsAddress: tuple[str, int] | None,
        logPath: str,
        stopTimeout: float = 15.0,
    ) -> None:
        self.name = name
        self.address = address
        self.tlsAddress = tlsAddress
        self.logPath = logPath
        self._argv = list(argv)
        self._stopTimeout = stopTimeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """
        The process started (for Dovecot, its master).
        """
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 60.0) -> None:
        """
        Start the server and wait until it greets a client.

        @raise ServerFailed: it exited, or did not greet in time.
        """
        with open(self.logPath, "ab") as log:
            self._process = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Its own directory: nothing is imported from, or written to, the checkout.
                cwd=os.path.dirname(self.logPath),
            )
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._process.poll() is not None:
                    raise ServerFailed(f"{self.name} exited at start: {self.logTail()}")
                try:
                    Connection.open(self.address, timeout=5).close()
                    return
                except (OSError, POP3Error):
                    if time.monotonic() > deadline:
                        raise ServerFailed(f"{self.name} did not start in {timeout}s") from None
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def checkAlive(self) -> None:
        """
        @raise ServerFailed: the server has exited.
        """
        if self._process is not None and self._process.poll() is not None:
            raise ServerFailed(f"{self.name} died: {self.logTail()}")

    def stop(self) -> None:
        """
        Stop the server: C{SIGTERM} to the process started, time to exit cleanly (popd's
        profile is written then), then C{SIGKILL} to whatever is left of its process group.
        Idempotent.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self._stopTimeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def tree(self) -> list[int]:
        """
        The server's processes alive now.
        """
        return processTree(self.pid)

    def memory(self) -> Memory:
        """
        The memory of all the server's processes now.
        """
        return memoryOf(self.tree())

    def cpuSeconds(self) -> float:
        """
        The CPU time the server's processes have used so far.
        """
        return cpuSecondsOf(self.tree())

    def logTail(self, lines: int = 15) -> str:
        """
        The end of the server's log, for error messages.
        """
        try:
            with open(self.logPath, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"


def twistdPath() -> str:
    """
    The C{twistd} script of the Python running the benchmark, so that the popd installed there
    is the one measured.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(beside):
        return beside
    found = shutil.which("twistd")
    if found is None:
        raise ServerFailed("twistd not found: install popd first (pip install .)")
    return found


def popd(
    directory: str,
    mailTemplate: str,
    passwd: str,
    certificate: str,
    key: str,
    extraOptions: Sequence[str] = (),
    profile: str | None = None,
) -> Server:
    """
    popd as its README runs it: C{twistd -n --pidfile= popd ...}, with a plain and an
    implicit-TLS listener.  The benchmark raises the per-address connection limit (every client
    comes from 127.0.0.1) and sets the failed-login delay to 0 (no login fails unless something
    is wrong).

    @param extraOptions: more popd options, appended (to try a setting).
    @param profile: when given, popd runs under C{cProfile} (see C{profile_twistd.py}), which
        writes its statistics to this path when popd stops.
    """
    port, tlsPort = freePort(), freePort()
    if profile is None:
        argv = [sys.executable, twistdPath()]
    else:
        argv = [sys.executable, os.path.join(_HERE, "profile_twistd.py"), profile]
    argv += [
        "-n",
        "--pidfile=",
        "popd",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--tls-listen",
        f"tcp:{tlsPort}:interface=127.0.0.1",
        "--tls-cert",
        certificate,
        "--tls-key",
        key,
        "--maildir",
        mailTemplate,
        "--passwd",
        passwd,
        "--max-connections-per-ip",
        "1000000",
        "--auth-failure-delay",
        "0",
        *extraOptions,
    ]
    return Server(
        "popd",
        argv,
        ("127.0.0.1", port),
        ("127.0.0.1", tlsPort),
        os.path.join(directory, "popd.log"),
        stopTimeout=60.0 if profile else 15.0,
    )


_DOVECOT_CONFIG = """\
# Written by benchmarks/run.py: Dovecot serving the benchmark's Maildirs on 127.0.0.1 only.
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
listen = 127.0.0.1
protocols = pop3
ssl = yes
ssl_cert = <{certificate}
ssl_key = <{key}
disable_plaintext_auth = no
default_internal_user = dovecot
default_login_user = dovenull
# Only raised so that the idle scenario can hold {connections} connections (Dovecot serves
# each pre-login and each logged-in connection with a process of its own, 100 at most by
# default); nothing else differs from Debian's defaults.
default_process_limit = {processes}
default_client_limit = {clients}
mail_location = maildir:{mailRoot}/%u/Maildir
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mailRoot}/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = {tlsPort}
    ssl = yes
  }}
}}
"""


def dovecot(
    directory: str,
    mailRoot: str,
    passwd: str,
    certificate: str,
    key: str,
    connections: int,
) -> Server:
    """
    Debian's Dovecot with a configuration of its own in C{directory} (its own C{base_dir}, so
    that it never touches a system instance): POP3 only, plain and implicit TLS, the same
    passwd-file as popd, Maildirs in C{mailRoot}.

    Mail is accessed as L{MAIL_USER}: Dovecot refuses UID 0 from a userdb whatever
    C{first_valid_uid} says, so the directories under C{mailRoot} must belong to that user (see
    L{giveToMailUser}); the messages only need to be readable.

    @param connections: how many simultaneous connections it must be able to hold.
    """
    port, tlsPort = freePort(), freePort()
    configPath = os.path.join(directory, "dovecot.conf")
    processes = max(1000, connections + 100)
    with open(configPath, "w", encoding="utf-8") as f:
        f.write(
            _DOVECOT_CONFIG.format(
                directory=directory,
                certificate=certificate,
                key=key,
                connections=connections,
                processes=processes,
                clients=4 * processes,
                mailRoot=mailRoot,
                uid=MAIL_USER.pw_uid,
                gid=MAIL_USER.pw_gid,
                passwd=passwd,
                port=port,
                tlsPort=tlsPort,
            )
        )
    return Server(
        "dovecot",
        [DOVECOT, "-F", "-c", configPath],
        ("127.0.0.1", port),
        ("127.0.0.1", tlsPort),
        os.path.join(directory, "dovecot-master.log"),
    )


def giveToMailUser(mailRoot: str) -> None:
    """
    Make L{MAIL_USER} the owner of every directory under C{mailRoot}, so that Dovecot can move
    and remove messages and write its indexes there.  Files are left alone: they are hard links
    shared with the other servers' copies, and only need to be readable.
    """
    for path, _, _ in os.walk(mailRoot):
        os.chown(path, MAIL_USER.pw_uid, MAIL_USER.pw_gid)


def dovecotVersion() -> str:
    """
    What C{dovecot --version} says, or why it could not say.
    """
    try:
        return subprocess.run(
            [DOVECOT, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        return f"unavailable ({e})"


def twistedMail(
    directory: str, mailTemplate: str, passwd: str, certificate: str, key: str
) -> Server:
    """
    C{twisted.mail.pop3} serving the same Maildirs and users: see C{twistedmail_server.py}.
    """
    port, tlsPort = freePort(), freePort()
    argv = [
        sys.executable,
        os.path.join(_HERE, "twistedmail_server.py"),
        "--port",
        str(port),
        "--tls-port",
        str(tlsPort),
        "--certificate",
        certificate,
        "--key",
        key,
        "--maildir",
        mailTemplate,
        "--passwd",
        passwd,
        "--log",
        os.path.join(directory, "twisted-mail-sessions.log"),
    ]
    return Server(
        "twisted.mail",
        argv,
        ("127.0.0.1", port),
        ("127.0.0.1", tlsPort),
        os.path.join(directory, "twisted-mail.log"),
    )


def trivial(directory: str, certificate: str, key: str, messageOctets: Sequence[int]) -> Server:
    """
    The trivial server that measures the load generator's own ceiling: see
    C{trivial_server.py}.
    """
    port, tlsPort = freePort(), freePort()
    argv = [
        sys.executable,
        os.path.join(_HERE, "trivial_server.py"),
        "--port",
        str(port),
        "--tls-port",
        str(tlsPort),
        "--certificate",
        certificate,
        "--key",
        key,
        "--sizes",
        ",".join(map(str, messageOctets)),
    ]
    return Server(
        "trivial",
        argv,
        ("127.0.0.1", port),
        ("127.0.0.1", tlsPort),
        os.path.join(directory, "trivial.log"),
    )
