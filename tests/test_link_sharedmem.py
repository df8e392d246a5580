"""SharedMemoryEndpoint: the rings against a model (the native and the Python rings in lockstep, byte
for byte, each side driven by either), bad regions and records, the wake-up protocol, and TCP
between two stacks in one process and in two."""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import socket
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from itertools import product

import gevent
import gevent.subprocess
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsock.adapter.socket import NetsockSocket
from netsock.header import ethernet
from netsock.link import sharedmem
from netsock.link.sharedmem import SharedMemoryEndpoint, SharedMemoryPeer
from netsock.network.arp import ARPProtocol
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import Stack
from netsock.stack.interfaces import LinkCapabilities, PacketType
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip import IPV4_PROTOCOL_NUMBER, Route
from netsock.tcpip.errors import ErrClosedForSend, ErrMessageTooLong, ErrNoBufferSpace
from netsock.transport.icmp import ICMPv4Protocol
from netsock.transport.tcp import TCPProtocol

MAC_A = b"\x02\x00\xc0\x00\x02\x01"
MAC_B = b"\x02\x00\xc0\x00\x02\x02"
IPV4 = 0x0800
IPV4_PACKET = bytes([0x45]) + bytes(19) + b"ipv4 payload"
IPV6_PACKET = bytes([0x60]) + bytes(39) + b"ipv6 payload!"
SMALLEST_RING = 4096        # the smallest power of two holding two 1500-byte frames

RINGS = {"python": sharedmem._PYTHON_RINGS}
if sharedmem._RINGS is sharedmem._NATIVE_RINGS:   # the extension is built (it is wherever the tests run)
    RINGS["native"] = sharedmem._NATIVE_RINGS


class Recorder:
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, bytes, int, PacketBuffer]] = []

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.packets.append((remote, local, protocol, pkt))

    @property
    def data(self) -> list[bytes]:
        return [bytes(pkt.data) for *_, pkt in self.packets]


def packet(data: bytes) -> PacketBuffer:
    """An outbound packet as the network layer hands it down: a header in front of a separate payload."""
    pkt = PacketBuffer(reserve=20 + 14, data=data[20:])
    pkt.prepend(20)[:] = data[:20]
    return pkt


def wait_until(condition, timeout: float = 5.0) -> None:
    with gevent.Timeout(timeout):
        while not condition():
            gevent.sleep(0.001)


# --- the rings against a model --------------------------------------------------------------------

GUARD = 64


def record_size(length: int) -> int:
    return 8 + -(-length // 8) * 8


class Model:
    """A ring as the module docstring specifies it, on unbounded counters."""

    def __init__(self, size: int, start: int) -> None:
        self.size = size
        self.tail = self.head = start
        self.frames: deque[tuple[bytes, int]] = deque()     # each frame and the tail right after it
        self.waiting = False

    def push(self, frames: list[bytes]) -> tuple[int, bool]:
        pushed = 0
        for frame in frames:
            record = record_size(len(frame))
            offset = self.tail % self.size
            begin = self.tail if offset + record <= self.size else self.tail + self.size - offset
            if begin + record - self.head > self.size:
                break
            self.tail = begin + record
            self.frames.append((frame, self.tail))
            pushed += 1
        wake = bool(pushed) and self.waiting
        self.waiting = self.waiting and not pushed
        return pushed, wake

    def pop(self, count: int) -> list[bytes]:
        out = []
        while self.frames and len(out) < count:
            frame, self.head = self.frames.popleft()
            out.append(frame)
        return out

    def prepare_wait(self) -> bool:
        self.waiting = not self.frames
        return self.waiting


class Ring:
    """One ring alone in an anonymous shared mapping, guard bytes behind it, its counters at ``start``."""

    def __init__(self, size: int, implementations: tuple[str, str], max_frame: int, start: int = 0) -> None:
        producer, consumer = RINGS[implementations[0]][0], RINGS[implementations[1]][1]
        self.region = mmap.mmap(-1, sharedmem._RING_HEADER_SIZE + size + GUARD)
        self.region[-GUARD:] = b"\xa5" * GUARD
        struct.pack_into("=Q", self.region, 0, start)
        struct.pack_into("=Q", self.region, 64, start)
        self.tx = producer(self.region, 0, size)
        self.rx = consumer(self.region, 0, size, max_frame, 64)

    def guard_intact(self) -> bool:
        return self.region[-GUARD:] == b"\xa5" * GUARD

    def close(self) -> None:
        self.tx.release()
        self.rx.release()
        self.region.close()


def pieces_of(frame: bytes) -> list[bytes | bytearray | memoryview]:
    """A frame gathered from buffers of every kind a PacketBuffer holds (some of them empty)."""
    cut1, cut2 = len(frame) // 3, 2 * len(frame) // 3
    return [frame[:cut1], bytearray(frame[cut1:cut2]), memoryview(frame)[cut2:]]


PAIRS = list(product(RINGS, repeat=2))
OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("push"), st.lists(st.integers(0, 120), min_size=1, max_size=5)),
    st.tuples(st.just("pop"), st.integers(1, 8)),
    st.tuples(st.just("wait"), st.none()),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(size=st.sampled_from([256, 512, 1024]), start=st.sampled_from([0, 2**64 - 8, 2**64 - 1000, 2**63 + 4096]),
       operations=OPERATIONS)
