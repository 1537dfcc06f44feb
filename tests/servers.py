"""
Real C{twistd popd} server processes for the fault, abuse and end-to-end reliability tests.

Each L{Sandbox} is a directory of its own: a Maildir root, a plaintext passwd-file, the log of
its servers, and the control file of a fault injector.  L{ServerProcess} runs
C{twistd -n --pidfile= popd} on a free loopback port, started, stopped, SIGTERMed or SIGKILLed by
the test; L{Client} speaks POP3 to it over a blocking socket, byte-exact.

Faults are injected at the OS-call boundary inside the server process: the launcher imports a
small module (L{_HOOK}, written into the sandbox) that wraps C{os.open}, C{os.unlink},
C{os.rename}, C{os.replace}, C{os.fsync}, C{os.read} and the writes of files opened with
C{open()} under the Maildir root.  Before and after each such call it reads the sandbox's
control file: a rule there can make the Nth matching call raise an C{OSError} (C{ENOSPC},
C{EIO}, ...) or SIGKILL the process, before or after the call.  With no control file nothing is
changed.  Every fault that fires is recorded, so that a test can check it really happened.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

import popd
from tests.support import CRLF, RawConnection, canonical, unstuff

HOST = "127.0.0.1"

# The directory holding the popd package (and twisted/plugins/popd_plugin.py in a checkout).
_SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(popd.__file__)))

#: How long a server may take to start, a response to come, a process to exit.
TIMEOUT = 30.0

# The OS calls that change the disk: the steps of a commit or of an index write.
MUTATING = ("create", "write", "fsync", "rename", "replace", "unlink", "mkdir", "rmdir")

_HOOK = r'''
"""
Fault injection for popd server processes: see tests/servers.py.
"""
import builtins
import errno
import json
import os
import re
import signal

_CONTROL = os.environ["POPD_FAULTS"]
_ROOT = os.path.realpath(os.environ["POPD_FAULT_ROOT"]) + os.sep
_MUTATING = {%(mutating)s}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

_os = {name: getattr(os, name) for name in (
    "open", "unlink", "remove", "rename", "replace", "fsync", "read", "mkdir", "rmdir", "readlink"
)}
_open = builtins.open
_state = {"generation": None, "counts": {}}


def _control():
    try:
        with _open(_CONTROL, "rb") as control:
            rules = json.loads(control.read())
    except (FileNotFoundError, ValueError):
        return None
    if rules.get("generation") != _state["generation"]:
        _state["generation"] = rules.get("generation")
        _state["counts"] = {}
    return rules


def _append(suffix, record):
    with _open(_CONTROL + suffix, "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def _fdPath(fd):
    try:
        return _os["readlink"]("/proc/self/fd/%%d" %% (fd,))
    except OSError:
        return ""


def _match(call, path):
    """
    The rule that applies to this call, after counting it; None for none.
    """
    if not isinstance(path, str):
        path = os.fsdecode(path) if isinstance(path, bytes) else ""
    path = os.path.abspath(path)
    if not path.startswith(_ROOT):
        return None, path
    rules = _control()
    if rules is None:
        return None, path
    relative = path[len(_ROOT):]
    if rules.get("trace") and call in _MUTATING:
        _append(".trace", [call, relative])
    for number, rule in enumerate(rules.get("rules", [])):
        wanted = rule["call"]
        if wanted != call and not (wanted == "step" and call in _MUTATING):
            continue
        if "path" in rule and not re.search(rule["path"], relative):
            continue
        count = _state["counts"][number] = _state["counts"].get(number, 0) + 1
        first = rule.get("nth", 1)
        if first <= count < first + rule.get("times", 1):
            return rule, relative
    return None, path


def _fire(rule, when, call, relative):
    if rule is None or rule.get("when", "before") != when:
        return
    _append(".fired", [call, relative, rule["action"], when])
    if rule["action"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif rule["action"] == "raise":
        code = getattr(errno, rule["errno"])
        raise OSError(code, os.strerror(code), relative)


def _wrap(name, call, pathOf):
    original = _os[name]

    def wrapper(*args, **kwargs):
        callName = call(*args) if callable(call) else call
        rule, relative = _match(callName, pathOf(*args))
        _fire(rule, "before", callName, relative)
        result = original(*args, **kwargs)
        _fire(rule, "after", callName, relative)
        return result

    wrapper.__name__ = name
    setattr(os, name, wrapper)


class _FaultyFile:
    """
    A file opened for writing under the root: each write is one write(2), checked first.
    """

    def __init__(self, raw, path):
        self._raw = raw
        self._path = path

    def write(self, data):
        rule, relative = _match("write", self._path)
        _fire(rule, "before", "write", relative)
        view = memoryview(data)
        while view:
            view = view[self._raw.write(view):]
        _fire(rule, "after", "write", relative)
        return len(data)

    def flush(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._raw.close()

    def __getattr__(self, name):
        return getattr(self._raw, name)


def _faultyOpen(file, mode="r", buffering=-1, *args, **kwargs):
    if "b" in mode and any(flag in mode for flag in "wax+"):
        path = _fdPath(file) if isinstance(file, int) else os.fspath(file)
        if isinstance(path, str) and os.path.abspath(path).startswith(_ROOT):
            return _FaultyFile(_open(file, mode, 0, *args, **kwargs), path)
    return _open(file, mode, buffering, *args, **kwargs)


def install():
    _wrap(
        "open",
        lambda path, flags, *rest: "create" if flags & _WRITE_FLAGS else "open",
        lambda path, *rest: path,
    )
    for name in ("unlink", "remove", "rename", "replace", "mkdir", "rmdir"):
        call = "unlink" if name == "remove" else name
        _wrap(name, call, lambda path, *rest: path)
    _wrap("fsync", "fsync", lambda fd: _fdPath(fd if isinstance(fd, int) else fd.fileno()))
    _wrap("read", "read", lambda fd, *rest: _fdPath(fd))
    builtins.open = _faultyOpen
''' % {"mutating": ", ".join(repr(call) for call in MUTATING)}

# Imports the hook, then runs twistd.
_LAUNCHER = (
    "import popd_faults; popd_faults.install(); from twisted.scripts.twistd import run; run()"
)
_PLAIN_LAUNCHER = "from twisted.scripts.twistd import run; run()"


def freePort(host: str = HOST) -> int:
    """
    A TCP port on C{host} that nothing listens on now (a server may still race for it: see
    L{ServerProcess.start}).
    """
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def raiseFileLimit(needed: int) -> None:
    """
    Raise this process's soft C{RLIMIT_NOFILE} to its hard limit.

    @raise SkipTest: the hard limit is below C{needed}.
    """
    from twisted.trial.unittest import SkipTest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SkipTest(f"needs {needed} file descriptors; the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Messages and Maildirs


def messageName(serial: int, flags: str | None = None, size: int | None = None) -> str:
    """
    A conventional Maildir file name, delivered at time 1,700,000,000 + C{serial}: the
    delivery order is the serial order.  C{size} adds Dovecot's C{,W=} (the CRLF size).
    """
    base = f"{1_700_000_000 + serial}.M{serial}P4242.popd-fault"
    if size is not None:
        base += f",S={size},W={size}"
    return base if flags is None else f"{base}:2,{flags}"


def sampleMessage(serial: int, lines: int = 6) -> bytes:
    """
    A message with bare-LF line ends, a line starting with a dot and one that is a lone dot,
    different for each C{serial}.
    """
    body = b"".join(b"line %d of message %d\n" % (line, serial) for line in range(lines))
    return (
        b"Subject: message %d\nMessage-Id: <%d@popd.test>\n\n" % (serial, serial)
        + body
        + b".dot-line\n.\n"
        + b"end %d\n" % (serial,)
    )


class Maildir:
    """
    One user's Maildir in a sandbox, as an MDA and an IMAP server see it.
    """

    def __init__(self, path: FilePath[str]) -> None:
        self.path = path

    def create(self) -> None:
        for subdirectory in ("new", "cur", "tmp"):
            self.path.child(subdirectory).makedirs(ignoreExistingDirectory=True)

    def deliver(self, name: str, content: bytes, subdirectory: str = "new") -> FilePath[str]:
        """
        Deliver as an MDA does: write in C{tmp/}, then rename into place.
        """
        self.create()
        temporary = self.path.child("tmp").child(name.partition(":")[0])
        temporary.setContent(content)
        target = self.path.child(subdirectory).child(name)
        os.rename(temporary.path, target.path)
        return target

    def files(self) -> dict[str, FilePath[str]]:
        """
        The message files, by base name.

        @raise AssertionError: two files share a base name (a message was duplicated).
        """
        found: dict[str, FilePath[str]] = {}
        for subdirectory in ("new", "cur"):
            directory = self.path.child(subdirectory)
            if not directory.isdir():
                continue
            for child in directory.children():
                base = child.basename().partition(":")[0]
                if base in found:
                    raise AssertionError(f"{base} is in the Maildir twice")
                found[base] = child
        return found

    def contents(self) -> dict[str, bytes]:
        """
        The content of each message file, by base name.
        """
        return {base: child.getContent() for base, child in self.files().items()}

    def find(self, base: str) -> FilePath[str]:
        return self.files()[base]

    def remove(self) -> None:
        """
        Remove the Maildir, once no server holds it: a session the server has only just seen
        end may still be saving to it.
        """
        lock = self.path.child("popd.lock")
        if lock.exists():
            with open(lock.path, "rb+") as f:

                def free() -> bool:
                    try:
                        fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        return False
                    return True

                waitFor(free, TIMEOUT, f"the server to let go of {self.path.path}")
        if self.path.exists():
            self.path.remove()


# The sandbox


class Sandbox:
    """
    A directory for one test's servers: C{mail/} (the Maildir root, template
    C{mail/%u/Maildir}), C{passwd} (plaintext), C{faults} (the fault injector's control file)
    and the servers' logs.

    @ivar users: user name to password, as written to the passwd-file.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        users: Mapping[str, str] | None = None,
        directory: FilePath[str] | None = None,
    ) -> None:
        """
        @param directory: where to make the sandbox (it must not exist); by default a new
            temporary directory of the test.
        """
        self.testCase = testCase
        self.directory = FilePath(testCase.mktemp()) if directory is None else directory
        self.directory.makedirs()
        self.root = self.directory.child("mail")
        self.root.makedirs()
        self.passwd = self.directory.child("passwd")
        self.hook = self.directory.child("hook")
        self.hook.makedirs()
        self.hook.child("popd_faults.py").setContent(_HOOK.encode("utf-8"))
        self.control = self.directory.child("faults")
        self._generation = 0
        self._serial = 0
        self.users: dict[str, str] = {}
        self.setUsers(users if users is not None else {"bob": "secret"})

    def setUsers(self, users: Mapping[str, str]) -> None:
        """
        Write the passwd-file: C{{PLAIN}} entries, fast to check.
        """
        self.users = dict(users)
        lines = "".join(f"{name}:{{PLAIN}}{password}\n" for name, password in users.items())
        self.passwd.setContent(lines.encode("utf-8", "surrogateescape"))

    def template(self) -> str:
        return self.root.path.replace("%", "%%") + "/%u/Maildir"

    def maildir(self, user: str = "bob") -> Maildir:
        return Maildir(self.root.descendant([user, "Maildir"]))

    # Faults

    def faults(self, *rules: Mapping[str, Any], trace: bool = False) -> None:
        """
        Arm the fault injector of every server of this sandbox started with C{faults=True}:
        from now on, C{rules} apply, counted afresh.  Each rule has C{call} (C{open},
        C{create} (an C{os.open} for writing), C{write}, C{fsync}, C{rename}, C{replace},
        C{unlink}, C{mkdir}, C{read}, or C{step} for any call that changes the disk), an
        optional C{path} (a regular expression searched in the path relative to the Maildir
        root), C{nth} (default 1) and C{times} (default 1): the calls it applies to; C{action}
        (C{kill} or C{raise}), C{errno} (a name, for C{raise}) and C{when} (C{before}, the
        default, or C{after} the call).  With C{trace}, every call that changes the disk is
        recorded (see L{traced}).
        """
        self._generation += 1
        content = json.dumps(
            {"generation": self._generation, "trace": trace, "rules": list(rules)}
        ).encode("utf-8")
        temporary = self.control.siblingExtension(".new")
        temporary.setContent(content)
        os.replace(temporary.path, self.control.path)
        for suffix in (".trace", ".fired"):
            log = self.control.siblingExtension(suffix)
            if log.exists():
                log.remove()

    def disarm(self) -> None:
        if self.control.exists():
            self.control.remove()

    def _records(self, suffix: str) -> list[list[str]]:
        log = self.control.siblingExtension(suffix)
        if not log.exists():
            return []
        return [json.loads(line) for line in log.getContent().decode("utf-8").splitlines()]

    def traced(self) -> list[tuple[str, str]]:
        """
        The calls that changed the disk since L{faults} with C{trace}: (call, relative path).
        """
        return [(call, path) for call, path in self._records(".trace")]

    def fired(self) -> list[tuple[str, str, str, str]]:
        """
        The faults that fired since the last L{faults}: (call, path, action, when).
        """
        return [tuple(record) for record in self._records(".fired")]  # type: ignore[misc]

    # Servers

    def server(
        self,
        *options: str,
        faults: bool = False,
        fileLimit: tuple[int, int] | None = None,
        host: str = HOST,
        start: bool = True,
        privileges: tuple[int, int] | None = None,
    ) -> ServerProcess:
        """
        A server for this sandbox's Maildirs and passwd-file, stopped when the test ends.

        @param options: more C{popd} options (C{--auth-failure-delay 0} is given first).
        @param faults: run it with the fault injector (see L{faults}).
        @param fileLimit: the soft and hard C{RLIMIT_NOFILE} it starts with.
        @param host: the address to listen on.
        @param privileges: a uid and gid for C{twistd --uid --gid}.
        """
        self._serial += 1
        server = ServerProcess(
            self,
            list(options),
            faults=faults,
            fileLimit=fileLimit,
            host=host,
            log=self.directory.child(f"server-{self._serial}.log"),
            privileges=privileges,
        )
        self.testCase.addCleanup(server.stop)
        if start:
            server.start()
        return server


