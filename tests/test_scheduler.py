"""The gevent scheduler: one hub timer per stack drives protocol timers; waiters park greenlets."""

import time

import gevent

from netsock import scheduler
from netsock.scheduler import GeventClock, wait_for
from netsock.stack.clock import TimerQueue
from netsock.waiter import EventMask, WaiterQueue


def test_timer_queue_on_the_hub_fires_in_order_in_real_time():
    timers = TimerQueue(GeventClock())
    fired = []
    start = time.monotonic()
    for delay in (0.06, 0.02, 0.04):
        timers.call_later(delay, lambda d=delay: fired.append((d, time.monotonic() - start)))
    gevent.sleep(0.12)
    assert [d for d, _ in fired] == [0.02, 0.04, 0.06]
    assert all(elapsed >= d - 0.002 for d, elapsed in fired), "never early"
    assert len(timers) == 0


def test_one_hub_timer_serves_many_protocol_timers():
    clock = GeventClock()
    timers = TimerQueue(clock)
    ts = [timers.call_later(10 + i, lambda: None) for i in range(1000)]
    assert len(clock._timers) == 1
    for t in ts:
        t.cancel()
    assert len(timers) == 0


def test_deferred_calls_run_on_the_loop():
    clock = GeventClock()
    ran = []
    clock.call_soon(ran.append, 1)
    assert ran == []
    gevent.sleep(0)
    assert ran == [1]


def test_wait_for_parks_until_notified_and_times_out():
    queue = WaiterQueue()
    state = {"ready": False}

    def later():
        gevent.sleep(0.02)
        state["ready"] = True
        queue.notify(EventMask.IN)

    g = gevent.spawn(later)
    assert wait_for(queue, EventMask.IN, lambda: state["ready"], timeout=1.0)
    g.join()
    assert len(queue) == 0, "the waiter unregisters itself"
    t0 = time.monotonic()
    assert not wait_for(queue, EventMask.IN, lambda: False, timeout=0.05)
    assert time.monotonic() - t0 >= 0.045
    queue.notify(EventMask.OUT)  # nobody cares about OUT: no callback runs


def test_waiter_queue_masks():
    queue = WaiterQueue()
    got = []
    e_in = queue.register(got.append, EventMask.IN)
    queue.register(got.append, EventMask.OUT | EventMask.ERR)
    queue.notify(EventMask.IN | EventMask.ERR)
    assert got == [EventMask.IN, EventMask.ERR]
    queue.unregister(e_in)
    queue.unregister(e_in)  # twice is harmless
    assert queue.events() == EventMask.OUT | EventMask.ERR


def test_blocking_retries_an_operation_until_it_stops_blocking():
    from netsock.scheduler import blocking
    from netsock.tcpip import ErrWouldBlock

    queue = WaiterQueue()

    class Endpoint:
        data: list[bytes] = []

        def readiness(self, mask):
            return EventMask.IN if self.data else EventMask(0)

        def read(self):
            if not self.data:
                raise ErrWouldBlock()
            return self.data.pop(0)

    ep = Endpoint()

    def later():
        gevent.sleep(0.01)
        ep.data.append(b"late")
        queue.notify(EventMask.IN)

    g = gevent.spawn(later)
    assert blocking(ep, queue, EventMask.IN, ep.read) == b"late"
    g.join()


def test_a_burst_of_notifications_wakes_the_waiter_once():
    queue = WaiterQueue()
    state = {"ready": False, "checks": 0}

    def ready():
        state["checks"] += 1
        return state["ready"]

    def notifier():
        for _ in range(5):
            queue.notify(EventMask.IN)      # before the waiter runs again: one wake-up
        gevent.sleep(0.01)
        state["ready"] = True
        queue.notify(EventMask.IN)

    g = gevent.spawn(notifier)
    assert wait_for(queue, EventMask.IN, ready, timeout=1.0)
    g.join()
    assert state["checks"] == 3             # at the start, after the burst, after the last


def test_a_notification_that_does_not_make_it_ready_leaves_the_timeout_running():
    queue = WaiterQueue()
    g = gevent.spawn_later(0.01, queue.notify, EventMask.IN)
    t0 = time.monotonic()
    assert not wait_for(queue, EventMask.IN, lambda: False, timeout=0.05)
    assert time.monotonic() - t0 >= 0.045
    g.join()
    assert len(queue) == 0


class Interrupt(Exception):
    pass


def test_a_wake_up_scheduled_as_the_wait_ends_does_not_switch_into_the_greenlet_later():
    queue = WaiterQueue()
    log = []

    def waiter():
        try:
            wait_for(queue, EventMask.IN, lambda: False)
        except Interrupt:
            log.append("interrupted")
        gevent.sleep(0.02)                  # a stray switch into this greenlet would break the sleep
        log.append("slept")

    g = gevent.spawn(waiter)
    gevent.sleep(0)
    g.kill(Interrupt, block=False)          # its exception is queued first...
    queue.notify(EventMask.IN)              # ...then a wake-up, which finds the wait over
    g.join()
    assert log == ["interrupted", "slept"]
    assert len(queue) == 0


def test_greenlets_run_correctly_on_reused_frame_stacks():
    # A finished greenlet's frame stack goes to the next one (native/arena.c, put in place when the
    # scheduler is imported): many greenlets at once and in turn, shallow and deep enough to take
    # several chunks, each must see only its own frames.
    def depth(n: int) -> int:
        return n if n == 0 else 1 + depth(n - 1)

    def work(i: int) -> int:
        gevent.sleep(0)
        return depth(i % 7 * 150) + i

    if scheduler._native is not None:
        assert scheduler._native.lib.ns_arena_cache_install() == 0     # in place already
    for _ in range(3):
        greenlets = [gevent.spawn(work, i) for i in range(200)]
        gevent.joinall(greenlets)
        assert [g.value for g in greenlets] == [i % 7 * 150 + i for i in range(200)]