def test_rings_behave_as_the_model_and_write_identical_bytes(size: int, start: int, operations: list) -> None:
    """Frames of odd lengths wrap around rings of several sizes, counters wrap around 2**64, and
    every producer/consumer pairing of the implementations does exactly what the model says, leaving
    the same bytes in its region."""
    max_frame = size // 2 - 8
    model = Model(size, start)
    rings = [Ring(size, pair, max_frame, start) for pair in PAIRS]
    serial = 0
    try:
        for kind, argument in operations:
            if kind == "push":
                frames = [bytes((serial + i + j) & 0xFF for j in range(min(n, max_frame)))
                          for i, n in enumerate(argument)]
                expected = model.push(frames)
                for ring in rings:
                    pieces = [pieces_of(frame) for frame in frames]
                    got = ring.tx.push_one(pieces[0]) if len(frames) == 1 else ring.tx.push(pieces)
                    assert got == expected
                serial += len(frames)
            elif kind == "pop":
                expected_frames = model.pop(argument)
                for ring in rings:
                    assert ring.rx.pop(argument) == (expected_frames, 0)
            else:
                expected_sleep = model.prepare_wait()
                for ring in rings:
                    assert ring.rx.prepare_wait() == expected_sleep
            assert all(ring.region[:] == rings[0].region[:] for ring in rings)
        assert all(ring.guard_intact() for ring in rings)
    finally:
        for ring in rings:
            ring.close()


@settings(max_examples=300, deadline=None)
@given(size=st.sampled_from([256, 1024]),
       before=st.lists(st.integers(0, 100), max_size=6),
       garbage=st.lists(st.tuples(st.integers(0, 2047), st.binary(min_size=1, max_size=12)), min_size=1, max_size=6),
       operations=OPERATIONS)
def test_a_scribbled_ring_is_never_read_or_written_outside_itself(size: int, before: list[int], garbage: list,
                                                                  operations: list) -> None:
    """Whatever a peer writes into the ring — header or data — popping and pushing neither raise nor
    touch memory past the ring, no frame longer than the limit comes out, and the implementations
    still agree to the byte."""
    max_frame = size // 2 - 8
    rings = [Ring(size, pair, max_frame) for pair in PAIRS]
    try:
        for ring in rings:
            ring.tx.push([[bytes(min(n, max_frame))] for n in before])
            for at, blob in garbage:
                at %= sharedmem._RING_HEADER_SIZE + size
                blob = blob[:sharedmem._RING_HEADER_SIZE + size - at]
                ring.region[at:at + len(blob)] = blob
        for kind, argument in operations:
            if kind == "push":
                results = [ring.tx.push([[bytes(min(n, max_frame))] for n in argument]) for ring in rings]
            elif kind == "pop":
                results = [ring.rx.pop(argument) for ring in rings]
                frames, errors = results[0]
                assert errors in (0, 1) and all(len(frame) <= max_frame for frame in frames)
            else:
                results = [ring.rx.prepare_wait() for ring in rings]
            assert all(result == results[0] for result in results)
            assert all(ring.region[:] == rings[0].region[:] for ring in rings)
        assert all(ring.guard_intact() for ring in rings)
    finally:
        for ring in rings:
            ring.close()


