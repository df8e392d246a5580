"""A link wrapper that injects network faults (what ``tc netem`` and ``tc tbf`` do to a Linux link).

Like the sniffer, ``FaultEndpoint`` sits between the NIC and the real link: it is the link endpoint
the NIC writes to and the dispatcher the real link delivers to. Each direction — *outbound* (NIC to
link) and *inbound* (link to NIC) — has its own ``FaultConfig``, random streams and counters, and
can be reconfigured at any time with ``configure``.

A packet goes through these stages, in this order:

1. blackhole: everything is dropped (a partition; packets already held back still arrive);
2. bursty loss: a Gilbert-Elliott chain, stepped once per packet, decides with its state's rate;
3. random loss;
4. duplication: a copy (a clone sharing the read-only payload) follows the original through the
   remaining stages, so it may be queue-dropped, corrupted or delayed on its own;
5. rate limit: a bottleneck of ``rate`` bits/s serialising packets one after another, in front of a
   FIFO of ``queue_limit`` bytes (the packet on the wire included); a packet that does not fit is
   tail-dropped. A packet leaves when its last bit is sent, ``size * 8 / rate`` seconds after the
   previous one left (or after it arrived, on an idle link). Sizes are network-layer bytes: the
   wrapper never sees link headers;
6. corruption: one bit flipped at a random position *after the network header* — in the part only
   the transport checksum covers, so the packet reaches the transport and fails there (a flip in
   the network header would mostly exercise IPv4's header checksum, and go unnoticed in IPv6, which
   has none). The flip is made in a copy: the buffers the caller passed are never written.
   Packets with no such part (ARP, a bare header) pass intact. Nothing detects the flip where no
   checksum is computed: a UDP datagram sent without one, a link with TX checksum offload
   (the device checksums the corrupted bytes) or RX checksum offload (loopback: nothing is verified).
   A corrupted copy loses ``checksum_verified``: what vouched for the checksum saw the bytes before;
7. delay: ``delay`` plus a uniform sample from [-jitter, +jitter] (netem's convention), never below
   zero. Jitter does not reorder: a packet is released no earlier than the packet before it
   (release = max(previous release, arrival + delay)), so a stream keeps its order;
8. reordering: with probability ``reorder`` a packet is held back ``reorder_hold`` seconds beyond
   its normal release time and does not hold back the packets behind it: whatever is released in
   the meantime overtakes it. The model is in time, like the path-length differences that reorder
   real traffic; it composes with delay and rate limiting, and a held packet is never stranded
   when the traffic stops (an "after the next N packets" model would need a timeout for that).

A packet due now is passed on synchronously, in the caller's context, so with every fault off the
wrapper adds no delay and only a few attribute reads per packet. Later packets wait in a heap (as
the very PacketBuffers: outbound payloads are immutable or per-packet, inbound frames per-frame) and
are released by a timer of the wrapper's own ``TimerQueue``: deterministic under ``ManualClock``,
real time on the hub under ``GeventClock``. A released outbound packet the lower link refuses, or a
released inbound packet the dispatcher fails on, is counted (``dropped_error``), never raised into
the timer.

Decisions come from random streams seeded by (seed, direction, fault): the same seed and the same
packets give the same decisions, and switching one fault on does not change another's decisions.
Drops are silent to the sender, as they are in a network: the packet was accepted.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..header import ethernet as eth
from ..header import ipv4
from ..stack.clock import Clock, TimerQueue
from ..stack.interfaces import LinkCapabilities, LinkEndpoint
from ..stack.packet_buffer import PacketBuffer
from ..tcpip.errors import ErrClosedForSend, Error
from ..tcpip.stats import StatCounter, StatGroup
from . import write_each
from ..header.gso import segment_tcp
from .nested import NestedEndpoint

__all__ = ["FaultConfig", "FaultDirectionStats", "FaultEndpoint", "FaultPipe", "FaultStats", "GilbertElliott"]

_log = logging.getLogger(__name__)

DirectionName = Literal["outbound", "inbound"]


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], not {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and >= 0, not {value!r}")


@dataclass(frozen=True)
class GilbertElliott:
    """Bursty loss: a two-state Markov chain stepped once per packet (the chain starts good).

    A packet is lost with the current state's loss rate, then the chain may change state. Bad spells
    last 1 / p_bad_to_good packets on average; ``mean_loss`` is the long-run loss rate.
    """

    p_good_to_bad: float
    p_bad_to_good: float
    loss_bad: float = 1.0
    loss_good: float = 0.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_probability(field.name, getattr(self, field.name))

    @property
    def mean_loss(self) -> float:
        leave = self.p_good_to_bad + self.p_bad_to_good
        if not leave:
            return self.loss_good
        return (self.p_bad_to_good * self.loss_good + self.p_good_to_bad * self.loss_bad) / leave


@dataclass(frozen=True)
class FaultConfig:
    """The faults of one direction; the default (all off) passes packets on untouched.

    Probabilities are per packet; times are in seconds.
    """

    blackhole: bool = False
    loss: float = 0.0
    burst: GilbertElliott | None = None
    duplicate: float = 0.0
    rate: float = 0.0                 # bits/s; 0: unlimited
    queue_limit: int = 64 * 1024      # bytes waiting for (or on) the rate-limited wire
    corrupt: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_hold: float = 0.01        # how long a reordered packet is held beyond its release time

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "corrupt", "reorder"):
            _check_probability(name, getattr(self, name))
        for name in ("rate", "queue_limit", "delay", "jitter", "reorder_hold"):
            _check_non_negative(name, getattr(self, name))
        if self.burst is not None and not isinstance(self.burst, GilbertElliott):
            raise TypeError(f"burst must be a GilbertElliott or None, not {type(self.burst).__name__}")

    @property
    def active(self) -> bool:
        """Does any fault apply? (False: packets pass through synchronously.)"""
        return bool(self.blackhole or self.loss or self.burst is not None or self.duplicate or self.rate
                    or self.corrupt or self.delay or self.jitter or self.reorder)


class FaultDirectionStats(StatGroup):
    """What happened to the packets of one direction. Each packet lost is counted under one cause."""

    packets: StatCounter            # offered to this direction, before any fault
    bytes: StatCounter              # their network-layer bytes
    dropped_blackhole: StatCounter
    dropped_burst: StatCounter      # lost by the Gilbert-Elliott model
    dropped_loss: StatCounter       # lost at random
    dropped_queue: StatCounter      # tail drop: the rate limiter's queue was full
    dropped_error: StatCounter      # a held packet or a copy the lower link refused / the dispatcher failed on
    dropped_detached: StatCounter   # inbound: no dispatcher was attached
    dropped_closed: StatCounter     # still held back when the endpoint was closed
    duplicated: StatCounter         # extra copies made
    corrupted: StatCounter          # packets (or copies) with one bit flipped
    reordered: StatCounter          # packets held back to be overtaken
    delayed: StatCounter            # packets passed on later than they arrived (delay, queueing, reordering)


class FaultStats(StatGroup):
    outbound: FaultDirectionStats
    inbound: FaultDirectionStats


# Where an IPv6 packet's transport part starts: skip the extension headers, which no checksum covers.
_IPV6_FRAGMENT = 44
_IPV6_AUTH = 51
_IPV6_NO_NEXT_HEADER = 59
_IPV6_EXTENSION_HEADERS = frozenset((0, 43, _IPV6_FRAGMENT, _IPV6_AUTH, 60))  # hop-by-hop, routing, dst options


def _transport_offset(protocol: int, packet: bytes) -> int | None:
    """Offset of the part of an IP packet that only the transport checksum covers (None: no such part)."""
    if protocol == ipv4.PROTOCOL_NUMBER:
        if len(packet) < 20 or packet[0] >> 4 != 4 or packet[0] & 0xF < 5:
            return None
        return (packet[0] & 0xF) * 4
    if protocol == eth.ETHERTYPE_IPV6:
        if len(packet) < 40 or packet[0] >> 4 != 6:
            return None
        next_header, offset = packet[6], 40
        while next_header in _IPV6_EXTENSION_HEADERS:
            if len(packet) < offset + 2:
                return None
            if next_header == _IPV6_FRAGMENT:
                length = 8
            elif next_header == _IPV6_AUTH:
                length = (packet[offset + 1] + 2) * 4
            else:
                length = (packet[offset + 1] + 1) * 8
            next_header = packet[offset]
            offset += length
        return None if next_header == _IPV6_NO_NEXT_HEADER else offset
    return None


def _corrupted_copy(pkt: PacketBuffer, protocol: int, rng: random.Random) -> PacketBuffer | None:
    """A copy of ``pkt`` with one random bit of its transport part flipped; None if it has none.

    Only the part holding the bit is copied (the prepended headers are copied by ``clone`` anyway);
    the original's buffers stay as they are.
    """
    packet = b"".join(pkt.views())
    start = _transport_offset(protocol, packet)
    if start is None or start >= len(packet):
        return None
    bit = rng.randrange((len(packet) - start) * 8)
    position, mask = start + (bit >> 3), 1 << (bit & 7)
    copy = pkt.clone()
    copy.checksum_verified = False      # whatever vouched for the checksum saw the bytes before the flip
    headers = pkt.header_size()
    if position < headers:
        copy.headers()[position] ^= mask
    else:
        data = bytearray(pkt.data)
        data[position - headers] ^= mask
        copy.data = memoryview(data)
    return copy


_Packet = tuple[Any, ...]   # the arguments of write_packet / deliver_network_packet; the PacketBuffer last


class FaultPipe:
    """One direction's faults and state: random streams, rate limiter, held packets and their timer.

    ``offer`` takes a packet — a tuple whose last item is its PacketBuffer and whose item before is
    its network protocol number — through the faults, and ``pass_on`` receives it when it is due.
    ``FaultEndpoint`` has two; a private network's switch one per pair of ports. ``name`` keys the
    random streams (with ``seed``), so pipes with different names decide independently.
    """

    __slots__ = ("name", "clock", "stats", "config", "active", "held", "own_held", "_pass_on", "_seq", "_timer",
                 "_releasing", "_floor", "_bad", "_busy_until", "_backlog", "_backlog_bytes",
                 "_rng_burst", "_rng_loss", "_rng_duplicate", "_rng_corrupt", "_rng_delay", "_rng_reorder")

    def __init__(self, name: str, seed: int, config: FaultConfig, clock: Clock, timers: TimerQueue,
                 stats: FaultDirectionStats, pass_on: Callable[[_Packet], None], own_held: bool = False) -> None:
        self.name = name
        # Copy a packet's payload before holding it back, if it may lie in its writer's memory (outbound
        # PacketBuffers: a datagram's, a MSG_ZEROCOPY send's), which the writer is free to change once its
        # write has returned.
        self.own_held = own_held
        self.clock = clock
        self.stats = stats
        self._pass_on = pass_on
        self._seq = itertools.count()
        self._timer = timers.timer(self.release)
        self.held: list[tuple[float, int, _Packet]] = []   # heap by (release time, arrival order)
        self._releasing = False
        self._floor = -math.inf          # release time of the last packet not reordered
        self._bad = False                # Gilbert-Elliott state
        self._busy_until = -math.inf     # when the rate-limited wire finishes its last accepted packet
        self._backlog: deque[tuple[float, int]] = deque()   # (departure, size) of packets not yet sent
        self._backlog_bytes = 0
        # One stream per fault: enabling one fault leaves the others' decisions unchanged. String
        # seeds are hashed with SHA-512, independently of PYTHONHASHSEED.
        prefix = f"netsock.link.fault/{seed}/{name}/"
        self._rng_burst = random.Random(prefix + "burst")
        self._rng_loss = random.Random(prefix + "loss")
        self._rng_duplicate = random.Random(prefix + "duplicate")
        self._rng_corrupt = random.Random(prefix + "corrupt")
        self._rng_delay = random.Random(prefix + "delay")
        self._rng_reorder = random.Random(prefix + "reorder")
        self.set_config(config)

    def set_config(self, config: FaultConfig) -> None:
        if config.burst is None:
            self._bad = False
        self.config = config
        self.active = config.active

    def offer(self, packet: _Packet) -> None:
        """Take one packet through the faults (see the module's docstring for the stages)."""
        config = self.config
        stats = self.stats
        if config.blackhole:
            stats.dropped_blackhole.increment()
            return
        burst = config.burst
        if burst is not None:
            rng = self._rng_burst
            bad = self._bad
            lost = rng.random() < (burst.loss_bad if bad else burst.loss_good)
            if rng.random() < (burst.p_bad_to_good if bad else burst.p_good_to_bad):
                self._bad = not bad
            if lost:
                stats.dropped_burst.increment()
                return
        if config.loss and self._rng_loss.random() < config.loss:
            stats.dropped_loss.increment()
            return
        duplicate = None
        if config.duplicate and self._rng_duplicate.random() < config.duplicate:
            # Cloned before the original moves on: the lower link prepends its header into the
            # original's buffer, the network layer consumes the original's header.
            duplicate = (*packet[:-1], packet[-1].clone())
            stats.duplicated.increment()
        self._forward(packet)
        if duplicate is not None:
            try:
                self._forward(duplicate)
            except Error:   # the copy is the fault's own: its refusal is no concern of the caller's
                stats.dropped_error.increment()

    def _forward(self, packet: _Packet) -> None:
        """Rate limit, corrupt, delay and reorder one packet (or copy), then pass it on or hold it."""
        config = self.config
        stats = self.stats
        now = self.clock.now()
        release = now
        if config.rate:
            size = packet[-1].size()
            backlog = self._backlog
            while backlog and backlog[0][0] <= now:
                self._backlog_bytes -= backlog.popleft()[1]
            if self._backlog_bytes + size > config.queue_limit:
                stats.dropped_queue.increment()
                return
            release = max(now, self._busy_until) + size * 8 / config.rate
            self._busy_until = release
            backlog.append((release, size))
            self._backlog_bytes += size
        if config.corrupt and self._rng_corrupt.random() < config.corrupt:
            corrupted = _corrupted_copy(packet[-1], packet[-2], self._rng_corrupt)
            if corrupted is not None:
                packet = (*packet[:-1], corrupted)
                stats.corrupted.increment()
        if config.jitter:
            release += max(0.0, config.delay + self._rng_delay.uniform(-config.jitter, config.jitter))
        else:
            release += config.delay
        release = max(release, self._floor)
        if config.reorder and self._rng_reorder.random() < config.reorder:
            release += config.reorder_hold   # and not the floor: the packets behind overtake it
            stats.reordered.increment()
        else:
            self._floor = release
        self._schedule(release, now, packet)

    def _schedule(self, release: float, now: float, packet: _Packet) -> None:
        held = self.held
        if release <= now and (not held or held[0][0] > now):
            self._pass_on(packet)   # due, and nothing due before it: now, errors to the caller
            return
        if release > now:
            self.stats.delayed.increment()
        if self.own_held:
            packet[-1].own_payload()
        heapq.heappush(held, (release, next(self._seq), packet))
        if held[0][0] <= now:
            # Behind packets already due (their timer is late, or they are being released further
            # up the call stack): join them, in order.
            if not self._releasing:
                self.release()
        elif self._timer.deadline != held[0][0]:
            self._timer.reset_at(held[0][0])

    def release(self) -> None:
        """Pass on every held packet that is due, in release order (the timer's callback).

        Packets held back during a release (a reply written while a released packet is being
        delivered) join the loop rather than recursing; failures are counted, never raised: this
        runs from a timer, and the packet that failed is nobody's caller's.
        """
        held = self.held
        now = self.clock.now
        self._releasing = True
        try:
            while held and held[0][0] <= now():
                packet = heapq.heappop(held)[2]
                try:
                    self._pass_on(packet)
                except Error:
                    self.stats.dropped_error.increment()
                except Exception:
                    self.stats.dropped_error.increment()
                    _log.exception("fault link: passing on a held %s packet failed", self.name)
        finally:
            self._releasing = False
        if not held:
            self._timer.cancel()
        elif self._timer.deadline != held[0][0]:
            self._timer.reset_at(held[0][0])

    def discard(self) -> None:
        """Drop every held packet (the endpoint is closing)."""
        self.stats.dropped_closed.increment(len(self.held))
        self.held.clear()
        self._timer.cancel()


class FaultEndpoint(NestedEndpoint):
    """Wraps ``lower`` and injects the faults of ``outbound`` and ``inbound`` (see the module docstring).

    ``clock`` drives the delays (the stack's clock, so that a ``ManualClock`` test controls them);
    ``seed`` makes the decisions reproducible. ``stats.outbound`` / ``stats.inbound`` count what
    was done to each direction.
    """

    def __init__(self, lower: LinkEndpoint, clock: Clock, seed: int = 0,
                 outbound: FaultConfig | None = None, inbound: FaultConfig | None = None) -> None:
        super().__init__(lower)
        self.clock = clock
        self.stats = FaultStats()
        self._closed = False
        timers = TimerQueue(clock)
        self._outbound = FaultPipe("outbound", seed, outbound or FaultConfig(), clock, timers,
                                    self.stats.outbound, self._write_lower, own_held=True)
        self._inbound = FaultPipe("inbound", seed, inbound or FaultConfig(), clock, timers,
                                   self.stats.inbound, self._deliver_up)

    # --- configuration ------------------------------------------------------------------------------

    def config(self, direction: DirectionName) -> FaultConfig:
        return self._directions(direction)[0].config

    def configure(self, direction: DirectionName | Literal["both"] = "both", config: FaultConfig | None = None,
                  **changes: Any) -> None:
        """Change the faults at run time: ``configure("inbound", loss=0.1, delay=0.05)``.

        ``changes`` apply to ``config`` if given (``configure("both", FaultConfig())`` turns every
        fault off), else to the current configuration. Packets already held back keep their release
        times; the packets that follow are not released before them (unless reordered).
        """
        directions = self._directions(direction)
        updated = [dataclasses.replace(config if config is not None else d.config, **changes)
                   for d in directions]   # all validated before any is applied
        for d, new in zip(directions, updated):
            d.set_config(new)

    def _directions(self, direction: str) -> tuple[FaultPipe, ...]:
        if direction == "outbound":
            return (self._outbound,)
        if direction == "inbound":
            return (self._inbound,)
        if direction == "both":
            return (self._outbound, self._inbound)
        raise ValueError(f"direction must be 'outbound', 'inbound' or 'both', not {direction!r}")

    # --- LinkEndpoint: what the NIC sees -----------------------------------------------------------

    def capabilities(self) -> LinkCapabilities:
        """The lower link's, but for segmentation offload (and scattered payloads, which only come
        with it): faults strike wire-sized packets, so the stack sends MSS-sized segments through
        (and the kernel's super-segments are cut on the way in); and for checksum offload: a
        corrupted packet must carry the checksum of what was sent, not one the device computes over
        the damage."""
        return self.lower.capabilities() & ~(LinkCapabilities.HARDWARE_GSO | LinkCapabilities.SCATTER_GATHER
                                             | LinkCapabilities.TX_CHECKSUM_OFFLOAD)

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        out = self._outbound
        stats = out.stats
        stats.packets.value += 1
        stats.bytes.value += pkt.size()
        if not out.active and not out.held:
            self.lower.write_packet(remote_link_address, protocol, pkt)
        elif self._closed:
            raise ErrClosedForSend
        else:
            out.offer((remote_link_address, protocol, pkt))

    def write_packets(self, remote_link_address: bytes, protocol: int, pkts: list[PacketBuffer]) -> int:
        out = self._outbound
        if not out.active and not out.held:
            out.stats.packets.value += len(pkts)
            out.stats.bytes.value += sum(pkt.size() for pkt in pkts)
            return self.lower.write_packets(remote_link_address, protocol, pkts)
        return write_each(self.write_packet, remote_link_address, protocol, pkts)

    def close(self) -> None:
        """Drop the packets still held back (counted), then close the lower link."""
        self._closed = True
        self.dispatcher = None
        self._outbound.discard()
        self._inbound.discard()
        self.lower.close()

    def _write_lower(self, packet: _Packet) -> None:
        self.lower.write_packet(*packet)

    # --- NetworkDispatcher: what the lower link sees ------------------------------------------------

    def deliver_network_packet(self, remote_link_address: bytes, local_link_address: bytes, protocol: int,
                               pkt: PacketBuffer) -> None:
        if pkt.gso_size:
            # A super-segment (a device's receive offload): each wire segment meets the faults alone.
            for segment in segment_tcp(pkt.data, pkt.gso_size):
                self.deliver_network_packet(remote_link_address, local_link_address, protocol,
                                            PacketBuffer.inbound(segment))
            return
        inb = self._inbound
        stats = inb.stats
        stats.packets.value += 1
        stats.bytes.value += len(pkt.data)
        dispatcher = self.dispatcher
        if dispatcher is None:
            stats.dropped_detached.increment()
        elif not inb.active and not inb.held:
            dispatcher.deliver_network_packet(remote_link_address, local_link_address, protocol, pkt)
        else:
            inb.offer((remote_link_address, local_link_address, protocol, pkt))

    def _deliver_up(self, packet: _Packet) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None:
            self._inbound.stats.dropped_detached.increment()
        else:
            dispatcher.deliver_network_packet(*packet)
