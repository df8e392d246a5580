"""Congestion control: Reno and CUBIC driven by a fake sender on a hand-moved clock.

Expected windows come from the RFC formulas written out here (RFC 5681 for Reno, RFC 9438 for
CUBIC), with the constants restated rather than imported, so a wrong constant or formula in the
module cannot make its own test pass. ``one_round`` plays a round trip the way a cwnd-limited
sender sees it: a window of segments acknowledged one at a time, spread evenly over the RTT.
"""

from __future__ import annotations

import errno
import gc
import math
import tracemalloc

import pytest

from netsock.tcpip import ErrInvalidOptionValue
from netsock.transport.tcp import congestion
from netsock.transport.tcp.congestion import Cubic, Reno

INFINITE = 2**31 - 1
C = 0.4         # RFC 9438 §5
BETA = 0.7      # RFC 9438 §4.6
ALPHA = 3 * (1 - BETA) / (1 + BETA)     # RFC 9438 §4.3


class FakeSender:
    """The attributes a sender exposes to its algorithm, and a clock the test moves."""

    def __init__(self, cwnd: int, ssthresh: int = INFINITE, rtt: float = 0.1) -> None:
        self.cwnd = cwnd
        self.ssthresh = ssthresh
        self.mss = 1460
        self.outstanding = cwnd
        self.srtt = rtt
        self.min_rtt = rtt
        self.clock = 1000.0

    def now(self) -> float:
        return self.clock


def one_round(cc: congestion.CongestionControl, state: FakeSender) -> None:
    """A round trip: the whole window acknowledged segment by segment, evenly over srtt."""
    window = state.outstanding = state.cwnd
    for _ in range(window):
        cc.on_ack(1)
        state.clock += state.srtt / window


def w_cubic(t: float, w_max: float, cwnd_epoch: float) -> float:
    """RFC 9438 Figure 1 with K from Figure 2."""
    k = math.cbrt((w_max - cwnd_epoch) / C)
    return C * (t - k) ** 3 + w_max


def after_loss(state: FakeSender, cc: congestion.CongestionControl) -> None:
    """Fast recovery as the sender runs it, collapsed to its effect on the window."""
    cc.on_loss_detected()
    state.cwnd = state.ssthresh
    cc.post_recovery()


# --- slow start -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reno", "cubic"])
def test_slow_start_doubles_every_round_trip(name: str) -> None:
    state = FakeSender(cwnd=10)
    cc = congestion.new(name, state)
    windows = []
    for _ in range(5):
        one_round(cc, state)
        windows.append(state.cwnd)
    assert windows == [20, 40, 80, 160, 320]


@pytest.mark.parametrize("name", ["reno", "cubic"])
def test_slow_start_stops_at_ssthresh(name: str) -> None:
    state = FakeSender(cwnd=10, ssthresh=16)
    cc = congestion.new(name, state)
    cc.on_ack(6)
    assert state.cwnd == 16


def test_stretch_ack_crossing_ssthresh_gives_remainder_to_congestion_avoidance() -> None:
    state = FakeSender(cwnd=10, ssthresh=16)
    cc = Reno(state)
    cc.on_ack(10)               # 6 take slow start to ssthresh; 4 count towards the next +1
    assert state.cwnd == 16
    cc.on_ack(11)
    assert state.cwnd == 16     # 15 of 16
    cc.on_ack(1)
    assert state.cwnd == 17

    state = FakeSender(cwnd=10, ssthresh=12)
    cc = Reno(state)
    cc.on_ack(40)               # 2 in slow start, then 38 = 3 * 12 + 2
    assert state.cwnd == 15
    cc.on_ack(12)
    assert state.cwnd == 15     # 14 of 15
    cc.on_ack(1)
    assert state.cwnd == 16


def test_cubic_stretch_ack_crossing_ssthresh_grows_like_reno_after_it() -> None:
    # No loss yet: the stage starts from its own window (RFC 9438 §4.10: W_max = cwnd_epoch,
    # cwnd_prior = cwnd), so at t = 0 only the Reno-friendly estimate grows, at Reno's rate.
    state = FakeSender(cwnd=10, ssthresh=16)
    cc = Cubic(state)
    cc.on_ack(6 + 32)
    assert state.cwnd == 16 + 32 // 16


