"""Reconnect policy: exponential backoff with full jitter, and a cap on attempts per window.

Why both: jitter spreads many clients (or many connections of one daemon) so that a venue
outage does not end in a synchronised reconnect storm; the per-window cap bounds how hard we hit
a venue that accepts connections and then drops them at once (exponential growth alone would be
reset by each short-lived success). Time is injected (``now_ns``) so the policy is tested without
a wall clock.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field


@dataclass
class BackoffPolicy:
    base_s: float = 0.25          # first retry delay upper bound
    max_s: float = 30.0           # ceiling of the exponential part
    multiplier: float = 2.0
    max_attempts: int = 10        # at most this many connection attempts ...
    window_s: float = 60.0        # ... in any sliding window of this length
    healthy_after_s: float = 10.0  # a connection that lived this long resets the exponent
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)
    _failures: int = field(init=False, default=0)
    _attempts: deque = field(init=False, repr=False)
    capped: int = field(init=False, default=0)  # how often the window cap decided the delay

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.max_s < self.base_s or self.multiplier < 1:
            raise ValueError("backoff needs 0 < base_s <= max_s and multiplier >= 1")
        if self.max_attempts < 1 or self.window_s <= 0:
            raise ValueError("backoff needs max_attempts >= 1 and window_s > 0")
        self._rng = random.Random(self.seed)
        self._attempts = deque()

    def ceiling_s(self, failures: int) -> float:
        """Upper bound of the jittered delay after ``failures`` consecutive failures."""
        return min(self.max_s, self.base_s * self.multiplier ** max(0, failures - 1))

    def delay_s(self, now_ns: int) -> float:
        """Delay before the next attempt (0 for the very first one).

        Full jitter: uniform in [0, ceiling]. Then the window cap: if ``max_attempts`` attempts
        already started within the last ``window_s``, wait until the oldest leaves the window.
        """
        d = 0.0 if self._failures == 0 else self._rng.uniform(0.0, self.ceiling_s(self._failures))
        win = int(self.window_s * 1e9)
        while self._attempts and self._attempts[0] <= now_ns - win:
            self._attempts.popleft()
        if len(self._attempts) >= self.max_attempts:
            free_at = self._attempts[len(self._attempts) - self.max_attempts] + win
            wait = (free_at - now_ns) / 1e9
            if wait > d:
                d = wait
                self.capped += 1
        return d

    def attempt(self, now_ns: int) -> None:
        """Record that a connection attempt starts now."""
        self._attempts.append(now_ns)

    def failed(self) -> None:
        """The attempt failed or the connection died young: grow the exponent."""
        self._failures += 1

    def connection_ended(self, lived_ns: int) -> None:
        """A connection that was established has ended after ``lived_ns``."""
        if lived_ns >= self.healthy_after_s * 1e9:
            self._failures = 1  # healthy: retry soon, but still jittered
        else:
            self._failures += 1

    def succeeded(self) -> None:
        """What the attempts were for worked: the next failure starts from the base delay
        (the window of past attempts still counts against the cap)."""
        self._failures = 0

    def attempts_in_window(self, now_ns: int) -> int:
        win = int(self.window_s * 1e9)
        return sum(1 for t in self._attempts if t > now_ns - win)

    @property
    def failures(self) -> int:
        return self._failures
