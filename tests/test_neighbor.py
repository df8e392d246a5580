"""The neighbour cache state machine (RFC 4861 §7.3, shared by ARP and NDP) on its own, and its
bargain with the stack's TimerQueue: exactly the entries that wait for something hold an armed timer,
so a resolved or failed neighbour leaves no timer behind."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netsock.stack import ManualClock, NeighborCache, NeighborState, NUDConfig, PacketBuffer, TimerQueue
from netsock.tcpip.stats import ARPStats

BROADCAST = b"\xff" * 6
TIMED_STATES = {NeighborState.INCOMPLETE, NeighborState.REACHABLE, NeighborState.DELAY, NeighborState.PROBE}


def ip(n: int) -> bytes:
    return bytes((192, 0, 2, n))


def mac(n: int) -> bytes:
    return bytes((2, 0, 0, 0, 0, n))


class Wire:
    """Plays both the NIC (frames written) and the resolver (requests sent) of the cache."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []      # (link destination, payload)
        self.requests: list[tuple[bytes, bytes]] = []    # (target, unicast link address or b'')

    def write_to_link(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.frames.append((remote_link_address, pkt.to_bytes()))

    def link_address_request(self, target: bytes, local: bytes, remote_link_address: bytes) -> None:
        self.requests.append((target, remote_link_address))

    def resolve_static_address(self, addr: bytes) -> bytes | None:
        return BROADCAST if addr == ip(255) else None


class Cache:
    def __init__(self, **config) -> None:
        self.clock = ManualClock()
        self.timers = TimerQueue(self.clock)
        self.wire = Wire()
        self.stats = ARPStats()
        self.cache = NeighborCache(self.wire, self.wire, self.timers, self.stats, NUDConfig(**config))

    def send(self, n: int, payload: bytes = b"x") -> None:
        self.cache.send(ip(n), ip(2), 0x0800, PacketBuffer(0, payload))

    def state(self, n: int) -> NeighborState | None:
        entry = self.cache.get(ip(n))
        return entry.state if entry is not None else None

    def check_timers(self) -> None:
        """Exactly the entries that wait for something hold an armed timer; nothing else is armed."""
        for entry in self.cache.entries():
            assert entry.timer.armed == (entry.state in TIMED_STATES), entry
            assert not entry.pending or entry.state is NeighborState.INCOMPLETE, entry
        assert len(self.timers) == sum(e.state in TIMED_STATES for e in self.cache.entries())


def test_resolution_flushes_in_order_and_leaves_one_timer() -> None:
    c = Cache()
    for payload in (b"a", b"b", b"c"):
        c.send(1, payload)
    assert c.wire.requests == [(ip(1), b"")]                 # one broadcast request, not one per packet
    assert c.state(1) is NeighborState.INCOMPLETE
    c.check_timers()

    c.cache.handle_confirmation(ip(1), mac(1))
    assert c.wire.frames == [(mac(1), b"a"), (mac(1), b"b"), (mac(1), b"c")]
    assert c.state(1) is NeighborState.REACHABLE
    assert len(c.timers) == 1                                 # the reachable-time timer
    c.check_timers()


def test_failed_resolution_leaves_no_entry_and_no_timer() -> None:
    c = Cache()
    c.send(1)
    c.send(1)
    c.clock.advance(10)
    assert c.wire.requests == [(ip(1), b"")] * 3
    assert c.cache.get(ip(1)) is None
    assert len(c.timers) == 0
    assert (c.stats.resolution_failures.value, c.stats.pending_packets_dropped.value) == (1, 2)
    assert c.wire.frames == []


def test_broadcast_needs_no_entry() -> None:
    c = Cache()
    c.send(255, b"everyone")
    assert c.wire.frames == [(BROADCAST, b"everyone")]
    assert len(c.cache) == 0 and len(c.timers) == 0


def test_request_from_the_neighbour_being_resolved_completes_it() -> None:
    c = Cache()
    c.send(1, b"waiting")
    c.cache.handle_probe(ip(1), mac(1))
    assert c.wire.frames == [(mac(1), b"waiting")]
    assert c.state(1) is NeighborState.STALE
    c.check_timers()


def test_upper_layer_confirmation_saves_a_probe() -> None:
    c = Cache()
    c.cache.handle_probe(ip(1), mac(1))
    c.cache.confirm_reachability(ip(1))
    assert c.state(1) is NeighborState.REACHABLE
    c.send(1)
    c.clock.advance(14)
    assert c.wire.requests == []
    c.check_timers()

    c.send(2)
    c.cache.confirm_reachability(ip(2))                       # nothing known to confirm yet
    assert c.state(2) is NeighborState.INCOMPLETE


def test_unsolicited_update_with_a_new_address_makes_the_entry_stale() -> None:
    c = Cache()
    c.send(1)
    c.cache.handle_confirmation(ip(1), mac(1))
    c.cache.handle_confirmation(ip(1), mac(9), solicited=False)
    entry = c.cache.get(ip(1))
    assert (entry.state, entry.link_address) == (NeighborState.STALE, mac(9))
    c.check_timers()


def test_static_entries_never_expire_and_ignore_the_network() -> None:
    c = Cache()
    c.cache.add_static(ip(1), mac(1))
    c.send(1, b"now")
    assert c.wire.frames == [(mac(1), b"now")] and c.wire.requests == []
    c.cache.handle_confirmation(ip(1), mac(7))
    c.cache.handle_probe(ip(1), mac(7))
    c.clock.advance(86400)
    entry = c.cache.get(ip(1))
    assert (entry.state, entry.link_address) == (NeighborState.STATIC, mac(1))
    assert len(c.timers) == 0


def test_static_entry_replaces_a_pending_one() -> None:
    c = Cache()
    c.send(1)
    c.cache.add_static(ip(1), mac(1))
    assert c.stats.pending_packets_dropped.value == 1
    c.check_timers()
    c.clock.advance(10)
    assert c.state(1) is NeighborState.STATIC


def test_eviction_prefers_settled_entries_and_spares_static_ones() -> None:
    c = Cache(max_entries=3)
    c.cache.add_static(ip(1), mac(1))
    c.cache.handle_probe(ip(2), mac(2))       # settled (STALE)
    c.send(3)                                 # being resolved
    c.send(4)                                 # full: the settled entry goes
    assert [e.addr for e in c.cache.entries()] == [ip(1), ip(3), ip(4)]
    c.send(5)                                 # only unresolved ones left besides the static one
    assert [e.addr for e in c.cache.entries()] == [ip(1), ip(4), ip(5)]
    assert c.stats.pending_packets_dropped.value == 1
    c.check_timers()


def test_clear_cancels_every_timer() -> None:
    c = Cache()
    for n in range(1, 20):
        c.send(n)
    for n in range(1, 10):
        c.cache.handle_confirmation(ip(n), mac(n))
    assert len(c.timers) == 19
    c.cache.clear()
    assert len(c.cache) == 0 and len(c.timers) == 0
    assert c.stats.pending_packets_dropped.value == 10
    c.clock.advance(100)
    assert c.wire.requests.count((ip(15), b"")) == 1          # nothing fired after the clear


OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("send"), st.integers(1, 4)),
    st.tuples(st.just("reply"), st.integers(1, 4), st.integers(1, 3)),
    st.tuples(st.just("unsolicited"), st.integers(1, 4), st.integers(1, 3)),
    st.tuples(st.just("request"), st.integers(1, 4), st.integers(1, 3)),
    st.tuples(st.just("confirm"), st.integers(1, 4)),
    st.tuples(st.just("static"), st.integers(1, 4)),
    st.tuples(st.just("remove"), st.integers(1, 4)),
    st.tuples(st.just("advance"), st.floats(0, 60)),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_timers_match_states_through_any_history(operations) -> None:
    c = Cache(max_entries=3, max_pending_packets=2)
    for op, *args in operations:
        if op == "send":
            c.send(args[0])
        elif op == "reply":
            c.cache.handle_confirmation(ip(args[0]), mac(args[1]))
        elif op == "unsolicited":
            c.cache.handle_confirmation(ip(args[0]), mac(args[1]), solicited=False)
        elif op == "request":
            c.cache.handle_probe(ip(args[0]), mac(args[1]))
        elif op == "confirm":
            c.cache.confirm_reachability(ip(args[0]))
        elif op == "static":
            c.cache.add_static(ip(args[0]), mac(9))
        elif op == "remove":
            c.cache.remove(ip(args[0]))
        else:
            c.clock.advance(args[0])
        c.check_timers()
        # As Linux's gc_thresh3, the bound is on learned entries: static ones are configuration.
        assert sum(e.state is not NeighborState.STATIC for e in c.cache.entries()) <= 3
        assert all(len(e.pending) <= 2 for e in c.cache.entries())

    c.clock.advance(3600)     # with nothing going on, everything settles and no timer is left
    assert all(e.state in (NeighborState.STALE, NeighborState.STATIC) for e in c.cache.entries())
    assert len(c.timers) == 0