class ServerProcess:
    """
    One C{twistd -n --pidfile= popd} process listening on C{host:port}.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        options: list[str],
        *,
        faults: bool,
        fileLimit: tuple[int, int] | None,
        host: str,
        log: FilePath[str],
        privileges: tuple[int, int] | None,
    ) -> None:
        self.sandbox = sandbox
        self.options = options
        self.faults = faults
        self.fileLimit = fileLimit
        self.host = host
        self.logFile = log
        self.privileges = privileges
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        twistd = ["-n", "--pidfile="]
        if self.privileges is not None:
            uid, gid = self.privileges
            twistd += ["--uid", str(uid), "--gid", str(gid)]
        return [
            sys.executable,
            "-c",
            _LAUNCHER if self.faults else _PLAIN_LAUNCHER,
            *twistd,
            "popd",
            "--listen", f"tcp:{self.port}:interface={self.host}",
            "--maildir", self.sandbox.template(),
            "--passwd", self.sandbox.passwd.path,
            "--auth-failure-delay", "0",
            *self.options,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        paths = [_SOURCE, *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
        if self.faults:
            paths.insert(0, self.sandbox.hook.path)
            environment["POPD_FAULTS"] = self.sandbox.control.path
            environment["POPD_FAULT_ROOT"] = self.sandbox.root.path
        environment["PYTHONPATH"] = os.pathsep.join(paths)
        return environment

    def _limit(self) -> None:
        assert self.fileLimit is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.fileLimit)

    def start(self, attempts: int = 5) -> None:
        """
        Start the server on a free port and wait until it greets a client.  A port taken by
        another process meanwhile is tried again with another.
        """
        for _ in range(attempts):
            self.port = freePort(self.host)
            with self.logFile.open("a") as output:
                self.process = subprocess.Popen(
                    self.argv(),
                    cwd=self.sandbox.directory.path,
                    env=self.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    preexec_fn=None if self.fileLimit is None else self._limit,
                )
            if self._waitUntilReady():
                return
            if "Address already in use" not in self.log():
                break
        raise AssertionError(f"the server did not start:\n{self.log()}")

    def _waitUntilReady(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=TIMEOUT) as probe:
                    if probe.recv(512).startswith(b"+OK"):
                        return True
            except OSError:
                time.sleep(0.05)
        self.kill()
        return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.logFile.getContent().decode("utf-8", "replace") if self.logFile.exists() else ""

    def wait(self, timeout: float = TIMEOUT) -> int:
        """
        Wait for the process to exit.

        @return: its return code (negative: the signal that ended it).
        @raise AssertionError: it did not exit in time.
        """
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not exit in {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        """
        SIGKILL the server and reap it.
        """
        if self.running():
            assert self.process is not None
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def terminate(self) -> None:
        assert self.process is not None
        self.process.terminate()

    def stop(self) -> None:
        """
        SIGTERM the server, and SIGKILL it if it does not exit in time.
        """
        if self.running():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def connect(self, source: str | None = None, timeout: float = TIMEOUT) -> Client:
        """
        Connect and read the greeting.
        """
        client = Client(self.host, self.port, source=source, timeout=timeout)
        self.sandbox.testCase.addCleanup(client.close)
        greeting = client.readLine()
        if not greeting.startswith(b"+OK"):
            raise AssertionError(f"greeting {greeting!r}:\n{self.log()}")
        return client

    def session(self, user: str = "bob", source: str | None = None) -> Client:
        """
        Connect and log in with the sandbox's password for C{user}.
        """
        client = self.connect(source)
        client.login(user, self.sandbox.users[user])
        return client


# A client


class Client(RawConnection):
    """
    A blocking POP3 client that reads responses byte-exact, lines without their CRLF.
    """

    def __init__(
        self, host: str, port: int, *, source: str | None = None, timeout: float = TIMEOUT
    ) -> None:
        super().__init__(port, timeout, host=host, source=source)

    def readLine(self) -> bytes:
        """
        @return: one line, without its CRLF.
        @raise EOFError: the server closed the connection first.
        """
        return super().readLine()[: -len(CRLF)]

    def ok(self, line: bytes) -> bytes:
        """
        Send a command that must succeed.

        @return: its first response line.
        """
        response = self.command(line)
        if not response.startswith(b"+OK"):
            raise AssertionError(f"{line!r} was answered {response!r}")
        return response

    def multiline(self, line: bytes) -> tuple[bytes, list[bytes]]:
        """
        Send a command whose success is multi-line; read it all when it succeeds.
        """
        first = self.command(line)
        if not first.startswith(b"+OK"):
            return first, []
        body = self.readBody()
        return first, [line for line in body.split(CRLF)[:-1]]

    def login(self, user: str, password: str) -> None:
        self.ok(b"USER " + user.encode("utf-8", "surrogateescape"))
        self.ok(b"PASS " + password.encode("utf-8"))

    def uidls(self) -> dict[int, bytes]:
        first, lines = self.multiline(b"UIDL")
        if not first.startswith(b"+OK"):
            raise AssertionError(f"UIDL was answered {first!r}")
        return {int(number): uidl for number, uidl in (line.split(b" ") for line in lines)}

    def sizes(self) -> dict[int, int]:
        first, lines = self.multiline(b"LIST")
        if not first.startswith(b"+OK"):
            raise AssertionError(f"LIST was answered {first!r}")
        return {int(number): int(size) for number, size in (line.split(b" ") for line in lines)}

    def retrieve(self, number: int) -> bytes:
        """
        @return: message C{number} as transmitted, byte-stuffing undone.
        """
        first = self.ok(b"RETR %d" % (number,))
        body = unstuff(self.readBody())
        if first != b"+OK %d octets" % (len(body),):
            raise AssertionError(f"RETR {number}: {first!r} for {len(body)} octets")
        return body

    def quit(self) -> bytes:
        """
        @return: the answer to C{QUIT}; the server then closes the connection.
        """
        response = self.command(b"QUIT")
        self.expectClosed()
        return response

    def expectClosed(self) -> None:
        """
        @raise AssertionError: the server sends more, or does not close within the timeout.
        """
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            return
        if self._buffer:
            raise AssertionError(f"unexpected data before the close: {self._buffer[:200]!r}")

    def closed(self, timeout: float) -> bool:
        """
        Whether the server closes the connection within C{timeout}, whatever it sent first.
        """
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

    def abort(self) -> None:
        """
        Close with a reset, as a crashing client would (and leave no TIME_WAIT behind).
        """
        abortSocket(self.sock)


def abortSockets(sockets: Iterable[socket.socket]) -> None:
    """
    Close every socket of C{sockets} with a reset.
    """
    for sock in sockets:
        abortSocket(sock)


def abortSocket(sock: socket.socket) -> None:
    """
    Close C{sock} with a reset.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


