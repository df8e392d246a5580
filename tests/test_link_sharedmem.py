"""SharedMemoryEndpoint: the rings against a model (the native and the Python rings in lockstep, byte
for byte, each side driven by either), bad regions and records, TCP super-segments crossing whole,
the wake-up protocol, and TCP between two stacks in one process and in two."""

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
SMALLEST_RING = 4096        # the smallest power of two holding two 1500-byte frames (without GSO)
SMALLEST_GSO_RING = 1 << 18  # ... holding two 64 KB super-segments
GSO_SIZE = 1448

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


def packet(data: bytes, gso_size: int = 0) -> PacketBuffer:
    """An outbound packet as the network layer hands it down: a header in front of a separate payload."""
    pkt = PacketBuffer(reserve=20 + 14, data=data[20:])
    pkt.prepend(20)[:] = data[:20]
    pkt.gso_size = gso_size
    return pkt


def super_segment(size: int = 65535) -> bytes:
    """An IPv4 packet of ``size`` bytes as TCP hands a GSO link one (the link does not look inside)."""
    return IPV4_PACKET[:20] + bytes((i * 7) & 0xFF for i in range(size - 20))


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
        self.frames: deque[tuple[bytes, int, int]] = deque()    # each frame, its gso_size and the tail after it
        self.waiting = False

    def push(self, frames: list[bytes], gso_sizes: list[int]) -> tuple[int, bool]:
        pushed = 0
        for frame, gso_size in zip(frames, gso_sizes):
            record = record_size(len(frame))
            offset = self.tail % self.size
            begin = self.tail if offset + record <= self.size else self.tail + self.size - offset
            if begin + record - self.head > self.size:
                break
            self.tail = begin + record
            self.frames.append((frame, gso_size, self.tail))
            pushed += 1
        wake = bool(pushed) and self.waiting
        self.waiting = self.waiting and not pushed
        return pushed, wake

    def pop(self, count: int) -> tuple[list[bytes], list[int], int]:
        frames, gso_sizes = [], []
        while self.frames and len(frames) < count:
            frame, gso_size, self.head = self.frames.popleft()
            frames.append(frame)
            gso_sizes.append(gso_size)
        return frames, gso_sizes, 0

    def prepare_wait(self) -> bool:
        self.waiting = not self.frames
        return self.waiting


class Ring:
    """One ring alone in an anonymous shared mapping, guard bytes behind it, its counters at ``start``;
    its consumer takes plain frames up to ``max_frame`` bytes and super-segments up to ``max_super``
    (0: none)."""

    def __init__(self, size: int, implementations: tuple[str, str], max_frame: int, max_super: int,
                 start: int = 0) -> None:
        producer, consumer = RINGS[implementations[0]][0], RINGS[implementations[1]][1]
        self.region = mmap.mmap(-1, sharedmem._RING_HEADER_SIZE + size + GUARD)
        self.region[-GUARD:] = b"\xa5" * GUARD
        struct.pack_into("=Q", self.region, 0, start)
        struct.pack_into("=Q", self.region, 64, start)
        self.tx = producer(self.region, 0, size)
        self.rx = consumer(self.region, 0, size, max_frame, max_super, 64)

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
# A push is of frames given as (length, gso_size): plain frames and super-segments, gso_size up to a u32's limit.
FRAMES = st.lists(st.tuples(st.integers(0, 120), st.sampled_from([0, 0, 1, GSO_SIZE, 0xFFFFFFFF])),
                  min_size=1, max_size=5)
OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("push"), FRAMES),
    st.tuples(st.just("pop"), st.integers(1, 8)),
    st.tuples(st.just("wait"), st.none()),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(size=st.sampled_from([256, 512, 1024]), start=st.sampled_from([0, 2**64 - 8, 2**64 - 1000, 2**63 + 4096]),
       operations=OPERATIONS)