def test_no_growth_for_an_ack_of_nothing() -> None:
    for cls in (Reno, Cubic):
        state = FakeSender(cwnd=10)
        cls(state).on_ack(0)
        assert state.cwnd == 10


# --- Reno -----------------------------------------------------------------------------------------


def test_reno_congestion_avoidance_adds_one_segment_per_round_trip() -> None:
    state = FakeSender(cwnd=20, ssthresh=20)
    cc = Reno(state)
    windows = []
    for _ in range(10):
        one_round(cc, state)
        windows.append(state.cwnd)
    assert windows == list(range(21, 31))


def test_reno_loss_halves_the_flight() -> None:
    state = FakeSender(cwnd=60)
    state.outstanding = 41      # RFC 5681 eq. (4): FlightSize, not cwnd
    cc = Reno(state)
    cc.on_loss_detected()
    assert state.ssthresh == 20
    state.outstanding = 3
    cc.on_loss_detected()
    assert state.ssthresh == 2


def test_reno_loss_restarts_the_avoidance_count() -> None:
    state = FakeSender(cwnd=20, ssthresh=20)
    cc = Reno(state)
    cc.on_ack(19)
    state.outstanding = 20
    after_loss(state, cc)
    assert state.cwnd == 10
    cc.on_ack(9)
    assert state.cwnd == 10
    cc.on_ack(1)
    assert state.cwnd == 11


# --- timeouts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "ssthresh"), [("reno", 25), ("cubic", 35)])
def test_timeout_restarts_from_one_segment(name: str, ssthresh: int) -> None:
    state = FakeSender(cwnd=50)
    cc = congestion.new(name, state)
    cc.on_rto_expired()
    assert (state.cwnd, state.ssthresh) == (1, ssthresh)

    # The same segment timing out again leaves ssthresh alone (RFC 5681 §3.1).
    state.outstanding = 4
    cc.on_rto_expired()
    assert (state.cwnd, state.ssthresh) == (1, ssthresh)

    # After progress a timeout is a new congestion event.
    cc.on_ack(1)
    assert state.cwnd == 2
    cc.on_rto_expired()
    assert state.cwnd == 1
    assert state.ssthresh == 2


def test_cubic_after_timeout_grows_convexly_from_the_stage_start() -> None:
    # RFC 9438 §4.8: in the first avoidance stage after a timeout, K = 0 and W_max = cwnd_epoch.
    state = FakeSender(cwnd=50, rtt=0.2)
    cc = Cubic(state)
    cc.on_rto_expired()
    while state.cwnd < state.ssthresh:
        cc.on_ack(1)            # slow start does not look at the clock
    assert state.cwnd == 35
    start = state.clock         # the ACK reaching ssthresh began the stage
    while state.clock - start < 5.0:
        one_round(cc, state)
    assert state.cwnd == pytest.approx(C * (state.clock - start) ** 3 + 35, abs=1.5)


# --- CUBIC ----------------------------------------------------------------------------------------


def test_cubic_loss_reduces_to_beta() -> None:
    state = FakeSender(cwnd=100)
    state.outstanding = 60      # CUBIC multiplies cwnd (RFC 9438 §4.6, as Linux and netstack)
    cc = Cubic(state)
    cc.on_loss_detected()
    assert state.ssthresh == 70
    state.cwnd = 2
    cc.on_loss_detected()
    assert state.ssthresh == 2