# What a session must see


@dataclass(frozen=True)
class Expected:
    """
    A message as a test delivered it: its base name, its content, and what POP3 shows of it.
    """

    base: str
    stored: bytes

    @property
    def transmitted(self) -> bytes:
        return canonical(self.stored)

    @property
    def size(self) -> int:
        return len(self.transmitted)


def checkSession(
    testCase: SynchronousTestCase,
    client: Client,
    expected: Sequence[Expected],
    uidls: Mapping[str, bytes] | None,
) -> int:
    """
    Check what a session shows: exactly the C{expected} messages in order, with their sizes
    (R19), the UIDLs they had (R22) and their content, retrieved byte-exact.

    @param uidls: the UIDL each base name had before; L{None} to check only that the UIDLs
        are valid and distinct.
    @return: the number of messages checked.
    """
    sizes = client.sizes()
    testCase.assertEqual(sizes, {n: e.size for n, e in enumerate(expected, 1)})
    served = client.uidls()
    if uidls is None:
        testCase.assertEqual(sorted(served), list(range(1, len(expected) + 1)))
        testCase.assertEqual(len(set(served.values())), len(served))
        for uidl in served.values():
            testCase.assertTrue(1 <= len(uidl) <= 70 and all(0x21 <= c <= 0x7E for c in uidl))
    else:
        testCase.assertEqual(served, {n: uidls[e.base] for n, e in enumerate(expected, 1)})
    for number, message in enumerate(expected, 1):
        testCase.assertEqual(client.retrieve(number), message.transmitted)
    return len(expected)


def waitFor(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Poll C{condition} until it holds.

    @raise AssertionError: it did not hold within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def tree(directory: FilePath[str], exclude: Iterable[str] = ()) -> dict[str, tuple[int, bytes]]:
    """
    Everything under C{directory}: relative path to (mode, content of files); for comparing
    before and after.
    """
    excluded = set(exclude)
    found: dict[str, tuple[int, bytes]] = {}
    for path, directories, files in os.walk(directory.path):
        for name in directories + files:
            full = os.path.join(path, name)
            relative = os.path.relpath(full, directory.path)
            if relative.split(os.sep)[0] in excluded:
                continue
            info = os.lstat(full)
            content = b""
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as each:
                    content = each.read()
            found[relative] = (info.st_mode, content)
    return found