def test_rings_behave_as_the_model_and_write_identical_bytes(size: int, start: int, operations: list) -> None:
    """Frames and super-segments of odd lengths wrap around rings of several sizes, counters wrap
    around 2**64, and every producer/consumer pairing of the implementations does exactly what the
    model says, leaving the same bytes in its region."""
    max_frame = size // 2 - 8
    model = Model(size, start)
    rings = [Ring(size, pair, max_frame, max_frame, start) for pair in PAIRS]
    serial = 0
    try:
        for kind, argument in operations:
            if kind == "push":
                frames = [bytes((serial + i + j) & 0xFF for j in range(min(n, max_frame)))
                          for i, (n, _) in enumerate(argument)]
                gso_sizes = [gso_size for _, gso_size in argument]
                expected = model.push(frames, gso_sizes)
                for ring in rings:
                    pieces = [pieces_of(frame) for frame in frames]
                    got = (ring.tx.push_one(pieces[0], gso_sizes[0]) if len(frames) == 1
                           else ring.tx.push(pieces, gso_sizes))
                    assert got == expected
                serial += len(frames)
            elif kind == "pop":
                expected_pop = model.pop(argument)
                for ring in rings:
                    assert ring.rx.pop(argument) == expected_pop
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
@given(size=st.sampled_from([256, 1024]), gso=st.booleans(),
       before=st.lists(st.tuples(st.integers(0, 100), st.sampled_from([0, GSO_SIZE])), max_size=6),
       garbage=st.lists(st.tuples(st.integers(0, 2047), st.binary(min_size=1, max_size=12)), min_size=1, max_size=6),
       operations=OPERATIONS)
def test_a_scribbled_ring_is_never_read_or_written_outside_itself(size: int, gso: bool, before: list,
                                                                  garbage: list, operations: list) -> None:
    """Whatever a peer writes into the ring — header or data — popping and pushing neither raise nor
    touch memory past the ring, no frame longer than its kind's limit comes out (nor a super-segment
    where there may be none), and the implementations still agree to the byte."""
    max_frame, max_super = size // 4, size // 2 - 8 if gso else 0
    rings = [Ring(size, pair, max_frame, max_super) for pair in PAIRS]

    def push(ring: Ring, frames: list[tuple[int, int]]) -> tuple[int, bool]:
        return ring.tx.push([[bytes(min(n, max_super if gso_size else max_frame))] for n, gso_size in frames],
                            [gso_size for _, gso_size in frames])

    try:
        for ring in rings:
            push(ring, before)
            for at, blob in garbage:
                at %= sharedmem._RING_HEADER_SIZE + size
                blob = blob[:sharedmem._RING_HEADER_SIZE + size - at]
                ring.region[at:at + len(blob)] = blob
        for kind, argument in operations:
            if kind == "push":
                results = [push(ring, argument) for ring in rings]
            elif kind == "pop":
                results = [ring.rx.pop(argument) for ring in rings]
                frames, gso_sizes, errors = results[0]
                assert errors in (0, 1) and len(gso_sizes) == len(frames)
                assert all(len(frame) <= (max_super if gso_size else max_frame) and (max_super or not gso_size)
                           for frame, gso_size in zip(frames, gso_sizes))
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
        assert (lib.NS_RING_VERSION, lib.NS_RING_HEADER_SIZE, lib.NS_RING_RECORD_HEADER) == (
            sharedmem.VERSION, sharedmem._RING_HEADER_SIZE, sharedmem._RECORD.size)
    assert sharedmem._RING_HEADER_SIZE == 128 and sharedmem._RECORD.size == 8


@pytest.mark.parametrize("implementation", sorted(RINGS))
def test_records_are_as_documented(implementation: str) -> None:
    """Each producer lays out records as the module docstring says: length, gso_size, the frame padded
    to 8 bytes; a record that would run past the end behind a skip record (length 0xffffffff, 0)."""
    ring = Ring(256, (implementation, implementation), 120, 120, start=256 - 24)
    try:
        assert ring.tx.push([[b"plain"], [b"super-", b"segment"]], [0, GSO_SIZE]) == (2, False)
        data = ring.region[128:128 + 256]
        assert data[-24:] == struct.pack("=II", 5, 0) + b"plain\0\0\0" + struct.pack("=II", 0xFFFFFFFF, 0)
        assert data[:24] == struct.pack("=II", 13, GSO_SIZE) + b"super-segment\0\0\0"
        assert struct.unpack_from("=Q", ring.region, 0)[0] == 256 - 24 + 16 + 8 + 24
        assert ring.rx.pop(8) == ([b"plain", b"super-segment"], [0, GSO_SIZE], 0)
    finally:
        ring.close()