def test_the_python_layout_is_the_native_one() -> None:
    if "native" in RINGS:
        lib = sharedmem._native.lib
        assert (lib.NS_RING_HEADER_SIZE, lib.NS_RING_RECORD_HEADER) == (sharedmem._RING_HEADER_SIZE,
                                                                         sharedmem._RECORD.size)
    assert sharedmem._RING_HEADER_SIZE == 128 and sharedmem._RECORD.size == 8


# --- regions --------------------------------------------------------------------------------------

@pytest.fixture(params=sorted(RINGS))
def rings(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each implementation driving both sides."""
    monkeypatch.setattr(sharedmem, "_RINGS", RINGS[request.param])
    return request.param


class Pair:
    """Both sides of one link in this process."""

    def __init__(self, **kwargs: object) -> None:
        b_address = MAC_B if kwargs.get("ethernet") else b""
        self.a, peer = SharedMemoryEndpoint.create(**kwargs)   # type: ignore[arg-type]
        with peer:
            self.b = SharedMemoryEndpoint.open(peer.spec, link_address=b_address)
        self.rec_a, self.rec_b = Recorder(), Recorder()

    def close(self) -> None:
        self.a.close()
        self.b.close()


@pytest.fixture
def pair(rings: str) -> Iterator[Pair]:
    link = Pair()
    yield link
    link.close()


def test_the_region_header_is_as_documented(tmp_path) -> None:
    path = str(tmp_path / "link")
    a, peer = SharedMemoryEndpoint.create(path, mtu=9000, ring_bytes=1 << 15, ethernet=True, link_address=MAC_A)
    try:
        with open(path, "rb") as region:
            header = region.read(64)
        assert os.path.getsize(path) == 64 + 2 * (128 + (1 << 15))
        assert struct.unpack_from("=8sIIIIQ", header) == (b"nsshmem\0", 1, 1, 9000, 1 << 15, os.path.getsize(path))
        assert header[32:] == bytes(32)
        assert peer.fds == peer.events and peer.spec == f"{path},{peer.events[0]},{peer.events[1]}"
    finally:
        a.close()
        peer.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"mtu": 67}, "MTU 67"),
    ({"mtu": 65536}, "MTU 65536"),
    ({"ring_bytes": 3 << 12}, "not a power of two"),
    ({"ring_bytes": 2048}, "two frames"),
    ({"mtu": 2040, "ring_bytes": 4096, "ethernet": True, "link_address": MAC_A}, "two frames"),  # raw IP fits
    ({"ethernet": True}, "6-byte link address"),
])
def test_create_refuses_what_cannot_work(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SharedMemoryEndpoint.create(**kwargs)


def region_with(tmp_path, offset: int, value: bytes) -> str:
    """The spec of a file region made valid, then overwritten with ``value`` at ``offset``."""
    path = str(tmp_path / "link")
    a, peer = SharedMemoryEndpoint.create(path, ring_bytes=SMALLEST_RING)
    a.close()
    with open(path, "r+b") as region:
        region.seek(offset)
        region.write(value)
    return peer.spec


@pytest.mark.parametrize("offset, value, message", [
    (0, b"NOTMAGIC", "magic"),
    (8, struct.pack("=I", 2), "version 2"),
    (12, struct.pack("=I", 7), "link type 7"),
    (16, struct.pack("=I", 0), "MTU 0"),
    (20, struct.pack("=I", 5000), "not a power of two"),
    (20, struct.pack("=I", 1 << 14), "in a 8512-byte mapping"),        # rings larger than the file
    (24, struct.pack("=Q", 1 << 40), "size 1099511627776"),
], ids=["magic", "version", "link-type", "mtu", "ring-size", "rings-beyond-mapping", "region-size"])
def test_open_refuses_a_bad_header(tmp_path, offset: int, value: bytes, message: str) -> None:
    spec = region_with(tmp_path, offset, value)
    try:
        with pytest.raises(ValueError, match=message):
            SharedMemoryEndpoint.open(spec)
    finally:
        SharedMemoryPeer.parse(spec).close()


def test_open_refuses_a_region_too_small_and_a_bad_spec(tmp_path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"nsshmem\0" + bytes(20))
    with pytest.raises(ValueError, match="too small"):
        SharedMemoryEndpoint.open(f"{path},0,1")
    for spec in ("", "fd:3", "fd:x,1,2", "/dev/shm/x,1"):
        with pytest.raises(ValueError, match="not a shared-memory link spec"):
            SharedMemoryEndpoint.open(spec)


def test_a_file_region_is_opened_by_name(tmp_path, rings: str) -> None:
    path = str(tmp_path / "link")
    a, peer = SharedMemoryEndpoint.create(path, ring_bytes=SMALLEST_RING)
    with peer:
        b = SharedMemoryEndpoint.open(peer.spec)
    os.unlink(path)     # both sides have it mapped
    try:
        rec = Recorder()
        b.attach(rec)
        a.write_packet(b"", IPV4, packet(IPV4_PACKET))
        assert b.dispatch_available() == 1
        assert rec.data == [IPV4_PACKET]
    finally:
        a.close()
        b.close()


# --- frames ---------------------------------------------------------------------------------------

def test_frames_cross_both_ways_as_written(pair: Pair) -> None:
    pair.a.attach(pair.rec_a)
    pair.b.attach(pair.rec_b)
    pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    pair.a.write_packet(b"", 0x86DD, packet(IPV6_PACKET))
    pair.b.write_packet(b"", IPV4, packet(IPV4_PACKET))
    assert pair.b.dispatch_available() == 2
    assert pair.a.dispatch_available() == 1
    assert [(r, l, p, bytes(pkt.data)) for r, l, p, pkt in pair.rec_b.packets] == [
        (b"", b"", IPV4, IPV4_PACKET), (b"", b"", 0x86DD, IPV6_PACKET)]
    assert pair.rec_a.data == [IPV4_PACKET]
    assert (pair.a.stats.tx_packets.value, pair.a.stats.tx_bytes.value) == (2, len(IPV4_PACKET + IPV6_PACKET))
    assert (pair.b.stats.rx_packets.value, pair.b.stats.rx_bytes.value) == (2, len(IPV4_PACKET + IPV6_PACKET))
    assert pair.b.dispatch_available() == 0


def test_each_frame_is_a_buffer_of_its_own(pair: Pair) -> None:
    pair.b.attach(pair.rec_b)
    for _ in range(3):
        pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    pair.b.dispatch_available()
    buffers = [pkt.data.obj for *_, pkt in pair.rec_b.packets]
    assert len({id(buffer) for buffer in buffers}) == 3
    assert all(len(buffer) == len(IPV4_PACKET) for buffer in buffers)


def test_not_ip_is_a_counted_drop(pair: Pair) -> None:
    pair.b.attach(pair.rec_b)
    pair.a.write_packet(b"", IPV4, packet(b"\x50" + IPV4_PACKET[1:]))
    pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    assert pair.b.dispatch_available() == 2
    assert pair.rec_b.data == [IPV4_PACKET]
    assert pair.b.stats.rx_malformed.value == 1


def test_reads_are_batched_and_wait_in_the_ring_while_detached(rings: str) -> None:
    a, peer = SharedMemoryEndpoint.create(read_batch=8)
    with peer:
        b = SharedMemoryEndpoint.open(peer, read_batch=8)
    try:
        for _ in range(20):
            a.write_packet(b"", IPV4, packet(IPV4_PACKET))
        assert b.dispatch_available() == 0
        rec = Recorder()
        b.attach(rec)
        assert [b.dispatch_available() for _ in range(4)] == [8, 8, 4, 0]
        assert len(rec.packets) == 20
    finally:
        a.close()
        b.close()


def test_larger_than_the_mtu_is_refused(pair: Pair) -> None:
    pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET + bytes(1500 - len(IPV4_PACKET))))
    with pytest.raises(ErrMessageTooLong):
        pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET + bytes(1501 - len(IPV4_PACKET))))
    assert (pair.a.stats.tx_packets.value, pair.a.stats.tx_too_long.value) == (1, 1)


def test_a_full_ring_drops_and_counts_and_never_blocks(rings: str) -> None:
    a, peer = SharedMemoryEndpoint.create(ring_bytes=SMALLEST_RING)
    with peer:
        b = SharedMemoryEndpoint.open(peer)
    try:
        frame = IPV4_PACKET + bytes(1000)
        for _ in range(4):      # 1040-byte records: three fit in 4096 bytes
            try:
                a.write_packet(b"", IPV4, packet(frame))
            except ErrNoBufferSpace:
                pass
        assert (a.stats.tx_packets.value, a.stats.tx_queue_full.value) == (3, 1)
        rec = Recorder()
        b.attach(rec)
        assert b.dispatch_available() == 3
        a.write_packet(b"", IPV4, packet(frame))     # room again
        assert b.dispatch_available() == 1
        assert rec.data == [frame] * 4
    finally:
        a.close()
        b.close()


def test_write_packets_publishes_up_to_the_first_refusal(rings: str) -> None:
    a, peer = SharedMemoryEndpoint.create(ring_bytes=SMALLEST_RING)
    with peer:
        b = SharedMemoryEndpoint.open(peer)
    try:
        frame = IPV4_PACKET + bytes(1000)
        assert a.write_packets(b"", IPV4, [packet(frame) for _ in range(5)]) == 3
        assert a.stats.tx_queue_full.value == 1
        with pytest.raises(ErrNoBufferSpace):
            a.write_packets(b"", IPV4, [packet(frame)])
        rec = Recorder()
        b.attach(rec)
        b.dispatch_available()
        too_long = packet(IPV4_PACKET + bytes(1500))
        assert a.write_packets(b"", IPV4, [packet(frame), too_long, packet(frame)]) == 1
        with pytest.raises(ErrMessageTooLong):
            a.write_packets(b"", IPV4, [too_long])
        assert (a.stats.tx_packets.value, a.stats.tx_too_long.value, a.stats.tx_queue_full.value) == (4, 2, 2)
    finally:
        a.close()
        b.close()


def test_an_ethernet_link_frames_and_classifies(rings: str) -> None:
    link = Pair(ethernet=True, link_address=MAC_A)
    try:
        assert link.a.max_header_length() == 14 and link.b.link_address() == MAC_B
        assert link.a.capabilities() & LinkCapabilities.RESOLUTION_REQUIRED
        link.b.attach(link.rec_b)
        link.a.write_packet(MAC_B, IPV4, packet(IPV4_PACKET))
        link.a.write_packet(ethernet.BROADCAST, 0x0806, packet(IPV4_PACKET))
        link.b.dispatch_available()
        assert [(r, l, p, bytes(pkt.data), pkt.pkt_type) for r, l, p, pkt in link.rec_b.packets] == [
            (MAC_A, MAC_B, IPV4, IPV4_PACKET, PacketType.HOST),
            (MAC_A, ethernet.BROADCAST, 0x0806, IPV4_PACKET, PacketType.BROADCAST)]
        assert link.a.stats.tx_bytes.value == 2 * (14 + len(IPV4_PACKET))
        with pytest.raises(ErrMessageTooLong):   # the MTU is the network layer's: 1500 bytes behind the header
            link.a.write_packet(MAC_B, IPV4, packet(IPV4_PACKET + bytes(1501 - len(IPV4_PACKET))))
    finally:
        link.close()
    a, peer = SharedMemoryEndpoint.create(ethernet=True, link_address=MAC_A)
    with peer, pytest.raises(ValueError, match="6-byte"):
        SharedMemoryEndpoint.open(peer)
    a.close()


def test_no_super_segments(pair: Pair) -> None:
    assert not pair.a.capabilities() & LinkCapabilities.HARDWARE_GSO
    assert pair.a.capabilities() == LinkCapabilities.NONE


def test_a_dispatcher_exception_is_counted_and_contained(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    class Failing(Recorder):
        def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
            super().deliver_network_packet(remote, local, protocol, pkt)
            if len(self.packets) == 1:
                raise RuntimeError("bug above the link")

    rec = Failing()
    pair.b.attach(rec)
    pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    assert pair.b.dispatch_available() == 2
    assert len(rec.packets) == 2 and pair.b.stats.rx_dispatch_errors.value == 1
    assert "dispatcher failed" in caplog.text


# --- a peer that breaks the rules -------------------------------------------------------------------

def ring0(peer: SharedMemoryPeer) -> tuple[mmap.mmap, int]:
    """Another mapping of the region (as a misbehaving peer has), and the offset of ring 0's data."""
    return mmap.mmap(peer.region, 0), 64 + 128


@pytest.mark.parametrize("scribble", [
    lambda region, data: struct.pack_into("=II", region, data, 1 << 20, 0),            # a length past the ring
    lambda region, data: struct.pack_into("=II", region, data, 1600, 0),               # longer than the MTU
    lambda region, data: struct.pack_into("=Q", region, 64, 1 << 40),                  # a tail far beyond the head
    lambda region, data: struct.pack_into("=Q", region, 64 + 64, 4),                   # a head off the 8-byte grid
    lambda region, data: struct.pack_into("=II", region, data, 0xFFFFFFFF, 0),         # a skip past the tail
], ids=["length-past-ring", "length-over-mtu", "tail-far-ahead", "misaligned-head", "skip-past-tail"])
def test_a_broken_ring_is_a_counted_drop_and_reading_goes_on(rings: str, scribble) -> None:
    a, peer = SharedMemoryEndpoint.create(ring_bytes=SMALLEST_RING)
    b = SharedMemoryEndpoint.open(peer)
    region, data = ring0(peer)
    try:
        rec = Recorder()
        b.attach(rec)
        a.write_packet(b"", IPV4, packet(IPV4_PACKET))
        a.write_packet(b"", IPV4, packet(IPV4_PACKET))
        scribble(region, data)
        b.dispatch_available()
        assert b.stats.rx_ring_errors.value == 1 and rec.packets == []
        a.write_packet(b"", IPV4, packet(IPV4_PACKET))
        assert b.dispatch_available() == 1
        assert rec.data == [IPV4_PACKET]
    finally:
        region.close()
        peer.close()
        a.close()
        b.close()


# --- the hub, wake-ups and closing --------------------------------------------------------------------

def test_a_sleeping_reader_is_woken_once_for_a_burst(pair: Pair) -> None:
    pair.b.attach(pair.rec_b)
    wait_until(lambda: pair.b.stats.rx_sleeps.value == 1)        # found the ring empty: asleep
    for _ in range(10):
        pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    assert pair.a.stats.tx_wakeups.value == 1                      # the first frame woke it, the rest found it awake
    wait_until(lambda: len(pair.rec_b.packets) == 10)
    wait_until(lambda: pair.b.stats.rx_sleeps.value == 2)
    pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    wait_until(lambda: len(pair.rec_b.packets) == 11)
    assert pair.a.stats.tx_wakeups.value == 2


def test_the_hub_reads_more_than_a_batch_and_stops_on_detach(pair: Pair) -> None:
    pair.b.attach(pair.rec_b)
    for _ in range(150):
        pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    wait_until(lambda: len(pair.rec_b.packets) == 150)
    pair.b.attach(None)
    pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    gevent.sleep(0.05)
    assert len(pair.rec_b.packets) == 150
    pair.b.attach(pair.rec_b)
    wait_until(lambda: len(pair.rec_b.packets) == 151)


def test_the_dispatcher_may_close_the_link_from_the_hub(pair: Pair) -> None:
    delivered: list[bytes] = []

    class Closer:
        def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
            delivered.append(bytes(pkt.data))
            pair.b.close()

    pair.b.attach(Closer())
    pair.a.write_packet(b"", IPV4, packet(IPV4_PACKET))
    pair.a.write_packet(b"", IPV4, packet(IPV6_PACKET))
    wait_until(lambda: delivered)
    gevent.sleep(0.05)
    assert delivered == [IPV4_PACKET]
    assert (pair.b.stats.rx_packets.value, pair.b.stats.rx_not_attached.value) == (2, 1)


def test_close_refuses_writes_and_a_closed_peer_just_stops_reading(rings: str) -> None:
    a, peer = SharedMemoryEndpoint.create(ring_bytes=SMALLEST_RING)
    with peer:
        b = SharedMemoryEndpoint.open(peer)
    b.attach(Recorder())
    gevent.sleep(0.01)      # b's reader asleep: the next frame wakes it
    b.close()
    b.close()
    with pytest.raises(ErrClosedForSend):
        b.write_packet(b"", IPV4, packet(IPV4_PACKET))
    assert b.stats.tx_closed.value == 1 and b.dispatch_available() == 0
    sent = 0
    with pytest.raises(ErrNoBufferSpace):
        while True:
            a.write_packet(b"", IPV4, packet(IPV4_PACKET))
            sent += 1
    assert sent == SMALLEST_RING // record_size(len(IPV4_PACKET)) and a.stats.tx_wakeups.value == 1
    a.close()


# --- TCP between two stacks ---------------------------------------------------------------------------

PORT = 5001
TRANSFER = 4 << 20


def tcp_stack(link: SharedMemoryEndpoint, address: str) -> Stack:
    """A stack with IPv4 (and ARP on an Ethernet link), TCP and ICMP, at ``address``/24 on ``link``."""
    network = [IPv4Protocol, ARPProtocol] if link.max_header_length() else [IPv4Protocol]
    stack = Stack(network, [TCPProtocol, ICMPv4Protocol])
    stack.create_nic(1, link)
    stack.add_address(1, IPV4_PROTOCOL_NUMBER, f"{address}/24")
    stack.set_route_table([Route.parse("192.0.2.0/24", 1)])
    return stack


def send_and_check(stack: Stack, payload: bytes) -> None:
    """Connect to 192.0.2.2, send ``payload``, half-close, and check the peer's answer: the byte count
    and the SHA-256 of what it received."""
    client = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=stack)
    client.connect(("192.0.2.2", PORT))
    client.sendall(payload)
    client.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := client.recv(1024):
        answer += chunk
    client.close()
    assert answer.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"


