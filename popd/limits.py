"""
The bookkeeping behind popd's abuse limits, shared by all connections of a factory: how many
connections a peer or a user holds, how long a peer's failed logins must wait, when each user
last logged in (RFC 2449 LOGIN-DELAY), and which connections have been idle too long.

Everything here is in memory and per process, bounded in size, and driven by an explicit clock
so that tests need no waiting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

_K = TypeVar("_K", bound=Hashable)


class ConcurrencyLimit(Generic[_K]):
    """
    Counts what each key (a peer address, a user) holds at once, up to a limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[_K] = Counter()

    def acquire(self, key: _K) -> bool:
        """
        Take one slot for C{key}.

        @return: C{False}, taking nothing, when C{key} already holds the limit.
        """
        if self._held[key] >= self.limit:
            return False
        self._held[key] += 1
        return True

    def release(self, key: _K) -> None:
        """
        Give back a slot taken with L{acquire}.
        """
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]

    def held(self, key: _K) -> int:
        return self._held[key]


class _ExpiringRecords(Generic[_K]):
    """
    A mapping of key to the time of its last event, forgetting events older than C{lifetime}
    once it grows, so that a flood of distinct keys cannot exhaust memory.
    """

    _pruneAbove = 10_000

    def __init__(self, lifetime: float, clock: Callable[[], float]) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._records: dict[_K, tuple[float, int]] = {}

    def get(self, key: _K) -> tuple[float, int] | None:
        record = self._records.get(key)
        if record is not None and self._clock() - record[0] >= self.lifetime:
            del self._records[key]
            return None
        return record

    def set(self, key: _K, count: int) -> None:
        if len(self._records) >= self._pruneAbove:
            now = self._clock()
            self._records = {k: r for k, r in self._records.items() if now - r[0] < self.lifetime}
        self._records[key] = (self._clock(), count)

    def forget(self, key: _K) -> None:
        self._records.pop(key, None)


class FailurePenalty(Generic[_K]):
    """
    A delay for failed logins that doubles with each failure of the same peer, up to a cap,
    as Dovecot's auth penalty does; a peer that stays quiet for C{forgetAfter} seconds, or
    logs in, starts again from the base delay.
    """

    def __init__(
        self, base: float, cap: float, forgetAfter: float, clock: Callable[[], float]
    ) -> None:
        self.base = base
        self.cap = cap
        self._failures: _ExpiringRecords[_K] = _ExpiringRecords(forgetAfter, clock)

    def failed(self, key: _K) -> float:
        """
        Count one failure of C{key}.

        @return: the seconds its answer must wait.
        """
        record = self._failures.get(key)
        failures = 1 if record is None else record[1] + 1
        self._failures.set(key, failures)
        # The exponent is bounded: a long attack must not overflow the float.
        return min(self.base * 2.0 ** min(failures - 1, 32), max(self.cap, self.base))

    def succeeded(self, key: _K) -> None:
        self._failures.forget(key)


class LoginDelay(Generic[_K]):
    """
    Enforces RFC 2449's LOGIN-DELAY: the minimum seconds between two logins of one user.
    """

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self._logins: _ExpiringRecords[_K] = _ExpiringRecords(seconds, clock)

    def allow(self, key: _K) -> bool:
        """
        Whether C{key} may log in now; if so, the login is recorded.
        """
        if self._logins.get(key) is not None:
            return False
        self._logins.set(key, 1)
        return True


class IdleTimeouts(Generic[_K]):
    """
    Expires connections (or anything hashable) that stay idle too long, with one timer for all
    of them.

    L{TimeoutMixin<twisted.protocols.policies.TimeoutMixin>} keeps a C{DelayedCall} per
    connection, about half a KiB each: more than the rest of an idle connection.  Here a
    connection costs one entry in a dict.  Keys watched with the same timeout reach their
    deadlines in the order of their last activity, so one dict per timeout, where activity moves
    a key to the end, stays sorted by deadline; the one timer waits for the earliest first
    deadline, and a key touched meanwhile only makes it wake up early once.
    """

    def __init__(self, clock: IReactorTime, expired: Callable[[_K], object]) -> None:
        """
        @param expired: called with each key whose time is up, which is no longer watched then.
        """
        self._clock = clock
        self._expired = expired
        # For each timeout, the keys watched with it and their deadlines, in deadline order.
        self._watched: dict[float, dict[_K, float]] = {}
        self._timer: IDelayedCall | None = None

    def watch(self, key: _K, timeout: float) -> None:
        """
        Start the countdown of C{key}, or restart it with a new timeout: unless touched, it
        expires C{timeout} seconds from now.
        """
        self.forget(key)
        deadline = self._clock.seconds() + timeout
        self._watched.setdefault(timeout, {})[key] = deadline
        if self._timer is None or deadline < self._timer.getTime():
            self._wakeUpAt(deadline)

    def touch(self, key: _K) -> None:
        """
        Restart the countdown of C{key}, if it is watched.
        """
        for timeout, keys in self._watched.items():
            if keys.pop(key, None) is not None:
                keys[key] = self._clock.seconds() + timeout
                return

    def forget(self, key: _K) -> None:
        """
        Stop watching C{key}, if it is watched.
        """
        for timeout, keys in self._watched.items():
            if keys.pop(key, None) is not None:
                if not keys:
                    del self._watched[timeout]
                break
        if not self._watched and self._timer is not None:
            # Nothing left to wait for: leave no call pending in the reactor.
            self._timer.cancel()
            self._timer = None

    def watching(self, key: _K) -> bool:
        return any(key in keys for keys in self._watched.values())

    def _wakeUpAt(self, deadline: float) -> None:
        delay = max(0.0, deadline - self._clock.seconds())
        if self._timer is None:
            self._timer = self._clock.callLater(delay, self._expire)
        else:
            self._timer.reset(delay)

    def _expire(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        expired = []
        for keys in self._watched.values():
            for key, deadline in keys.items():
                if deadline > now:
                    break
                expired.append(key)
        for key in expired:
            self.forget(key)
        if self._watched:
            self._wakeUpAt(min(next(iter(keys.values())) for keys in self._watched.values()))
        for key in expired:
            self._expired(key)