@pytest.mark.parametrize("implementation", sorted(RINGS))
def test_each_kind_of_record_has_its_own_limit(implementation: str) -> None:
    """A plain frame up to the MTU, a super-segment up to 64 KB, and no super-segment at all where
    the consumer allows none: beyond that a record is the peer breaking the rules (the ring is
    skipped), whatever its producer."""
    cases = [
        (1500, 65535, [(1500, 0), (65535, GSO_SIZE), (0, GSO_SIZE)], 0),
        (1500, 65535, [(1500, 0), (1501, 0)], 1),
        (1500, 65535, [(65535, GSO_SIZE), (65536, GSO_SIZE)], 1),
        (1500, 0, [(1500, 0), (0, GSO_SIZE)], 1),
        (1500, 0, [(100, 1)], 1),
    ]
    for max_frame, max_super, frames, errors in cases:
        ring = Ring(SMALLEST_GSO_RING, (implementation, implementation), max_frame, max_super)
        try:
            assert ring.tx.push([[bytes(n)] for n, _ in frames], [g for _, g in frames])[0] == len(frames)
            valid = frames[:-1] if errors else frames
            popped, gso_sizes, got_errors = ring.rx.pop(8)
            assert ([len(frame) for frame in popped], gso_sizes, got_errors) == (
                [n for n, _ in valid], [g for _, g in valid], errors)
            assert ring.rx.prepare_wait()       # what broke the rules was skipped with it
        finally:
            ring.close()


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


