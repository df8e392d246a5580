"""Congestion control behind one interface: Reno (RFC 5681) and CUBIC (RFC 9438).

The sender owns the window and the recovery state machine (RFC 6582 NewReno, RFC 6675 SACK) and
asks the algorithm only for the policy decisions: how the window grows on an ACK, what ssthresh
becomes on loss or timeout, and what a new congestion-avoidance stage starts from. Windows count
segments, as netstack and Linux count them, so every method is a handful of integer and float
operations whatever the window or the size of a stretch ACK.

How the sender drives an algorithm:

- ``on_ack(n)`` for each ACK that advances snd_una by ``n`` segments outside fast recovery, and
  only while the window was in use (RFC 7661). CUBIC reduces from cwnd rather than from the
  flight size, which RFC 9438 §4.6 allows only if cwnd cannot grow while it is not being used.
- ``on_loss_detected()`` when fast retransmit or SACK loss recovery starts; the sender then sets
  cwnd from the new ssthresh (``ssthresh`` or ``ssthresh + 3`` for NewReno).
- ``post_recovery()`` after the sender has set cwnd on leaving recovery.
- ``on_rto_expired()`` on every retransmission timeout.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Protocol

from ...tcpip import ErrInvalidOptionValue


class CongestionState(Protocol):
    """What an algorithm sees of its sender; it writes only ``cwnd`` and ``ssthresh``."""

    cwnd: int           # segments
    ssthresh: int       # segments; "infinite" (2**31 - 1) until the first congestion event
    mss: int            # bytes
    outstanding: int    # segments in flight
    srtt: float         # seconds, 0.0 until measured
    min_rtt: float      # seconds, 0.0 until measured

    def now(self) -> float:
        """Monotonic seconds on the stack's clock."""


class CongestionControl(ABC):
    """Slow start, the shared timeout rule, and the hooks each algorithm fills in."""

    name: str = ""
    __slots__ = ("_rto_backoff", "state")

    def __init__(self, state: CongestionState) -> None:
        self.state = state
        # Set by a timeout, cleared by progress: a further timeout before any ACK is the same
        # segment timing out again, and RFC 5681 §3.1 then holds ssthresh where the first set it.
        self._rto_backoff = False

    def on_ack(self, packets_acked: int) -> None:
        """Grow cwnd for an ACK of ``packets_acked`` new segments outside recovery."""
        if packets_acked <= 0:
            return
        self._rto_backoff = False
        state = self.state
        if state.cwnd < state.ssthresh:
            # Slow start (RFC 5681 §3.1), counting segments acknowledged rather than ACKs (as
            # Linux and netstack; RFC 3465) but stopping at ssthresh, so that a stretch ACK
            # leaves slow start exactly there and its remainder is congestion-avoidance growth.
            grown = state.cwnd + packets_acked
            if grown < state.ssthresh:
                state.cwnd = grown
                return
            packets_acked = grown - state.ssthresh
            state.cwnd = state.ssthresh
            self._enter_congestion_avoidance()
            if packets_acked == 0:
                return
        self._congestion_avoidance(packets_acked)

    def on_loss_detected(self) -> None:
        """Fast retransmit or SACK-detected loss: lower ssthresh (the sender then sets cwnd)."""
        self._rto_backoff = False
        self._reduce()

    def on_rto_expired(self) -> None:
        """Retransmission timeout: lower ssthresh, unless this segment already timed out, and
        restart from one segment (RFC 5681 §3.1, whatever the initial window was)."""
        if not self._rto_backoff:
            self._rto_backoff = True
            self._reduce()
            self._after_timeout()
        self.state.cwnd = 1

    def post_recovery(self) -> None:
        """Recovery is over and the sender has deflated cwnd (to ssthresh, or to the flight plus
        one segment when less is in flight, RFC 6582 §3.2 step 6)."""

    def on_transmit_start(self, idle: float) -> None:
        """New data goes out with nothing in flight, ``idle`` seconds after data last went out."""

    # --- what each algorithm decides ---------------------------------------------------------------

    @abstractmethod
    def _reduce(self) -> None:
        """Set ssthresh, and the algorithm's own state, for a congestion event."""

    def _after_timeout(self) -> None:
        """Extra state changes a first timeout brings, after ``_reduce``."""

    def _enter_congestion_avoidance(self) -> None:
        """Slow start just reached ssthresh: a congestion-avoidance stage begins."""

    @abstractmethod
    def _congestion_avoidance(self, packets_acked: int) -> None:
        """Grow cwnd at or above ssthresh."""


