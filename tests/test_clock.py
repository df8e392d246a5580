"""The per-stack timer heap on a manual clock."""

import gc
import weakref

import pytest

from netsock.stack.clock import ManualClock, TimerQueue


def make():
    clock = ManualClock()
    return clock, TimerQueue(clock)


def test_timers_fire_in_deadline_order_at_their_time():
    clock, timers = make()
    fired = []
    for name, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
        timers.call_later(delay, fired.append, name)
    clock.advance(0.999)
    assert fired == []
    clock.advance(0.002)
    assert fired == ["a"]
    clock.advance(5)
    assert fired == ["a", "b", "c"] and len(timers) == 0


def test_cancel_and_reset():
    clock, timers = make()
    fired = []
    t = timers.timer(fired.append, "x")
    t.reset(1.0)
    t.reset(2.0)            # re-arming moves it, it does not add a second firing
    clock.advance(1.5)
    assert fired == [] and t.armed
    clock.advance(1.0)
    assert fired == ["x"] and not t.armed
    t.reset(1.0)
    t.cancel()
    clock.advance(10)
    assert fired == ["x"] and len(timers) == 0


def test_a_timer_can_rearm_itself_from_its_callback():
    clock, timers = make()
    ticks = []

    def tick():
        ticks.append(clock.now())
        if len(ticks) < 5:
            t.reset(1.0)

    t = timers.timer(tick)
    t.reset(1.0)
    clock.advance(10)
    assert len(ticks) == 5 and ticks == sorted(ticks)


def test_rearming_many_times_does_not_grow_the_heap():
    clock, timers = make()
    ts = [timers.timer(lambda: None) for _ in range(100)]
    for i in range(10_000):
        ts[i % 100].reset(1.0 + i * 1e-6)
    assert len(timers) == 100
    for t in ts:
        t.cancel()
    assert len(timers) == 0
    assert len(timers._heap) <= 64, "stale entries are compacted away"


def test_manual_clock_runs_deferred_calls_before_timers():
    clock, timers = make()
    order = []
    timers.call_later(0.5, order.append, "timer")
    clock.call_soon(order.append, "soon")
    clock.advance(1)
    assert order == ["soon", "timer"]
    assert clock.now_ns() > 0


def test_a_closed_timer_lets_go_of_its_callback_and_cannot_be_armed_again():
    """Closing breaks the owner -> timer -> callback -> owner cycle: reference counting frees the owner."""
    clock, timers = make()
    fired = []

    class Owner:
        def __init__(self) -> None:
            self.timer = timers.timer(self.fire)

        def fire(self) -> None:
            fired.append(self)

    owner = Owner()
    timer = owner.timer
    timer.reset(1.0)
    gone = weakref.ref(owner)
    gc.disable()
    try:
        timer.close()
        del owner
        assert gone() is None
    finally:
        gc.enable()
    assert not timer.armed and len(timers) == 0
    clock.advance(2)
    assert fired == []
    with pytest.raises(RuntimeError):
        timer.reset(1.0)


def test_a_timer_pushed_later_keeps_one_heap_entry_and_fires_at_its_last_deadline():
    clock, timers = make()
    fired = []
    t = timers.timer(lambda: fired.append(clock.now()))
    start = clock.now()
    for _ in range(100):                    # a retransmission timer moved on by every ACK
        clock.advance(0.01)
        t.reset(1.0)
    assert len(timers._heap) == 1
    clock.advance(0.999)
    assert fired == []
    clock.advance(0.002)
    assert fired == [pytest.approx(start + 2.0)] and len(timers) == 0


def test_a_timer_moved_earlier_fires_once_at_the_earlier_deadline():
    clock, timers = make()
    fired = []
    t = timers.timer(lambda: fired.append(clock.now()))
    start = clock.now()
    t.reset(5.0)
    t.reset(1.0)
    clock.advance(10)
    assert fired == [pytest.approx(start + 1.0)]


def test_a_cancelled_timer_armed_again_fires_only_at_its_new_deadline():
    clock, timers = make()
    fired = []
    t = timers.timer(lambda: fired.append(clock.now()))
    start = clock.now()
    t.reset(1.0)
    t.cancel()
    t.reset(3.0)
    clock.advance(2.0)
    assert fired == [] and len(timers) == 1
    clock.advance(2.0)
    assert fired == [pytest.approx(start + 3.0)] and len(timers) == 0 and not timers._heap


def test_a_closed_queue_fires_nothing_and_holds_nothing() -> None:
    """A closing stack closes its queue: what was armed, or cancelled but still in the heap, must not
    fire later nor keep its owner alive from the clock's side."""
    clock, timers = make()
    fired = []

    class Owner:
        pass

    owner = Owner()
    owner.timer = timers.timer(fired.append, owner)
    owner.timer.reset(1.0)
    cancelled = timers.timer(fired.append, "cancelled")
    cancelled.reset(0.5)
    cancelled.cancel()
    timers.close()
    assert len(timers) == 0 and not owner.timer.armed
    owner.timer.reset(0.1)          # arming after close does nothing
    gone = weakref.ref(owner)
    del owner
    gc.collect()
    clock.advance(10)
    assert fired == [] and gone() is None