def test_cubic_window_follows_the_cubic_curve() -> None:
    # srtt 200 ms keeps the Reno-friendly estimate below the curve throughout.
    state = FakeSender(cwnd=100, rtt=0.2)
    cc = Cubic(state)
    after_loss(state, cc)
    assert state.cwnd == 70
    k = math.cbrt((100 - 70) / C)
    start = state.clock
    samples: list[tuple[float, int]] = []
    while state.clock - start < k + 5:
        t = state.clock - start
        samples.append((t, state.cwnd))
        # RFC 9438 §4.2-§4.5 track W_cubic(t + RTT) one RTT ahead, so the window is on the curve.
        assert state.cwnd == pytest.approx(w_cubic(t, 100, 70), abs=1.5), t
        one_round(cc, state)

    def growth(t0: float, t1: float) -> int:
        inside = [cwnd for t, cwnd in samples if t0 <= t <= t1]
        return inside[-1] - inside[0]

    assert growth(0, 1) > growth(k - 1, k) + 8                  # concave below W_max
    assert max(cwnd for t, cwnd in samples if t <= k) == 100    # reaches W_max near K, not above
    assert 100 <= next(cwnd for t, cwnd in samples if t >= k + 0.5) <= 101  # a plateau around K
    assert growth(k + 2, k + 3) > growth(k, k + 1) + 5          # convex past it
    assert samples[-1][1] > 140


@pytest.mark.parametrize("stretch", [False, True])
def test_cubic_grows_at_most_half_a_window_per_round_trip(stretch: bool) -> None:
    # Far along the convex region W_cubic(t + RTT) is thousands of segments; RFC 9438 §4.2 clamps
    # the target to 1.5 * cwnd, so a round trip (or one ACK for all of it) adds at most cwnd / 2.
    state = FakeSender(cwnd=100, rtt=0.2)
    cc = Cubic(state)
    after_loss(state, cc)
    cc.on_ack(1)
    state.clock += 60.0
    assert w_cubic(60.0, 100, 70) > 10_000
    if stretch:
        cc.on_ack(140)          # more than a window: the step never passes the target
        assert state.cwnd == 105
    else:
        one_round(cc, state)
        assert 100 <= state.cwnd <= 105


def test_cubic_fast_convergence_lowers_w_max_on_a_loss_below_it() -> None:
    state = FakeSender(cwnd=100, rtt=0.2)
    cc = Cubic(state)
    after_loss(state, cc)
    while state.cwnd < 90:
        one_round(cc, state)
    loss_window = state.cwnd
    after_loss(state, cc)       # the second loss comes before the window is back at 100
    epoch = state.ssthresh
    assert epoch == loss_window * 7 // 10
    # RFC 9438 §4.7: the plateau is at (1 + BETA) / 2 of the loss window, not the loss window.
    w_max = loss_window * (1 + BETA) / 2
    k = math.cbrt((w_max - epoch) / C)
    start = state.clock
    while state.clock - start < k + 1:
        assert state.cwnd == pytest.approx(w_cubic(state.clock - start, w_max, epoch), abs=1.5)
        one_round(cc, state)
    assert state.cwnd < w_max + 2 < loss_window


def test_cubic_without_fast_convergence_on_a_loss_above_w_max() -> None:
    state = FakeSender(cwnd=100, rtt=0.2)
    cc = Cubic(state)
    after_loss(state, cc)
    while state.cwnd < 110:
        one_round(cc, state)
    loss_window = state.cwnd
    after_loss(state, cc)
    epoch = state.cwnd
    k = math.cbrt((loss_window - epoch) / C)
    start = state.clock
    while state.clock - start < k:
        one_round(cc, state)
    assert state.cwnd == pytest.approx(loss_window, abs=1.5)


def test_cubic_reno_friendly_region_dominates_at_small_rtt() -> None:
    # 1 ms RTT and a 10-segment W_max: the curve needs K ~ 2 s (2000 round trips) to climb back,
    # while Reno adds ALPHA per round trip up to the old window (RFC 9438 §4.3) and 1 after it.
    state = FakeSender(cwnd=10, rtt=0.001)
    cc = Cubic(state)
    after_loss(state, cc)
    assert state.cwnd == 7
    start = state.clock
    rounds = 100
    for _ in range(rounds):
        one_round(cc, state)
    t = state.clock - start
    rounds_to_prior = (10 - 7) / ALPHA
    reno_estimate = 10 + (rounds - rounds_to_prior)
    assert state.cwnd == pytest.approx(reno_estimate, abs=2)
    assert w_cubic(t + state.srtt, 10, 7) < 8 < state.cwnd