@pytest.mark.parametrize("gso, ring_bytes, flags", [(False, 1 << 15, 0), (True, SMALLEST_GSO_RING, 1)])
def test_the_region_header_is_as_documented(tmp_path, gso: bool, ring_bytes: int, flags: int) -> None:
    path = str(tmp_path / "link")
    a, peer = SharedMemoryEndpoint.create(path, mtu=9000, ring_bytes=ring_bytes, ethernet=True, link_address=MAC_A,
                                          gso=gso)
    try:
        with open(path, "rb") as region:
            header = region.read(64)
        assert os.path.getsize(path) == 64 + 2 * (128 + ring_bytes)
        assert struct.unpack_from("=8sIIIIQI", header) == (b"nsshmem\0", 2, 1, 9000, ring_bytes,
                                                           os.path.getsize(path), flags)
        assert header[36:] == bytes(28)
        assert peer.fds == peer.events and peer.spec == f"{path},{peer.events[0]},{peer.events[1]}"
    finally:
        a.close()
        peer.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"mtu": 67}, "MTU 67"),
    ({"mtu": 65536}, "MTU 65536"),
    ({"ring_bytes": 3 << 12}, "not a power of two"),
    ({"ring_bytes": 2048, "gso": False}, "two frames of MTU 1500"),
    ({"mtu": 2040, "ring_bytes": 4096, "ethernet": True, "link_address": MAC_A, "gso": False},
     "two frames"),                                                                            # raw IP fits
    ({"ring_bytes": SMALLEST_GSO_RING // 2}, "two 64 KB super-segments"),    # fits frames of MTU 1500
    ({"ethernet": True}, "6-byte link address"),
])
def test_create_refuses_what_cannot_work(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SharedMemoryEndpoint.create(**kwargs)


def region_with(tmp_path, offset: int, value: bytes) -> str:
    """The spec of a file region made valid, then overwritten with ``value`` at ``offset``."""
    path = str(tmp_path / "link")
    a, peer = SharedMemoryEndpoint.create(path, ring_bytes=SMALLEST_RING, gso=False)
    a.close()
    with open(path, "r+b") as region:
        region.seek(offset)
        region.write(value)
    return peer.spec


@pytest.mark.parametrize("offset, value, message", [
    (0, b"NOTMAGIC", "magic"),
    (8, struct.pack("=I", 1), "version 1, not 2"),     # records without gso_size
    (12, struct.pack("=I", 7), "link type 7"),
    (16, struct.pack("=I", 0), "MTU 0"),
    (20, struct.pack("=I", 5000), "not a power of two"),
    (20, struct.pack("=I", 1 << 14), "in a 8512-byte mapping"),        # rings larger than the file
    (24, struct.pack("=Q", 1 << 40), "size 1099511627776"),
    (32, struct.pack("=I", 3), "unknown flags 0x3"),
    (32, struct.pack("=I", 1), "two 64 KB super-segments"),           # GSO: its rings are too small
], ids=["magic", "version", "link-type", "mtu", "ring-size", "rings-beyond-mapping", "region-size", "flags",
        "gso-ring-size"])
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
    a, peer = SharedMemoryEndpoint.create(path, ring_bytes=SMALLEST_RING, gso=False)
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
    a, peer = SharedMemoryEndpoint.create(ring_bytes=SMALLEST_RING, gso=False)
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
    a, peer = SharedMemoryEndpoint.create(ring_bytes=SMALLEST_RING, gso=False)
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


# --- TCP super-segments ---------------------------------------------------------------------------

def test_a_gso_region_offers_super_segments_to_both_sides(rings: str) -> None:
    link = Pair()
    plain = Pair(gso=False, ring_bytes=SMALLEST_RING)
    try:
        assert link.a.capabilities() == link.b.capabilities() == LinkCapabilities.HARDWARE_GSO
        assert plain.a.capabilities() == plain.b.capabilities() == LinkCapabilities.NONE
    finally:
        link.close()
        plain.close()


@pytest.mark.parametrize("ethernet", [False, True], ids=["raw-ip", "ethernet"])
def test_a_super_segment_crosses_whole(rings: str, ethernet: bool) -> None:
    """A 64 KB packet with gso_size is one record, past the MTU, and reaches the other stack as it
    was written, gso_size and all; frames around it keep their place and gso_size 0."""
    link = Pair(ethernet=True, link_address=MAC_A) if ethernet else Pair()
    remote = MAC_B if ethernet else b""
    big, small = super_segment(), super_segment(1000)
    try:
        link.b.attach(link.rec_b)
        link.a.write_packet(remote, IPV4, packet(big, GSO_SIZE))
        assert link.a.write_packets(remote, IPV4, [packet(IPV4_PACKET), packet(small, 960), packet(IPV4_PACKET)]) == 3
        assert link.b.dispatch_available() == 4
        assert [(bytes(pkt.data), pkt.gso_size) for *_, pkt in link.rec_b.packets] == [
            (big, GSO_SIZE), (IPV4_PACKET, 0), (small, 960), (IPV4_PACKET, 0)]
        header = 14 if ethernet else 0
        stats_a, stats_b = link.a.stats, link.b.stats
        assert (stats_a.tx_packets.value, stats_a.tx_super_segments.value, stats_a.tx_bytes.value) == (
            4, 2, len(big) + len(small) + 2 * len(IPV4_PACKET) + 4 * header)
        assert (stats_b.rx_packets.value, stats_b.rx_super_segments.value, stats_b.rx_bytes.value) == (
            4, 2, stats_a.tx_bytes.value)
    finally:
        link.close()


def test_what_a_link_cannot_carry_whole_is_refused(rings: str) -> None:
    """A super-segment over 64 KB, or on a region without GSO (the stack sends none there: a router
    cuts those it forwards), is too long; so is a plain frame over the MTU on a GSO region."""
    link = Pair()
    plain = Pair(gso=False, ring_bytes=SMALLEST_RING)
    try:
        for endpoint, pkt in [(link.a, packet(super_segment(65536), GSO_SIZE)), (link.a, packet(super_segment(1501))),
                              (plain.a, packet(super_segment(), GSO_SIZE)), (plain.a, packet(IPV4_PACKET, GSO_SIZE))]:
            with pytest.raises(ErrMessageTooLong):
                endpoint.write_packet(b"", IPV4, pkt)
        assert link.a.write_packets(b"", IPV4, [packet(super_segment(), GSO_SIZE),
                                                packet(super_segment(65536), GSO_SIZE)]) == 1
        assert (link.a.stats.tx_too_long.value, link.a.stats.tx_super_segments.value) == (3, 1)
        assert (plain.a.stats.tx_too_long.value, plain.a.stats.tx_packets.value) == (2, 0)
    finally:
        link.close()
        plain.close()


def test_a_malformed_super_segment_is_the_stacks_to_count(rings: str) -> None:
    """The link vouches for a super-segment's place in the ring, not for what is in it: one that is
    no TCP packet reaches the stack, which counts it (here IPv4, as a header too short)."""
    link = Pair()
    stack = tcp_stack(link.b, "192.0.2.2")
    try:
        link.a.write_packet(b"", IPV4, packet(IPV4_PACKET[:1] + bytes(10000), GSO_SIZE))
        wait_until(lambda: link.b.stats.rx_super_segments.value == 1)
        assert link.b.stats.rx_ring_errors.value == 0
        assert stack.stats().ip.malformed_packets_received.value == 1
    finally:
        stack.close()
        link.close()


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
    lambda region, data: struct.pack_into("=I", region, data + 4, 1448),               # a super-segment, no GSO
], ids=["length-past-ring", "length-over-mtu", "tail-far-ahead", "misaligned-head", "skip-past-tail",
        "gso-size-without-gso"])
