"""ICMP error rate limiting as Linux does it.

Two token buckets, both of which must allow a message: a global one (net.ipv4.icmp_msgs_per_sec =
1000, icmp_msgs_burst = 50) and one per destination (net.ipv4.icmp_ratelimit = 1000 ms per token,
burst of 6 as inet_peer_xrlim_allow's XRLIM_BURST_FACTOR). Echo replies are not limited, as in Linux's
default icmp_ratemask.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ICMPRateLimiter:
    def __init__(self, now: Callable[[], float], global_rate: float = 1000.0, global_burst: float = 50.0,
                 per_destination_interval: float = 1.0, per_destination_burst: float = 6.0,
                 max_destinations: int = 4096) -> None:
        self._now = now
        self._global = TokenBucket(global_rate, global_burst, now())
        self._per_dest_rate = 1.0 / per_destination_interval if per_destination_interval > 0 else float("inf")
        self._per_dest_burst = per_destination_burst
        self._dests: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self._max_dests = max_destinations

    def allow(self, destination: bytes) -> bool:
        """May an ICMP error go to ``destination`` now? Global bucket first, as Linux's icmp_global_allow."""
        now = self._now()
        if not self._global.allow(now):
            return False
        bucket = self._dests.get(destination)
        if bucket is None:
            if len(self._dests) >= self._max_dests:
                self._dests.popitem(last=False)
            bucket = self._dests[bytes(destination)] = TokenBucket(self._per_dest_rate, self._per_dest_burst, now)
        else:
            self._dests.move_to_end(destination)
        return bucket.allow(now)
