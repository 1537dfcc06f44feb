"""
Reliability under faults, against real C{twistd popd} processes over real Maildirs: a server
SIGKILLed after DELE and at each step of the UPDATE commit, crashes and errors while the
size/UIDL index is written, corrupt indexes, disk errors at commit, other agents working on the
Maildir during a session, two servers on one Maildir root, and a graceful shutdown.

Nothing may be lost: a message not marked for deletion stays, byte for byte, with the same
UIDL (R22, R24); a marked one is gone or intact; the client is told C{-ERR [SYS/TEMP]} when a
removal failed (R23, R30).  Faults are injected at the OS-call boundary inside the server
process (see L{tests.servers}), and every test checks that its faults really fired.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from hashlib import sha256

from twisted.trial.unittest import SynchronousTestCase

from tests.servers import (
    Client,
    Expected,
    Sandbox,
    ServerProcess,
    checkSession,
    messageName,
    sampleMessage,
)
from tests.support import canonical

_NOT_REMOVED = b"-ERR [SYS/TEMP] Some deleted messages were not removed."
_IN_USE = b"-ERR [IN-USE] "
_SYS_TEMP = b"-ERR [SYS/TEMP] "


def _sample(sandbox: Sandbox, user: str = "bob") -> list[Expected]:
    """
    Deliver six messages as MDAs and IMAP servers leave them: three in C{new/}, one in
    C{cur/} with a flag, one in C{cur/} seen, and one whose name carries its size (C{,W=},
    as Dovecot's LDA writes it).

    @return: the messages, in delivery order.
    """
    maildir = sandbox.maildir(user)
    maildir.create()
    messages = []
    for serial in range(1, 7):
        content = sampleMessage(serial, lines=serial * 3)
        if serial == 6:
            name = messageName(serial, size=len(canonical(content)))
        else:
            name = messageName(serial, flags={3: "F", 4: "S"}.get(serial))
        maildir.deliver(name, content, "cur" if serial in (3, 4) else "new")
        messages.append(Expected(name.partition(":")[0], content))
    return messages


def _reset(sandbox: Sandbox, user: str = "bob") -> list[Expected]:
    """
    Remove the Maildir of C{user} (index and lock file included) and deliver the sample again.
    """
    sandbox.maildir(user).remove()
    return _sample(sandbox, user)


class _FaultTestCase(SynchronousTestCase):
    """
    Checks of what is left on disk and what a new session shows.
    """

    def assertNothingLost(
        self, sandbox: Sandbox, messages: list[Expected], marked: set[str]
    ) -> list[Expected]:
        """
        Every message not in C{marked} is in the Maildir once, byte-identical; a marked one is
        gone or byte-identical; nothing else is there.

        @return: the messages left, in delivery order.
        """
        contents = sandbox.maildir().contents()
        self.assertLessEqual(set(contents), {m.base for m in messages})
        for message in messages:
            if message.base in marked and message.base not in contents:
                continue
            self.assertIn(message.base, contents, f"{message.base} was lost")
            self.assertEqual(contents[message.base], message.stored, f"{message.base} altered")
        return [m for m in messages if m.base in contents]

    def assertServed(
        self, server: ServerProcess, left: list[Expected], uidls: dict[str, bytes]
    ) -> None:
        """
        A new session logs in at once (no lock is left), lists exactly C{left} with their
        sizes and old UIDLs, and retrieves each byte-exact.
        """
        client = server.session()
        checkSession(self, client, left, uidls)
        self.assertTrue(client.quit().startswith(b"+OK"))


def _uidlsByBase(client: Client, messages: list[Expected]) -> dict[str, bytes]:
    served = client.uidls()
    return {message.base: served[number] for number, message in enumerate(messages, 1)}


class CrashTests(_FaultTestCase):
    """
    A server SIGKILLed in the middle of a session loses nothing (R23, R24), and leaves no lock
    behind (R10).
    """

    # Message numbers: 1 and 3 retrieved (so renamed to cur/...:2,S at commit), 2, 4 and 6
    # deleted, 5 left alone.
    _RETRIEVED = (1, 3)
    _DELETED = (2, 4, 6)

    def _session(
        self, server: ServerProcess, messages: list[Expected]
    ) -> tuple[Client, dict[str, bytes]]:
        """
        Log in, retrieve and mark messages for deletion, and stop before QUIT.
        """
        client = server.session()
        uidls = _uidlsByBase(client, messages)
        for number in self._RETRIEVED:
            self.assertEqual(client.retrieve(number), messages[number - 1].transmitted)
        for number in self._DELETED:
            client.ok(b"DELE %d" % (number,))
        return client, uidls

    def _marked(self, messages: list[Expected]) -> set[str]:
        return {messages[number - 1].base for number in self._DELETED}

    def test_killedAfterDele(self) -> None:
        """
        A server SIGKILLed after C{DELE}, before C{QUIT}, removed nothing: a new server
        serves every message, byte-exact, with its UIDL, at once (the kernel released the
        lock of the killed process).

        Rules: R10, R20, R22, R24.
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server()
        client, uidls = self._session(server, messages)
        server.kill()
        self.assertEqual(server.process.returncode, -signal.SIGKILL)  # type: ignore[union-attr]
        left = self.assertNothingLost(sandbox, messages, set())
        self.assertEqual(left, messages)
        self.assertServed(sandbox.server(), messages, uidls)

    def test_killedAtEachCommitStep(self) -> None:
        """
        The UPDATE commit is a sequence of OS calls (unlinks, renames that mark retrieved
        messages seen, directory fsyncs, the index write).  SIGKILLed before each of them,
        and after the last one (before C{+OK} is sent), the server leaves every unmarked
        message intact (byte-compared) with its UIDL, each marked one gone or intact, and no
        lock: a new session is served at once (R10, R22, R23).
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server(faults=True)
        client, uidls = self._session(server, messages)
        # The reference run: record the steps.
        sandbox.faults(trace=True)
        self.assertEqual(client.quit(), b"+OK Bye; 3 messages removed.")
        steps = sandbox.traced()
        sandbox.disarm()
        calls = [call for call, _ in steps]
        self.assertEqual(calls.count("unlink"), 3, steps)
        self.assertEqual(calls.count("rename"), 2, steps)
        self.assertGreaterEqual(calls.count("fsync"), 2, steps)
        marked = self._marked(messages)
        left = self.assertNothingLost(sandbox, messages, marked)
        self.assertEqual(left, [m for m in messages if m.base not in marked])
        self.assertServed(server, left, uidls)

        kills = [(n, "before") for n in range(1, len(steps) + 1)] + [(len(steps), "after")]
        for step, when in kills:
            _reset(sandbox)
            client, _ = self._session(server, messages)
            sandbox.faults({"call": "step", "nth": step, "action": "kill", "when": when})
            client.send(b"QUIT\r\n")
            self.assertEqual(server.wait(), -signal.SIGKILL, f"step {step} {when}: {steps}")
            fired = sandbox.fired()
            self.assertEqual(len(fired), 1)
            self.assertEqual(fired[0][:2], tuple(steps[step - 1]))
            sandbox.disarm()
            left = self.assertNothingLost(sandbox, messages, marked)
            server = sandbox.server(faults=True)
            self.assertServed(server, left, uidls)

    def test_killedDuringIndexWrite(self) -> None:
        """
        The index is replaced atomically: SIGKILLed at each step of a session that writes it
        (sizes of newly delivered messages computed at login, saved at QUIT), the server leaves
        either the old index or the complete new one, never a torn one, and the next session
        lists the right sizes and UIDLs.

        Rules: R19, R22.
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server(faults=True)
        first = server.session()
        uidls = _uidlsByBase(first, messages)
        self.assertEqual(first.quit(), b"+OK Bye; 0 messages removed.")
        index = sandbox.maildir().path.child("popd-index")
        old = index.getContent()
        extra = [Expected(messageName(serial), sampleMessage(serial)) for serial in (7, 8)]
        for message in extra:
            sandbox.maildir().deliver(message.base, message.stored)
        everything = messages + extra
        sandbox.faults(trace=True)
        client = server.session()
        self.assertEqual(client.quit(), b"+OK Bye; 0 messages removed.")
        steps = sandbox.traced()
        sandbox.disarm()
        self.assertIn("replace", [call for call, _ in steps])
        new = index.getContent()
        index.setContent(old)
        client = server.session()
        learned = _uidlsByBase(client, everything)
        self.assertEqual({base: learned[base] for base in uidls}, uidls)
        uidls = learned
        self.assertEqual(client.quit(), b"+OK Bye; 0 messages removed.")
        self.assertEqual(index.getContent(), new)
        self.assertNotEqual(new, old)

        for step, when in [(n, "before") for n in range(1, len(steps) + 1)] + [
            (len(steps), "after")
        ]:
            index.setContent(old)
            sandbox.faults({"call": "step", "nth": step, "action": "kill", "when": when})
            try:
                client = server.connect()
                client.send(b"USER bob\r\nPASS secret\r\nQUIT\r\n")
                client.closed(30)
            except (EOFError, OSError):
                pass
            self.assertEqual(server.wait(), -signal.SIGKILL)
            self.assertEqual(len(sandbox.fired()), 1)
            sandbox.disarm()
            self.assertIn(index.getContent(), (old, new), f"step {step} {when}: {steps}")
            self.assertNothingLost(sandbox, everything, set())
            server = sandbox.server(faults=True)
            self.assertServed(server, everything, uidls)


class IndexTests(_FaultTestCase):
    """
    The size/UIDL index is a cache that is never trusted when damaged: a corrupt or truncated
    one is ignored and rebuilt (R19, R22); errors writing it (C{ENOSPC}, C{EIO}) lose nothing
    and never break the session.
    """

    def test_corruptIndex(self) -> None:
        """
        Between sessions the index is truncated at many lengths, garbled (a digit of a size
        changed, lines swapped, a byte flipped, garbage appended, emptied), or replaced by a
        directory or a FIFO: each next session still lists the right sizes and UIDLs, and
        rewrites the index as it was.

        Rules: R19, R22.
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server()
        client = server.session()
        uidls = _uidlsByBase(client, messages)
        self.assertEqual(client.quit(), b"+OK Bye; 0 messages removed.")
        index = sandbox.maildir().path.child("popd-index")
        good = index.getContent()
        self.assertIn(b"popd-index", good)
        lines = good.split(b"\n")
        size = lines[1].split(b" ")[0]
        damaged = [good[:length] for length in range(0, len(good), 3)]
        damaged += [
            good.replace(size, str(int(size) + 1).encode("ascii"), 1),
            b"\n".join([lines[0], lines[2], lines[1], *lines[3:]]),
            good[:20] + bytes([good[20] ^ 0x01]) + good[21:],
            good + b"garbage\n",
            good.replace(b"\n", b"\r\n"),
            b"\0" * len(good),
        ]
        expected = {m.base: m for m in messages}
        for corrupt in damaged:
            index.setContent(corrupt)
            client = server.session()
            self.assertEqual(
                client.sizes(),
                {n: expected[m.base].size for n, m in enumerate(messages, 1)},
                corrupt,
            )
            self.assertEqual(client.uidls(), {n: uidls[m.base] for n, m in enumerate(messages, 1)})
            self.assertEqual(client.quit(), b"+OK Bye; 0 messages removed.")
            self.assertEqual(index.getContent(), good, corrupt)
        index.remove()
        index.makedirs()
        client = server.session()
        checkSession(self, client, messages, uidls)
        self.assertTrue(client.quit().startswith(b"+OK"))

    def _fifoDoesNotBlock(self, name: str) -> None:
        """
        With a FIFO as C{name} in the Maildir, a login that reads or writes the index is
        served as usual, and so are other users: the server never blocks opening it.
        """
        sandbox = Sandbox(self, {"bob": "secret", "alice": "secret2"})
        messages = _sample(sandbox)
        server = sandbox.server()
        client = server.session()
        uidls = _uidlsByBase(client, messages)
        self.assertEqual(client.quit(), b"+OK Bye; 0 messages removed.")
        maildir = sandbox.maildir().path
        # Without an index, the login computes the sizes and writes one.
        maildir.child("popd-index").remove()
        os.mkfifo(maildir.child(name).path)
        client = server.connect(timeout=5)
        client.ok(b"USER bob")
        try:
            response = client.command(b"PASS secret")
        except TimeoutError:
            server.kill()
            self.fail(f"the server blocked opening the FIFO {name}")
        self.assertEqual(response, b"+OK Logged in.")
        checkSession(self, client, messages, uidls)
        other = server.session("alice")
        self.assertEqual(other.ok(b"STAT"), b"+OK 0 0")

    def test_indexFifoDoesNotBlock(self) -> None:
        """
        A FIFO put in place of the index (by the Maildir's owner, say) is not read as the
        index and does not block the server.

        Rules: R10, R19, R30.
        """
        self._fifoDoesNotBlock("popd-index")

    def test_temporaryIndexFifoDoesNotBlock(self) -> None:
        """
        A FIFO put in place of the index's temporary file is not written to and does not
        block the server.

        Rules: R10, R19, R30.
        """
        self._fifoDoesNotBlock("popd-index.tmp")

    def test_indexLinksNotFollowed(self) -> None:
        """
        Symbolic links planted as the index or its temporary file, pointing outside the
        Maildir, are neither read (their wrong sizes are not served) nor written through (the
        files they point to are unchanged).

        Rules: R19, R22; README: symbolic links are not followed.
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server()
        client = server.session()
        uidls = _uidlsByBase(client, messages)
        self.assertEqual(client.quit(), b"+OK Bye; 0 messages removed.")
        maildir = sandbox.maildir().path
        good = maildir.child("popd-index").getContent()
        # A well-formed index that claims other sizes, outside the Maildir.
        lines = good.split(b"\n")
        first = lines[1].split(b" ")
        first[0] = b"%d" % (int(first[0]) + 1000,)
        content = b"\n".join([lines[0], b" ".join(first), *lines[2:-2]]) + b"\n"
        count = len(lines) - 3
        lying = content + b"end %d %s\n" % (count, sha256(content).hexdigest().encode("ascii"))
        self.assertEqual(lying.count(b"\n"), good.count(b"\n"))
        outsideIndex = sandbox.directory.child("outside-index")
        outsideIndex.setContent(lying)
        outsideTarget = sandbox.directory.child("outside-target")
        outsideTarget.setContent(b"precious\n")
        maildir.child("popd-index").remove()
        os.symlink(outsideIndex.path, maildir.child("popd-index").path)
        os.symlink(outsideTarget.path, maildir.child("popd-index.tmp").path)
        client = server.session()
        checkSession(self, client, messages, uidls)
        self.assertTrue(client.quit().startswith(b"+OK"))
        self.assertEqual(outsideTarget.getContent(), b"precious\n")
        self.assertEqual(outsideIndex.getContent(), lying)

    def _writeFault(self, call: str, code: str, when: str = "before") -> None:
        """
        With C{call} on the index failing with C{code} while a session saves what its login
        computed (at QUIT), the session is served in full, the old index is kept whole, no
        temporary file is left, and the next sessions are right too (sizes, UIDLs, messages,
        DELE and QUIT).
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server(faults=True)
        client = server.session()
        self.assertEqual(client.quit(), b"+OK Bye; 0 messages removed.")
        maildir = sandbox.maildir()
        index = maildir.path.child("popd-index")
        old = index.getContent()
        extra = [Expected(messageName(serial), sampleMessage(serial)) for serial in (7, 8)]
        for message in extra:
            maildir.deliver(message.base, message.stored)
        everything = messages + extra
        sandbox.faults(
            {"call": call, "path": "popd-index", "action": "raise", "errno": code, "when": when}
        )
        client = server.session()
        uidls = _uidlsByBase(client, everything)
        self.assertEqual(client.quit(), b"+OK Bye; 0 messages removed.")
        self.assertEqual(len(sandbox.fired()), 1, f"{call} {code}: {server.log()}")
        sandbox.disarm()
        # The old index is kept whole, and no temporary file is left behind.
        self.assertEqual(index.getContent(), old)
        self.assertFalse(maildir.path.child("popd-index.tmp").exists())
        client = server.session()
        checkSession(self, client, everything, uidls)
        client.ok(b"DELE 1")
        self.assertEqual(client.quit(), b"+OK Bye; 1 messages removed.")
        left = self.assertNothingLost(sandbox, everything, {everything[0].base})
        self.assertEqual(left, everything[1:])
        self.assertServed(server, left, uidls)

    def test_indexCreateENOSPC(self) -> None:
        """
        Creating the index's temporary file fails with C{ENOSPC}.

        Rules: R19, R22; the index is a cache (DESIGN): no -ERR.
        """
        self._writeFault("create", "ENOSPC")

    def test_indexWriteENOSPC(self) -> None:
        """
        Writing the index fails with C{ENOSPC} (disk full).

        Rules: R19, R22; the index is a cache (DESIGN): no -ERR.
        """
        self._writeFault("write", "ENOSPC")

    def test_indexWriteEIO(self) -> None:
        """
        Writing the index fails with C{EIO}.

        Rules: R19, R22; the index is a cache (DESIGN): no -ERR.
        """
        self._writeFault("write", "EIO")

    def test_indexFsyncEIO(self) -> None:
        """
        Syncing the index fails with C{EIO}.

        Rules: R19, R22; the index is a cache (DESIGN): no -ERR.
        """
        self._writeFault("fsync", "EIO")

    def test_indexFsyncENOSPC(self) -> None:
        """
        Syncing the index fails with C{ENOSPC} (delayed allocation on a full disk).

        Rules: R19, R22; the index is a cache (DESIGN): no -ERR.
        """
        self._writeFault("fsync", "ENOSPC")

    def test_indexReplaceEIO(self) -> None:
        """
        Renaming the index into place fails with C{EIO}.

        Rules: R19, R22; the index is a cache (DESIGN): no -ERR.
        """
        self._writeFault("replace", "EIO")

    def test_indexReplaceENOSPC(self) -> None:
        """
        Renaming the index into place fails with C{ENOSPC}.

        Rules: R19, R22; the index is a cache (DESIGN): no -ERR.
        """
        self._writeFault("replace", "ENOSPC")


class CommitErrorTests(_FaultTestCase):
    """
    Disk errors during the UPDATE commit are reported as C{-ERR [SYS/TEMP]} (R23, R30) and
    lose nothing: the message that could not be removed stays intact, with its UIDL, and the
    next session removes it.
    """

    def _commitFault(self, call: str, path: str, code: str, removed: bool = False) -> None:
        """
        With C{call} failing with C{code} on the first path that matches C{path} during the
        commit of a session that marked messages 2 and 5, C{QUIT} is answered
        C{-ERR [SYS/TEMP]}, nothing is lost, and a new session sees the UIDLs unchanged.

        @param removed: whether message 2 was removed all the same (only not durably).
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server(faults=True)
        client = server.session()
        uidls = _uidlsByBase(client, messages)
        client.ok(b"DELE 2")
        client.ok(b"DELE 5")
        sandbox.faults({"call": call, "path": path, "action": "raise", "errno": code})
        self.assertEqual(client.quit(), _NOT_REMOVED, server.log())
        self.assertEqual(len(sandbox.fired()), 1)
        sandbox.disarm()
        marked = {messages[1].base, messages[4].base}
        left = self.assertNothingLost(sandbox, messages, marked)
        self.assertEqual(messages[1] not in left, removed)
        self.assertServed(server, left, uidls)

    def test_unlinkEIO(self) -> None:
        """
        Removing a marked message fails with C{EIO}: C{QUIT} is answered C{-ERR [SYS/TEMP]},
        and the message is still there, intact, with its UIDL.

        Rules: R22, R23, R30.
        """
        self._commitFault("unlink", "new/", "EIO")

    def test_unlinkENOSPC(self) -> None:
        """
        Removing a marked message fails with C{ENOSPC} (a file system that must write to
        free space, such as a copy-on-write one).

        Rules: R22, R23, R30.
        """
        self._commitFault("unlink", "new/", "ENOSPC")

    def test_unlinkEROFS(self) -> None:
        """
        Removing a marked message fails with C{EROFS} (the file system was remounted
        read-only after an error).

        Rules: R22, R23, R30.
        """
        self._commitFault("unlink", "new/", "EROFS")

    def test_directoryFsyncEIO(self) -> None:
        """
        Making the removals durable (the fsync of C{new/}) fails with C{EIO}: the client is
        told they may not have happened.

        Rules: R23, R30.
        """
        self._commitFault("fsync", "Maildir/new$", "EIO", removed=True)

    def test_readEIO(self) -> None:
        """
        Reading a message fails with C{EIO} in the middle of C{RETR}: the connection is
        dropped (the C{+OK} is out, no C{-ERR} can follow), without the terminator, and
        nothing is lost; opening a message fails with C{EIO}: C{-ERR [SYS/TEMP]}, and the
        session goes on.

        Rules: R19, R24, R30.
        """
        sandbox = Sandbox(self)
        maildir = sandbox.maildir()
        big = b"Subject: big\n\n" + b"".join(b"%08d %s\n" % (i, b"x" * 60) for i in range(3000))
        messages = [Expected(messageName(1), big), Expected(messageName(2), sampleMessage(2))]
        for message in messages:
            maildir.deliver(message.base, message.stored)
        server = sandbox.server(faults=True)
        client = server.session()
        uidls = _uidlsByBase(client, messages)
        client.ok(b"DELE 2")
        sandbox.faults({"call": "open", "path": "new/", "action": "raise", "errno": "EIO"})
        self.assertTrue(client.command(b"RETR 1").startswith(_SYS_TEMP))
        self.assertEqual(len(sandbox.fired()), 1)
        client.ok(b"NOOP")
        sandbox.faults(
            {"call": "read", "path": "new/", "nth": 2, "action": "raise", "errno": "EIO"}
        )
        self.assertEqual(client.command(b"RETR 1"), b"+OK %d octets" % (messages[0].size,))
        # The server aborts the connection: a reset, or an end without the terminator.
        with self.assertRaises((EOFError, ConnectionResetError)):
            client.readBody()
        self.assertEqual(len(sandbox.fired()), 1)
        sandbox.disarm()
        self.assertEqual(self.assertNothingLost(sandbox, messages, set()), messages)
        self.assertServed(server, messages, uidls)


class OtherAgentsTests(_FaultTestCase):
    """
    Other agents work on the Maildir during a session: an MDA delivers, an IMAP server renames
    files to add flags, another agent deletes a file.  The session's view (numbers, sizes,
    UIDLs) does not change (R16, R22), RETR still finds renamed messages, a deleted one gives
    C{-ERR} and the session goes on, and the commit tolerates what changed.
    """

    def test_deliveryDuringSession(self) -> None:
        """
        A message delivered into C{new/} during a session is not in its listing; the next
        session lists it after the others.

        Rules: R16, R17, R22.
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server()
        client = server.session()
        uidls = _uidlsByBase(client, messages)
        stat = client.ok(b"STAT")
        late = Expected(messageName(9), sampleMessage(9))
        sandbox.maildir().deliver(late.base, late.stored)
        self.assertEqual(client.ok(b"STAT"), stat)
        self.assertEqual(client.command(b"LIST 7"), b"-ERR No such message.")
        self.assertEqual(client.uidls(), {n: uidls[m.base] for n, m in enumerate(messages, 1)})
        self.assertEqual(client.quit(), b"+OK Bye; 0 messages removed.")
        client = server.session()
        learned = _uidlsByBase(client, messages + [late])
        self.assertEqual({base: learned[base] for base in uidls}, uidls)
        self.assertTrue(client.quit().startswith(b"+OK"))
        self.assertServed(server, messages + [late], learned)

    def test_flagRenamesDuringSession(self) -> None:
        """
        An IMAP server renames every message during a session: moved to C{cur/}, flags added
        (C{:2,S}, C{:2,RS}).  C{UIDL} answers as before, C{RETR} and C{TOP} still find each
        message, and C{DELE} then C{QUIT} removes the renamed file.

        Rules: R18, R22, R23.
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server()
        client = server.session()
        uidls = _uidlsByBase(client, messages)
        maildir = sandbox.maildir()
        for base, path in maildir.files().items():
            os.rename(path.path, maildir.path.child("cur").child(base + ":2,RS").path)
        self.assertEqual(client.uidls(), {n: uidls[m.base] for n, m in enumerate(messages, 1)})
        for number, message in enumerate(messages, 1):
            self.assertEqual(client.retrieve(number), message.transmitted)
        self.assertEqual(client.ok(b"TOP 2 0"), b"+OK")
        client.readBody()
        client.ok(b"DELE 2")
        self.assertEqual(client.quit(), b"+OK Bye; 1 messages removed.")
        left = self.assertNothingLost(sandbox, messages, {messages[1].base})
        self.assertEqual(left, messages[:1] + messages[2:])
        self.assertServed(server, left, uidls)

    def test_deletionDuringSession(self) -> None:
        """
        Another agent deletes two messages during a session, one of them marked: C{RETR} and
        C{TOP} of the unmarked one are answered C{-ERR}, the session goes on (C{NOOP},
        C{RETR} of others), and C{QUIT} succeeds, removing the marked messages.

        Rules: R17, R18, R23.
        """
        sandbox = Sandbox(self)
        messages = _sample(sandbox)
        server = sandbox.server()
        client = server.session()
        uidls = _uidlsByBase(client, messages)
        client.ok(b"DELE 3")
        client.ok(b"DELE 5")
        maildir = sandbox.maildir()
        maildir.find(messages[1].base).remove()
        maildir.find(messages[2].base).remove()
        self.assertTrue(client.command(b"RETR 2").startswith(b"-ERR"))
        self.assertTrue(client.command(b"TOP 2 1").startswith(b"-ERR"))
        client.ok(b"NOOP")
        self.assertEqual(client.retrieve(1), messages[0].transmitted)
        self.assertEqual(
            client.ok(b"STAT"),
            b"+OK 4 %d" % (sum(m.size for i, m in enumerate(messages) if i not in (2, 4)),),
        )
        self.assertEqual(client.quit(), b"+OK Bye; 2 messages removed.")
        left = [messages[0], messages[3], messages[5]]
        gone = {m.base for m in messages[1:5]}
        self.assertEqual(self.assertNothingLost(sandbox, messages, gone), left)
        self.assertServed(server, left, uidls)


class TwoServersTests(_FaultTestCase):
    """
    Two server processes on one Maildir root: one maildrop is never held by two sessions
    (R10), and the lock of a killed process is free at once.
    """

    def test_oneSessionPerMaildrop(self) -> None:
        """
        While a session of the first server holds bob's Maildir, the second server answers
        bob's login with C{-ERR [IN-USE]} (and serves alice); once the first server is
        SIGKILLed, with messages marked, the second logs bob in at once, and nothing was
        removed.

        Rules: R10, R24.
        """
        sandbox = Sandbox(self, {"bob": "secret", "alice": "secret2"})
        messages = _sample(sandbox)
        first = sandbox.server()
        second = sandbox.server()
        holder = first.session()
        uidls = _uidlsByBase(holder, messages)
        holder.ok(b"DELE 1")
        for _ in range(3):
            other = second.connect()
            other.ok(b"USER bob")
            self.assertTrue(other.command(b"PASS secret").startswith(_IN_USE))
            other.close()
        alice = second.session("alice")
        self.assertEqual(alice.ok(b"STAT"), b"+OK 0 0")
        # The first server's own second session is refused too.
        again = first.connect()
        again.ok(b"USER bob")
        self.assertTrue(again.command(b"PASS secret").startswith(_IN_USE))
        first.kill()
        started = time.monotonic()
        self.assertServed(second, messages, uidls)
        # No wait for a stale lock: well under the 30 s timeout (generous for slow CI).
        self.assertLess(time.monotonic() - started, 10)


class ShutdownTests(_FaultTestCase):
    """
    C{SIGTERM} shuts the server down gracefully: it stops accepting, closes the open sessions
    without UPDATE (R24), and exits.
    """

    def test_sigterm(self) -> None:
        """
        SIGTERMed with a session that marked messages, one in the middle of logging in and
        one idle before login, the server closes them all without removing anything, stops
        listening, and exits as twistd does on SIGTERM; a new server serves every message
        with its UIDL.

        Rules: R8, R22, R24.
        """
        sandbox = Sandbox(self, {"bob": "secret", "alice": "secret2"})
        messages = _sample(sandbox)
        server = sandbox.server()
        marking = server.session()
        uidls = _uidlsByBase(marking, messages)
        for number in (1, 2, 6):
            marking.ok(b"DELE %d" % (number,))
        halfway = server.connect()
        halfway.ok(b"USER alice")
        idle = server.connect()
        server.terminate()
        self.assertEqual(server.wait(), -signal.SIGTERM, server.log())
        self.assertIn("Server Shut Down.", server.log())
        for client in (marking, halfway, idle):
            self.assertTrue(client.closed(5))
        with self.assertRaises(OSError):
            socket.create_connection((server.host, server.port), timeout=5).close()
        self.assertEqual(self.assertNothingLost(sandbox, messages, set()), messages)
        self.assertServed(sandbox.server(), messages, uidls)