def test_a_broken_ring_is_a_counted_drop_and_reading_goes_on(rings: str, scribble) -> None:
    a, peer = SharedMemoryEndpoint.create(ring_bytes=SMALLEST_RING, gso=False)
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


@pytest.mark.parametrize("frame, gso_size", [(IPV4_PACKET + bytes(1501 - len(IPV4_PACKET)), 0),
                                              (super_segment(65536), GSO_SIZE)], ids=["frame-over-mtu", "over-64k"])
def test_a_gso_region_still_bounds_each_kind_of_record(rings: str, frame: bytes, gso_size: int) -> None:
    """A peer that skips write_packet's checks and publishes a plain frame over the MTU, or a
    super-segment over 64 KB, breaks the ring's rules: counted, skipped, and reading goes on."""
    a, peer = SharedMemoryEndpoint.create(ring_bytes=SMALLEST_GSO_RING)
    b = SharedMemoryEndpoint.open(peer)
    region, _ = ring0(peer)
    rogue = sharedmem._RINGS[0](region, 64, SMALLEST_GSO_RING)     # ring 0's producer, as A's is
    try:
        rec = Recorder()
        b.attach(rec)
        assert rogue.push([[frame]], [gso_size])[0] == 1
        b.dispatch_available()
        assert b.stats.rx_ring_errors.value == 1 and rec.packets == []
        a.write_packet(b"", IPV4, packet(super_segment(), GSO_SIZE))
        assert b.dispatch_available() == 1
        assert b.stats.rx_super_segments.value == 1
    finally:
        rogue.release()
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
    a, peer = SharedMemoryEndpoint.create(ring_bytes=SMALLEST_RING, gso=False)
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


def check_super_segments(sender: SharedMemoryEndpoint, receiver: SharedMemoryEndpoint, gso: bool) -> None:
    """With GSO, the sender's data went as super-segments, each one record: not a quarter of the
    records MTU-sized frames would take; without, a record per MTU-sized frame at least."""
    stats = sender.stats
    if gso:
        assert stats.tx_super_segments.value == receiver.stats.rx_super_segments.value > 0
        assert stats.tx_packets.value < TRANSFER // sender.mtu() // 4
    else:
        assert stats.tx_super_segments.value == receiver.stats.rx_super_segments.value == 0
        assert stats.tx_packets.value > TRANSFER // sender.mtu()
    assert receiver.stats.rx_ring_errors.value == 0


@pytest.mark.parametrize("kwargs", [{"mtu": 1500}, {"mtu": 1500, "gso": False},
                                    {"mtu": 9000, "ethernet": True, "link_address": MAC_A}],
                         ids=["raw-ip-1500", "raw-ip-1500-no-gso", "ethernet-9000"])
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
        check_super_segments(link.a, link.b, kwargs.get("gso", True))
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
    """The child's stack on side B, each side's rings driven by either implementation; the data
    crosses in super-segments."""
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
        assert 0 < link.stats.tx_super_segments.value and link.stats.tx_packets.value < TRANSFER // link.mtu() // 4
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        stack.close()
        link.close()