class Reno(CongestionControl):
    """RFC 5681: +1 segment per window of segments acknowledged, ssthresh = FlightSize / 2."""

    name = "reno"
    __slots__ = ("_acked",)

    def __init__(self, state: CongestionState) -> None:
        super().__init__(state)
        self._acked = 0     # segments acknowledged towards the next +1 (netstack's sndCAAckCount)

    def _reduce(self) -> None:
        # RFC 5681 eq. (4): half the flight, not half of cwnd, which may have outgrown what was sent.
        self.state.ssthresh = max(self.state.outstanding // 2, 2)
        self._acked = 0

    def _enter_congestion_avoidance(self) -> None:
        self._acked = 0

    def _congestion_avoidance(self, packets_acked: int) -> None:
        state = self.state
        acked = self._acked + packets_acked
        if acked >= state.cwnd:
            increase, acked = divmod(acked, state.cwnd)
            state.cwnd += increase
        self._acked = acked


C = 0.4                                 # RFC 9438 §5: segments / second**3
BETA = 0.7                              # RFC 9438 §4.6 multiplicative decrease
ALPHA = 3.0 * (1.0 - BETA) / (1.0 + BETA)   # RFC 9438 §4.3: Reno's average rate under AIMD(ALPHA, BETA)
_FAST_CONVERGENCE = (1.0 + BETA) / 2.0  # RFC 9438 §4.7
_MAX_TARGET = 1.5                       # RFC 9438 §4.2: target at most 1.5 * cwnd
_BETA_TENTHS = 7                        # BETA in exact integer arithmetic, for ssthresh


class Cubic(CongestionControl):
    """RFC 9438 CUBIC: the window follows W_cubic(t) = C*(t - K)**3 + W_max in time since the
    stage began, concave up to the window of the last loss and convex past it, and never
    grows more slowly than the Reno-friendly estimate W_est."""

    name = "cubic"
    __slots__ = ("_cwnd_prior", "_epoch_start", "_growth", "_k", "_origin_at_epoch", "_w_est", "_w_max")

    def __init__(self, state: CongestionState) -> None:
        super().__init__(state)
        self._w_max = 0.0           # segments: cwnd at the last congestion event (after fast convergence)
        self._cwnd_prior = 0.0      # segments: cwnd when ssthresh was last set
        self._k = 0.0               # seconds from the epoch start until W_cubic reaches W_max
        self._epoch_start: float | None = None   # start of this congestion-avoidance stage; None: not begun
        self._w_est = 0.0           # segments: the Reno-friendly estimate
        self._growth = 0.0          # fraction of a segment grown towards the target, not yet in cwnd
        # No loss yet (§4.10), or the first stage after a timeout (§4.8): the next epoch starts from
        # its own window, with W_max = cwnd_epoch and K = 0, so it grows convexly at once.
        self._origin_at_epoch = True

    def _reduce(self) -> None:
        state = self.state
        cwnd = state.cwnd
        # §4.7 fast convergence: losing below the previous W_max means a new flow is taking its
        # share, so release more bandwidth by aiming lower than where the loss happened.
        self._w_max = cwnd * _FAST_CONVERGENCE if cwnd < self._w_max else float(cwnd)
        self._cwnd_prior = float(cwnd)
        state.ssthresh = max(cwnd * _BETA_TENTHS // 10, 2)
        self._epoch_start = None
        self._origin_at_epoch = False

    def _after_timeout(self) -> None:
        self._origin_at_epoch = True

    def post_recovery(self) -> None:
        # The stage starts with the first ACK after recovery, from the window the sender set.
        self._epoch_start = None

    def on_transmit_start(self, idle: float) -> None:
        # As Linux's bictcp_cwnd_event(CA_EVENT_TX_START): time spent with nothing to send is no
        # time on the curve, so the stage's start moves on by it (never past now).
        start = self._epoch_start
        if start is not None and idle > 0:
            self._epoch_start = min(start + idle, self.state.now())

    def _enter_congestion_avoidance(self) -> None:
        self._start_epoch()

    def _start_epoch(self) -> float:
        """Begin a congestion-avoidance stage from the current window; returns its start time."""
        cwnd_epoch = self.state.cwnd
        start = self._epoch_start = self.state.now()
        if self._origin_at_epoch:
            self._origin_at_epoch = False
            self._w_max = float(cwnd_epoch)
            self._k = 0.0
            if not self._cwnd_prior:
                self._cwnd_prior = float(cwnd_epoch)
        else:
            # §4.2 Figure 2. Measuring from cwnd_epoch rather than W_max * BETA keeps the curve
            # continuous (W_cubic(0) == cwnd_epoch) after fast convergence or a deflated window;
            # K < 0 when W_max is below cwnd_epoch puts the whole stage in the convex region.
            self._k = math.cbrt((self._w_max - cwnd_epoch) / C)
        self._w_est = float(cwnd_epoch)
        self._growth = 0.0
        return start

    def _congestion_avoidance(self, packets_acked: int) -> None:
        start = self._epoch_start
        if start is None:
            start = self._start_epoch()
        state = self.state
        cwnd = state.cwnd
        t = state.now() - start

        # §4.3: Reno's window, grown per segment acknowledged by ALPHA / cwnd, and by 1 / cwnd
        # (Reno's own rate) once it is back where the last reduction started.
        alpha = 1.0 if self._w_est >= self._cwnd_prior else ALPHA
        self._w_est += alpha * packets_acked / cwnd
        offset = t - self._k
        if self._w_est > cwnd and C * offset * offset * offset + self._w_max < self._w_est:
            state.cwnd = int(self._w_est)
            return

        # §4.2, §4.4, §4.5: aim one RTT ahead on the curve, clamped to [cwnd, 1.5 * cwnd], and move
        # (target - cwnd) / cwnd per segment acknowledged. A stretch ACK is applied in one step,
        # capped at the target that per-segment steps would approach but never pass.
        offset += state.srtt or state.min_rtt
        target = C * offset * offset * offset + self._w_max
        if target <= cwnd:
            return
        room = min(target, _MAX_TARGET * cwnd) - cwnd
        growth = self._growth + min(packets_acked * room / cwnd, room)
        whole = int(growth)
        if whole:
            state.cwnd = cwnd + whole
            growth -= whole
        self._growth = growth


ALGORITHMS: dict[str, type[CongestionControl]] = {Reno.name: Reno, Cubic.name: Cubic}
DEFAULT_ALGORITHM = Cubic.name      # Linux's default


def available() -> list[str]:
    """Algorithm names, sorted (the value of the available-congestion-control option)."""
    return sorted(ALGORITHMS)


def new(name: str, state: CongestionState) -> CongestionControl:
    """The algorithm called ``name`` driving ``state``."""
    try:
        algorithm = ALGORITHMS[name]
    except (KeyError, TypeError):
        raise ErrInvalidOptionValue(f"unknown congestion control algorithm {name!r}") from None
    return algorithm(state)