def sink(listener: NetsockSocket) -> None:
    """Accept one connection, read it to EOF, answer with the byte count and SHA-256, close."""
    connection, _ = listener.accept()
    digest, size = hashlib.sha256(), 0
    while data := connection.recv(1 << 16):
        digest.update(data)
        size += len(data)
    connection.sendall(f"{size} {digest.hexdigest()}".encode())
    connection.close()


@pytest.mark.parametrize("kwargs", [{"mtu": 1500}, {"mtu": 9000, "ethernet": True, "link_address": MAC_A}],
                         ids=["raw-ip-1500", "ethernet-9000"])
def test_tcp_between_two_stacks_in_one_process(rings: str, kwargs: dict) -> None:
    link = Pair(**kwargs)
    a, b = tcp_stack(link.a, "192.0.2.1"), tcp_stack(link.b, "192.0.2.2")
    try:
        listener = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=b)
        listener.bind(("192.0.2.2", PORT))
        listener.listen()
        server = gevent.spawn(sink, listener)
        with gevent.Timeout(60):
            send_and_check(a, random.Random(1).randbytes(TRANSFER))
            server.get()
        listener.close()
    finally:
        a.close()
        b.close()
        link.close()


CHILD = """
import hashlib, socket, sys
import gevent.socket
from netsock.adapter.socket import NetsockSocket
from netsock.link import sharedmem
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import Stack
from netsock.tcpip import IPV4_PROTOCOL_NUMBER, Route
from netsock.transport.icmp import ICMPv4Protocol
from netsock.transport.tcp import TCPProtocol

spec, rings, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
if rings == "python":
    sharedmem._RINGS = sharedmem._PYTHON_RINGS
stack = Stack([IPv4Protocol], [TCPProtocol, ICMPv4Protocol])
stack.create_nic(1, sharedmem.SharedMemoryEndpoint.open(spec))
stack.add_address(1, IPV4_PROTOCOL_NUMBER, "192.0.2.2/24")
stack.set_route_table([Route.parse("192.0.2.0/24", 1)])
listener = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=stack)
listener.bind(("192.0.2.2", PORT))
listener.listen()
print("listening", flush=True)
connection, _ = listener.accept()
digest, size = hashlib.sha256(), 0
while data := connection.recv(1 << 16):
    digest.update(data)
    size += len(data)
connection.sendall(f"{size} {digest.hexdigest()}".encode())
connection.close()
gevent.socket.wait_read(sys.stdin.fileno())   # the stack stays up until the parent is done
"""


@pytest.mark.parametrize("child_rings", sorted(RINGS))
def test_tcp_between_two_processes(rings: str, child_rings: str) -> None:
    """The child's stack on side B, each side's rings driven by either implementation."""
    link, peer = SharedMemoryEndpoint.create()
    stack = tcp_stack(link, "192.0.2.1")
    child = gevent.subprocess.Popen([sys.executable, "-c", CHILD, peer.spec, child_rings, str(PORT)], pass_fds=peer.fds,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    peer.close()
    try:
        with gevent.Timeout(60):
            assert child.stdout.readline() == b"listening\n"
            send_and_check(stack, random.Random(2).randbytes(TRANSFER))
            child.stdin.close()
            assert child.wait() == 0
        assert link.stats.rx_ring_errors.value == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        stack.close()
        link.close()