def test_cubic_uses_the_stacks_clock_only() -> None:
    state = FakeSender(cwnd=100, rtt=0.2)
    cc = Cubic(state)
    after_loss(state, cc)
    cc.on_ack(1)
    frozen = state.cwnd
    for _ in range(1000):       # time does not move: the curve stays at t = 0, W_est barely moves
        cc.on_ack(1)
    assert frozen <= state.cwnd <= frozen + 1000 * ALPHA / 70 + 1


def test_post_recovery_keeps_the_window_the_sender_set() -> None:
    for cls in (Reno, Cubic):
        state = FakeSender(cwnd=40)
        cc = cls(state)
        cc.on_loss_detected()
        state.cwnd = 5          # RFC 6582 §3.2 step 6: little in flight, so less than ssthresh
        cc.post_recovery()
        assert state.cwnd == 5


def test_cubic_stage_after_a_deflated_recovery_starts_at_ssthresh() -> None:
    # Leaving recovery below ssthresh means slow start first; the curve starts where it ends.
    state = FakeSender(cwnd=100, rtt=0.2)
    cc = Cubic(state)
    cc.on_loss_detected()
    state.cwnd = 10
    cc.post_recovery()
    while state.cwnd < state.ssthresh:
        cc.on_ack(1)
    assert state.cwnd == 70
    start = state.clock
    for _ in range(10):
        one_round(cc, state)
    assert state.cwnd == pytest.approx(w_cubic(state.clock - start, 100, 70), abs=1.5)


# --- registry -------------------------------------------------------------------------------------


def test_registry() -> None:
    assert congestion.available() == ["cubic", "reno"]
    assert congestion.DEFAULT_ALGORITHM == "cubic"
    state = FakeSender(cwnd=10)
    for name in congestion.available():
        cc = congestion.new(name, state)
        assert cc.name == name
        assert isinstance(cc, congestion.ALGORITHMS[name])


@pytest.mark.parametrize("name", ["bbr", "", "Reno", None, ["cubic"]])
def test_unknown_algorithm_is_an_invalid_option_value(name: object) -> None:
    with pytest.raises(ErrInvalidOptionValue) as info:
        congestion.new(name, FakeSender(cwnd=10))  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


# --- cost -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reno", "cubic"])
def test_memory_does_not_grow_over_many_acks(name: str) -> None:
    state = FakeSender(cwnd=1000, ssthresh=1000, rtt=0.05)
    cc = congestion.new(name, state)

    def drive(n: int) -> None:
        for i in range(n):
            cc.on_ack(1 + (i & 3))
            state.clock += 1e-5
            if i % 20_000 == 19_999:
                state.outstanding = state.cwnd
                after_loss(state, cc)

    drive(1000)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        drive(100_000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 1024


def test_cubic_time_spent_idle_is_no_time_on_the_curve() -> None:
    """As Linux's CA_EVENT_TX_START: a sender that resumes after an idle spell goes on along the
    curve from where it stopped, not from where the idle time would have carried it."""
    busy, idle = FakeSender(cwnd=50, ssthresh=50), FakeSender(cwnd=50, ssthresh=50)
    busy_cc, idle_cc = Cubic(busy), Cubic(idle)
    for state, cc in ((busy, busy_cc), (idle, idle_cc)):
        for _ in range(3):
            one_round(cc, state)
    idle.clock += 10.0
    idle_cc.on_transmit_start(10.0)
    for state, cc in ((busy, busy_cc), (idle, idle_cc)):
        one_round(cc, state)
    assert idle.cwnd == busy.cwnd
    uncorrected = FakeSender(cwnd=50, ssthresh=50)
    uncorrected_cc = Cubic(uncorrected)
    for _ in range(3):
        one_round(uncorrected_cc, uncorrected)
    uncorrected.clock += 10.0
    one_round(uncorrected_cc, uncorrected)
    assert uncorrected.cwnd > busy.cwnd             # what the shift prevents
