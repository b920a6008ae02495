"""A token bucket: `rate` tokens a second, at most `burst` saved; time from an injected clock."""

from __future__ import annotations

# Sums of elapsed × rate fall short of a whole token by a rounding error: a caller that slept
# `wait_time()` must find its token, not a wait of 1e-17 s (which a clock cannot show) forever.
EPSILON = 1e-9


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, n: float = 1.0) -> bool:
        """Spend `n` tokens if there are that many at `now`."""
        elapsed = max(0.0, now - self.stamp)  # a clock that steps back earns nothing
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = max(self.stamp, now)
        if self.tokens >= n - EPSILON:
            self.tokens = max(0.0, self.tokens - n)
            return True
        return False

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until `n` tokens are there (as of the last `take`)."""
        return max(0.0, (n - self.tokens) / self.rate) if self.rate > 0 else float("inf")
