"""
The bookkeeping behind popd's abuse limits, shared by all connections of a factory: how many
connections a peer or a user holds, how long a peer's failed logins must wait, and when each
user last logged in (RFC 2449 LOGIN-DELAY).

Everything here is in memory and per process, bounded in size, and driven by an explicit clock
so that tests need no waiting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

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
