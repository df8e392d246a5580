"""A link over shared memory (netstack's ``link/sharedmem``): two stacks joined by a private wire
that is a memory region, in two processes or in one — a test harness and a child program each with
its own stack, say — with no kernel networking in between.

Why: frames cross as memory copies, with no system call while both sides are busy; the kernel is
asked for nothing but a wake-up, and only when the receiving side has gone to sleep. No device, no
namespace, no privilege. TCP super-segments (64 KB, ``PacketBuffer.gso_size``) cross whole, as over
Linux's veth: the per-packet cost, which dominates in Python, is paid once per 64 KB rather than once
per MTU.

The region is a memfd (``create(None)``) or a file (``create(path)``, best under /dev/shm), mapped
by both sides. Host byte order throughout (both sides run on one machine)::

    0     region header (64 bytes)
            0  magic       8 bytes  b"nsshmem\\0"
            8  version     u32      2
           12  link type   u32      0: raw IP packets (as a TUN), 1: Ethernet frames (as a TAP)
           16  MTU         u32      of the network layer (an Ethernet frame is 14 bytes more)
           20  ring bytes  u32      data bytes of each ring, a power of two, at least two largest records
           24  region size u64      64 + 2 * (128 + ring bytes)
           32  flags       u32      bit 0 (GSO): records may hold TCP super-segments; no other bit is set
           36  zero        28 bytes
    64    ring 0: side A -> side B (A creates the region, B opens it)
    192 + ring bytes: ring 1: side B -> side A

    ring: a 128-byte header, then its data
            0  tail     u64  bytes ever appended: written by the producer only
           64  head     u64  bytes ever consumed: written by the consumer only (another cache line)
           72  waiting  u32  raised by the consumer before it sleeps, lowered by the producer that wakes it
    record, at (counter & (ring bytes - 1)) in the data:
            0  length   u32  of the frame; 0xffffffff: a skip record, the ring's end is padding
            4  gso_size u32  0: a plain frame, at most MTU (+ 14 on Ethernet) bytes; > 0 (GSO regions
                             only): a TCP super-segment, an IP packet of up to 65535 bytes (+ 14) to be
                             cut every gso_size payload bytes, its TCP checksum holding the pseudo-
                             header sum only (see ``header.gso``); 0 in a skip record
            8  the frame, zero-padded to a multiple of 8

The largest record is thus an MTU-sized frame, or a 64 KB super-segment in a GSO region: the ring
holds two of them at least.

Each ring has one producer and one consumer. The counters are monotonic 64-bit byte counts,
multiples of 8 as every record is (a power-of-two ring keeps offsets right when they wrap); tail -
head is what is in use. A record that would run past the end of the data is preceded by a skip
record and written at offset 0. The producer publishes records with a release store of the tail,
the consumer frees their room with a release store of the head, and each side acquire-loads the
other's counter (native/ring.c has the details). A full ring drops the frame (counted
``tx_queue_full``, ErrNoBufferSpace as every link raises when its medium has no room): the stack
never blocks on its peer. A peer is not trusted: a record that
breaks these rules makes the reader skip all that is published (counted ``rx_ring_errors``), never
read outside the ring. A super-segment itself is not checked here: it is the stack's to accept or
count, as for one the kernel hands a TUN with offloads (``fdbased``).

Wake-ups: one eventfd per ring, which the consumer's gevent hub watches. A consumer that finds its
ring empty raises ``waiting``, then (after a full fence) looks at the tail again: frames there mean
it lowers the flag and goes on reading; otherwise it sleeps. A producer, after publishing (and a
full fence), looks at ``waiting``: raised, it lowers it and writes the eventfd. Each side stores
then loads what the other stores, so at least one of them sees the other's store: no wake-up is
lost, and a peer that is not asleep costs no system call. A woken reader takes up to ``read_batch``
frames, then yields to the hub before taking more, as ``fdbased`` does.

Side B needs the region and both eventfds: ``SharedMemoryPeer`` holds them, ``fds`` to hand to a
child (``subprocess.Popen(..., pass_fds=peer.fds)``) and ``spec`` to tell it their numbers
(``SharedMemoryEndpoint.open(spec)`` there). A file region outlives both sides until it is
unlinked: whoever created it removes it once the peer has opened it.

Unlike netstack's, which posts receive buffers and passes descriptors to a separate data region so
that frames are never copied, a ring here carries the frames themselves: the Python side must copy
each frame into a buffer of its own anyway before the stack may keep it, and two counters per
direction are the whole protocol. A side that closes unmaps its view; the other's frames just stop.

The rings are driven by native/ring.c where the extension is built. The pure-Python fallback lays
out the same bytes (the two interoperate) with aligned 8-byte memoryview stores; Python has no fence,
so it takes a lock for one (an atomic read-modify-write: a full barrier on x86-64). Across
processes it relies on x86-64's store ordering: elsewhere, build the extension.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from gevent import get_hub
from gevent.monkey import get_original

from ..header import ethernet as eth
from ..stack.interfaces import LinkCapabilities, LinkEndpointBase, NetworkDispatcher
from ..stack.packet_buffer import Buffer, PacketBuffer
from ..tcpip.errors import ErrClosedForSend, ErrMessageTooLong, ErrNoBufferSpace
from ..tcpip.stats import StatCounter
from . import LinkStats, deliver_ethernet, deliver_ip

try:  # pragma: no cover - which branch runs depends on the build
    from .. import _native  # type: ignore[attr-defined]
except ImportError:  # no compiler where this was installed: the rings in Python
    _native = None

__all__ = ["DEFAULT_RING_BYTES", "SharedMemoryEndpoint", "SharedMemoryLinkStats", "SharedMemoryPeer"]

_log = logging.getLogger(__name__)

MAGIC = b"nsshmem\0"
VERSION = 2
LINK_RAW_IP, LINK_ETHERNET = 0, 1
FLAG_GSO = 1
DEFAULT_RING_BYTES = 1 << 21

_REGION_HEADER = struct.Struct("=8sIIIIQI")    # magic, version, link type, MTU, ring bytes, region size, flags
_REGION_HEADER_SIZE = 64
_RING_HEADER_SIZE = 128                         # native/ring.h NS_RING_HEADER_SIZE
_TAIL, _HEAD, _WAITING = 0, 8, 18               # u64, u64, u32 indexes in the ring header
_RECORD = struct.Struct("=II")                  # length, gso_size: native/ring.h NS_RING_RECORD_HEADER
_SKIP = 0xFFFFFFFF
_U64 = (1 << 64) - 1
_ZEROS = bytes(8)
_MIN_MTU, _MAX_MTU = 68, 65535
_MAX_SUPER_SEGMENT = 65535                      # an IP packet's largest (the IPv4 total length's limit)
_READ = 1  # libev/libuv EV_READ


def _record_size(length: int) -> int:
    return _RECORD.size + ((length + 7) & ~7)


def _ring_offset(index: int, ring_bytes: int) -> int:
    return _REGION_HEADER_SIZE + index * (_RING_HEADER_SIZE + ring_bytes)


def _region_size(ring_bytes: int) -> int:
    return _ring_offset(2, ring_bytes)


def _max_frames(mtu: int, ethernet: bool, gso: bool) -> tuple[int, int]:
    """The longest plain frame and the longest super-segment (0: none allowed) a region's records hold."""
    header = eth.HEADER_SIZE if ethernet else 0
    return mtu + header, _MAX_SUPER_SEGMENT + header if gso else 0


def _geometry_problem(mtu: int, ring_bytes: int, ethernet: bool, gso: bool) -> str | None:
    """Why an MTU and a ring size cannot make a region, or None."""
    if not _MIN_MTU <= mtu <= _MAX_MTU:
        return f"MTU {mtu} out of range [{_MIN_MTU}, {_MAX_MTU}]"
    if ring_bytes <= 0 or ring_bytes & (ring_bytes - 1) or ring_bytes > 1 << 31:
        return f"ring size {ring_bytes} is not a power of two up to 2 GiB"
    # Two of the largest records: then one always fits in an empty ring, wherever its tail is.
    smallest = 2 * _record_size(max(_max_frames(mtu, ethernet, gso)))
    if ring_bytes < smallest:
        largest = "64 KB super-segments (gso=False for frames of the MTU only)" if gso else f"frames of MTU {mtu}"
        return f"ring size {ring_bytes} is under {smallest}, two {largest}"
    return None


def _check_region(region: mmap.mmap) -> tuple[int, int, int, bool]:
    """(link type, MTU, ring bytes, GSO) from a mapped region's header; ValueError if it is not one."""
    if len(region) < _REGION_HEADER_SIZE:
        raise ValueError(f"{len(region)} bytes: too small for a shared-memory link region")
    magic, version, link, mtu, ring_bytes, size, flags = _REGION_HEADER.unpack_from(region)
    if magic != MAGIC:
        raise ValueError(f"not a shared-memory link region (magic {magic!r})")
    if version != VERSION:
        raise ValueError(f"shared-memory link region version {version}, not {VERSION}")
    if link not in (LINK_RAW_IP, LINK_ETHERNET):
        raise ValueError(f"shared-memory link region with unknown link type {link}")
    if flags & ~FLAG_GSO:
        raise ValueError(f"shared-memory link region with unknown flags {flags:#x}")
    gso = bool(flags & FLAG_GSO)
    problem = _geometry_problem(mtu, ring_bytes, link == LINK_ETHERNET, gso)
    if problem:
        raise ValueError(f"bad shared-memory link region: {problem}")
    if size != _region_size(ring_bytes) or size > len(region):
        raise ValueError(f"bad shared-memory link region: size {size} for rings of {ring_bytes} bytes "
                         f"in a {len(region)}-byte mapping")
    return link, mtu, ring_bytes, gso


def _room_needed(tail: int, head: int, size: int, record: int) -> int:
    """Bytes a record takes at ``tail`` (with the skip record before it if it would run past the end);
    0 if that is more than is free (or the counters are further apart than the ring: a corrupt head)."""
    used = (tail - head) & _U64
    contiguous = size - (tail & (size - 1))
    need = record if record <= contiguous else contiguous + record
    return need if used <= size and need <= size - used else 0


class SharedMemoryLinkStats(LinkStats):
    """LinkStats, and the rings' own events."""

    rx_ring_errors: StatCounter     # the peer broke the ring's rules: everything it had published was skipped
    rx_sleeps: StatCounter          # the ring was found empty and the reader waited on its eventfd
    rx_super_segments: StatCounter  # of rx_packets, the TCP super-segments
    tx_super_segments: StatCounter  # of tx_packets, the TCP super-segments
    tx_wakeups: StatCounter         # the peer's reader was asleep: its eventfd was written


@dataclass(frozen=True)
class SharedMemoryPeer:
    """What side B needs to open a link side A created: the region (a memfd's fd number, or a path)
    and the two eventfds, ring 0's then ring 1's, as fds of this process.

    These fds are side A's process's until ``close``: pass ``fds`` to a child with
    ``subprocess.Popen(..., pass_fds=peer.fds)`` and ``spec`` on its command line, then close them.
    """

    region: int | str
    events: tuple[int, int]

    @property
    def fds(self) -> tuple[int, ...]:
        region = (self.region,) if isinstance(self.region, int) else ()
        return region + self.events

    @property
    def spec(self) -> str:
        """``fd:REGION,EVENT0,EVENT1`` or ``PATH,EVENT0,EVENT1``, for ``SharedMemoryEndpoint.open``."""
        region = f"fd:{self.region}" if isinstance(self.region, int) else self.region
        return f"{region},{self.events[0]},{self.events[1]}"

    @classmethod
    def parse(cls, spec: str) -> SharedMemoryPeer:
        try:
            region, event0, event1 = spec.rsplit(",", 2)
            events = (int(event0), int(event1))
            return cls(int(region[3:]) if region.startswith("fd:") else region, events)
        except ValueError:
            raise ValueError(f"not a shared-memory link spec: {spec!r}") from None

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SharedMemoryEndpoint(LinkEndpointBase):
    """One side of a shared-memory link; see the module docstring. Make one with ``create`` (side A)
    or ``open`` (side B); both behave alike from then on.

    The constructor takes over ``region`` (mapped, its header written) and the eventfds (ring 0's,
    ring 1's); ``side`` is 0 for A, which sends on ring 0, and 1 for B. ``link_address`` is this
    side's MAC on an Ethernet link. ``read_batch``: frames taken per hub turn.

    On a GSO region the endpoint has ``LinkCapabilities.HARDWARE_GSO``: TCP hands it 64 KB
    super-segments, which it writes whole, and those the peer writes reach the stack whole
    (``pkt.gso_size`` set). Elsewhere a super-segment is refused as too long: a stack sends none to
    a link without the capability, and a router cuts those it forwards to one (``header.gso``).
    """

    def __init__(self, region: mmap.mmap, side: int, events: tuple[int, int], link_address: bytes = b"",
                 read_batch: int = 64) -> None:
        if side not in (0, 1):
            raise ValueError(f"side {side}: a link has sides 0 and 1")
        link, mtu, ring_bytes, gso = _check_region(region)
        ethernet = link == LINK_ETHERNET
        if ethernet and len(link_address) != 6:
            raise ValueError("an Ethernet link needs a 6-byte link address")
        if read_batch < 1:
            raise ValueError(f"read_batch {read_batch} < 1")
        capabilities = LinkCapabilities.RESOLUTION_REQUIRED if ethernet else LinkCapabilities.NONE
        if gso:
            capabilities |= LinkCapabilities.HARDWARE_GSO
        super().__init__(mtu, bytes(link_address), capabilities)
        self._region = region
        self._ethernet = ethernet
        self._gso = gso
        self._header_length = eth.HEADER_SIZE if ethernet else 0
        max_frame, max_super = _max_frames(mtu, ethernet, gso)
        producer, consumer = _RINGS
        self._tx = producer(region, _ring_offset(side, ring_bytes), ring_bytes)
        self._rx = consumer(region, _ring_offset(1 - side, ring_bytes), ring_bytes, max_frame, max_super,
                            read_batch)
        self._tx_event, self._rx_event = events[side], events[1 - side]
        self._read_batch = read_batch
        self.stats = SharedMemoryLinkStats()
        self._watcher = None
        self._callback = None
        self._closed = False

    @classmethod
    def create(cls, path: str | None = None, mtu: int = 1500, ring_bytes: int = DEFAULT_RING_BYTES,
               ethernet: bool = False, link_address: bytes = b"", read_batch: int = 64,
               gso: bool = True) -> tuple[SharedMemoryEndpoint, SharedMemoryPeer]:
        """Make a region — a memfd, or the new file ``path`` — and return side A's endpoint and what
        side B needs to open it (whose fds the caller closes once B has them). ``gso``: both sides
        pass TCP super-segments whole (each ring must then hold two 64 KB records: 256 KiB at least)."""
        problem = _geometry_problem(mtu, ring_bytes, ethernet, gso)
        if problem:
            raise ValueError(problem)
        size = _region_size(ring_bytes)
        if path is None:
            fd = os.memfd_create("netsock-sharedmem", os.MFD_CLOEXEC)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        owned = [fd]
        region = None
        try:
            os.ftruncate(fd, size)
            region = mmap.mmap(fd, size)
            _REGION_HEADER.pack_into(region, 0, MAGIC, VERSION, LINK_ETHERNET if ethernet else LINK_RAW_IP, mtu,
                                     ring_bytes, size, FLAG_GSO if gso else 0)
            events = (os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK), os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
            owned += events
            peer = SharedMemoryPeer(fd if path is None else path, (os.dup(events[0]), os.dup(events[1])))
            owned += peer.events
            endpoint = cls(region, 0, events, link_address, read_batch)
        except BaseException:
            if region is not None:
                region.close()
            for owned_fd in owned:
                os.close(owned_fd)
            if path is not None:
                os.unlink(path)
            raise
        if path is not None:
            os.close(fd)    # the mapping keeps the file; B opens it by name
        return endpoint, peer

    @classmethod
    def open(cls, peer: SharedMemoryPeer | str, link_address: bytes = b"",
             read_batch: int = 64) -> SharedMemoryEndpoint:
        """Side B: map the region of ``peer`` (or of its ``spec``), checking its header (ValueError
        if it is not a valid region). The caller keeps the fds it passed; the endpoint uses its own
        duplicates."""
        if isinstance(peer, str):
            peer = SharedMemoryPeer.parse(peer)
        region = _map(peer.region)
        events: list[int] = []
        try:
            for event in peer.events:
                events.append(os.dup(event))
                os.set_blocking(events[-1], False)
            return cls(region, 1, (events[0], events[1]), link_address, read_batch)
        except BaseException:
            region.close()
            for event in events:
                os.close(event)
            raise

    def max_header_length(self) -> int:
        return self._header_length

    # --- inbound ----------------------------------------------------------------------------------

    def attach(self, dispatcher: NetworkDispatcher | None) -> None:
        """Attach and start reading from the current thread's gevent hub; None stops reading
        (frames then wait in the ring)."""
        self.dispatcher = dispatcher
        if dispatcher is None:
            self._stop_reading()
        else:
            self.start()

    def start(self) -> None:
        """Watch the eventfd from the hub, and read what is already in the ring (idempotent)."""
        if self._watcher is None and not self._closed:
            watcher = get_hub().loop.io(self._rx_event, _READ)
            watcher.start(self._on_wakeup)
            self._watcher = watcher
            self._schedule_read()

    def _stop_reading(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
        callback, self._callback = self._callback, None
        if callback is not None:
            callback.stop()

    def _schedule_read(self) -> None:
        """Read again at the hub's next turn, after the greenlets that are ready now."""
        if self._callback is None:
            self._callback = get_hub().loop.run_callback(self._read)

    def _on_wakeup(self) -> None:
        try:
            os.eventfd_read(self._rx_event)
        except BlockingIOError:
            pass    # the peer holds this eventfd too: finding it empty is no reason to stop reading
        self._read()

    def _read(self) -> None:
        self._callback = None
        if self._watcher is None:
            return
        batch_full = self.dispatch_available() == self._read_batch
        if self._watcher is None:
            return  # what was delivered detached or closed the link
        if batch_full or not self._rx.prepare_wait():
            self._schedule_read()
        else:
            self.stats.rx_sleeps.increment()

    def dispatch_available(self) -> int:
        """Take up to ``read_batch`` frames off the ring and deliver them; return how many were taken.

        Never raises and never blocks: the hub calls it. A dispatcher exception is logged and
        counted and the next frame is delivered. Frames stay in the ring while detached (those of a
        batch already taken when the link is detached or closed count as not attached).
        """
        if self._closed or self.dispatcher is None:
            return 0
        stats = self.stats
        frames, gso_sizes, errors = self._rx.pop(self._read_batch)
        if errors:
            stats.rx_ring_errors.increment(errors)
        if not frames:
            return 0
        stats.rx_packets.increment(len(frames))
        stats.rx_bytes.increment(sum(map(len, frames)))
        ethernet, own = self._ethernet, self._link_address
        for frame, gso_size in zip(frames, gso_sizes):
            dispatcher = self.dispatcher
            if dispatcher is None:
                stats.rx_not_attached.increment()
                continue
            pkt = PacketBuffer.inbound(frame)
            if gso_size:
                pkt.gso_size = gso_size
                stats.rx_super_segments.increment()
            try:
                if ethernet:
                    deliver_ethernet(dispatcher, own, pkt, stats)
                else:
                    deliver_ip(dispatcher, pkt, stats)
            except Exception:
                stats.rx_dispatch_errors.increment()
                _log.exception("shared-memory link: dispatcher failed on an inbound frame")
        return len(frames)

    # --- outbound ---------------------------------------------------------------------------------

    def _too_long(self, pkt: PacketBuffer) -> bool:
        """Longer than the link carries: the MTU, or 64 KB for a super-segment on a GSO region (and
        a super-segment elsewhere, which is longer than the MTU by nature)."""
        if pkt.gso_size:
            return not self._gso or pkt.size() > _MAX_SUPER_SEGMENT
        return pkt.size() > self._mtu

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        stats = self.stats
        if self._closed:
            stats.tx_closed.increment()
            raise ErrClosedForSend
        if self._too_long(pkt):
            stats.tx_too_long.increment()
            raise ErrMessageTooLong
        if self._ethernet:
            eth.build(pkt.prepend(eth.HEADER_SIZE), remote_link_address, self._link_address, protocol)
        gso_size = pkt.gso_size
        pushed, wake = self._tx.push_one(pkt.views(), gso_size)
        if wake:
            self._wake_peer()
        if not pushed:
            stats.tx_queue_full.increment()
            raise ErrNoBufferSpace
        stats.tx_packets.increment()
        stats.tx_bytes.increment(pkt.size())
        if gso_size:
            stats.tx_super_segments.increment()

    def write_packets(self, remote_link_address: bytes, protocol: int, pkts: list[PacketBuffer]) -> int:
        """All of ``pkts`` up to the first the link refuses, published at once (one wake-up at most).

        As ``write_each``: the refusal is raised only if nothing was sent, and only the refused
        packet is counted under its cause."""
        stats = self.stats
        if self._closed:
            stats.tx_closed.increment()
            raise ErrClosedForSend
        ethernet, own, too_long = self._ethernet, self._link_address, self._too_long
        frames: list[list[Buffer]] = []
        gso_sizes: list[int] = []
        for pkt in pkts:
            if too_long(pkt):
                break
            if ethernet:
                eth.build(pkt.prepend(eth.HEADER_SIZE), remote_link_address, own, protocol)
            frames.append(pkt.views())
            gso_sizes.append(pkt.gso_size)
        if not frames and pkts:
            stats.tx_too_long.increment()
            raise ErrMessageTooLong
        pushed, wake = self._tx.push(frames, gso_sizes)
        if wake:
            self._wake_peer()
        stats.tx_packets.increment(pushed)
        stats.tx_bytes.increment(sum(pkt.size() for pkt in pkts[:pushed]))
        stats.tx_super_segments.increment(pushed - gso_sizes[:pushed].count(0))
        if pushed < len(frames):
            stats.tx_queue_full.increment()
            if not pushed:
                raise ErrNoBufferSpace
        elif len(frames) < len(pkts):
            stats.tx_too_long.increment()
        return pushed

    def _wake_peer(self) -> None:
        os.eventfd_write(self._tx_event, 1)
        self.stats.tx_wakeups.increment()

    def close(self) -> None:
        """Stop reading, refuse further writes, unmap the region and close the eventfds. The rings
        let go of their pointers and views first: mmap refuses to close while one is left, so none
        outlives the mapping. The peer is not told: what it sends just stops being read. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.dispatcher = None
        self._stop_reading()
        self._tx.release()
        self._rx.release()
        self._region.close()
        os.close(self._rx_event)
        os.close(self._tx_event)


def _map(region: int | str) -> mmap.mmap:
    """The whole of a region (an fd, or a path), mapped shared and writable."""
    fd = region if isinstance(region, int) else os.open(region, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < _REGION_HEADER_SIZE:
            raise ValueError(f"{region!r}: {size} bytes, too small for a shared-memory link region")
        return mmap.mmap(fd, size)
    finally:
        if not isinstance(region, int):
            os.close(fd)


# --- the rings --------------------------------------------------------------------------------------
# Both made with the mapping, the ring's offset in it and its data size. A producer appends frames,
# each given as the buffers it is made of (``PacketBuffer.views()``) and its gso_size:
# ``push_one(pieces, gso_size)`` and ``push(frames, gso_sizes)`` return (frames appended, whether to
# wake the peer); they stop at the first frame that does not fit. A consumer, made also with the
# longest valid plain frame and super-segment (0: none valid) and the most frames a pop asks for,
# has ``pop(count)`` return (frames, their gso_sizes, ring errors), each frame a bytearray of its
# own; ``prepare_wait()`` is True when the reader may sleep. ``release()`` lets go of the mapping,
# which may be closed then.

_fence_lock = get_original("_thread", "allocate_lock")()    # a real lock, even under monkey-patching


def _full_fence() -> None:
    """Python has no fence: a lock's acquisition is an atomic read-modify-write, which on x86-64 is
    a full barrier (stores before it are visible before loads after it)."""
    _fence_lock.acquire()
    _fence_lock.release()


class _PyRing:
    """A ring's header and data as memoryviews of the mapping."""

    def __init__(self, region: mmap.mmap, offset: int, size: int) -> None:
        self._size = size
        self._mapping = memoryview(region)
        header = self._mapping[offset:offset + _RING_HEADER_SIZE]
        self._counters = header.cast("Q")
        self._flags = header.cast("I")
        self._data = self._mapping[offset + _RING_HEADER_SIZE:offset + _RING_HEADER_SIZE + size]
        self._views = (self._counters, self._flags, self._data, header, self._mapping)

    def release(self) -> None:
        for view in self._views:
            view.release()


class _PyProducer(_PyRing):
    def push_one(self, pieces: Sequence[Buffer], gso_size: int = 0) -> tuple[int, bool]:
        return self.push((pieces,), (gso_size,))

    def push(self, frames: Sequence[Sequence[Buffer]], gso_sizes: Sequence[int]) -> tuple[int, bool]:
        counters, data, size = self._counters, self._data, self._size
        tail, head = counters[_TAIL], counters[_HEAD]
        if tail & 7:    # records are 8-aligned: the peer wrote our tail; append nothing more
            return 0, False
        pushed = 0
        for pieces, gso_size in zip(frames, gso_sizes):
            length = sum(map(len, pieces))
            record = _record_size(length)
            need = _room_needed(tail, head, size, record)
            if not need:    # full as last seen: the consumer may have made room since
                head = counters[_HEAD]
                need = _room_needed(tail, head, size, record)
                if not need:
                    break
            offset = tail & (size - 1)
            if need != record:
                _RECORD.pack_into(data, offset, _SKIP, 0)
                offset = 0
            _RECORD.pack_into(data, offset, length, gso_size)
            at = offset + _RECORD.size
            for piece in pieces:
                end = at + len(piece)
                data[at:end] = piece
                at = end
            end = offset + record
            data[at:end] = _ZEROS[:end - at]
            tail = (tail + need) & _U64
            pushed += 1
        if not pushed:
            return 0, False
        counters[_TAIL] = tail
        _full_fence()
        if not self._flags[_WAITING]:
            return pushed, False
        self._flags[_WAITING] = 0
        return pushed, True


class _PyConsumer(_PyRing):
    """Copies each frame straight out of the mapping (``batch`` sizes nothing here)."""

    def __init__(self, region: mmap.mmap, offset: int, size: int, max_frame: int, max_super: int,
                 batch: int) -> None:
        super().__init__(region, offset, size)
        self._max_frame = max_frame
        self._max_super = max_super

    def pop(self, count: int) -> tuple[list[bytearray], list[int], int]:
        counters, data, size, max_frame, max_super = (self._counters, self._data, self._size, self._max_frame,
                                                      self._max_super)
        head = start = counters[_HEAD]
        tail = counters[_TAIL]
        frames: list[bytearray] = []
        gso_sizes: list[int] = []
        errors = 0
        if (tail - head) & _U64 > size or (head | tail) & 7:
            errors, head = 1, tail
        while len(frames) < count and head != tail:
            offset = head & (size - 1)
            contiguous = size - offset
            available = (tail - head) & _U64
            length, gso_size = _RECORD.unpack_from(data, offset)
            if length == _SKIP:
                if contiguous > available:
                    errors, head = 1, tail
                    break
                head = (head + contiguous) & _U64
                continue
            record = _record_size(length)
            limit = max_super if gso_size else max_frame    # 0: no super-segment is valid
            if not limit or length > limit or record > contiguous or record > available:
                errors, head = 1, tail
                break
            at = offset + _RECORD.size
            frames.append(bytearray(data[at:at + length]))
            gso_sizes.append(gso_size)
            head = (head + record) & _U64
        if head != start:
            counters[_HEAD] = head
        return frames, gso_sizes, errors

    def prepare_wait(self) -> bool:
        counters, flags = self._counters, self._flags
        flags[_WAITING] = 1
        _full_fence()
        if counters[_TAIL] == counters[_HEAD]:
            return True
        flags[_WAITING] = 0
        return False


class _NativeRing:
    """A ring driven by native/ring.c through a pointer into the mapping, released with it."""

    def __init__(self, region: mmap.mmap, offset: int, size: int) -> None:
        self._size = size
        self._mapping = _native.ffi.from_buffer("uint8_t[]", region, require_writable=True)
        self._ring = self._mapping + offset

    def release(self) -> None:
        _native.ffi.release(self._mapping)


class _NativeProducer(_NativeRing):
    def __init__(self, region: mmap.mmap, offset: int, size: int) -> None:
        super().__init__(region, offset, size)
        self._wake = _native.ffi.new("int *")
        self._allocate(16, 8)

    def _allocate(self, pieces: int, frames: int) -> None:
        ffi = _native.ffi
        self._pieces = ffi.new("const uint8_t *[]", pieces)
        self._lengths = ffi.new("uint32_t[]", pieces)
        self._frame_pieces = ffi.new("uint32_t[]", frames)
        self._gso_sizes = ffi.new("uint32_t[]", frames)

    def push_one(self, pieces: Sequence[Buffer], gso_size: int = 0) -> tuple[int, bool]:
        if len(pieces) > len(self._pieces):
            self._allocate(len(pieces), len(self._frame_pieces))
        from_buffer, pointers, lengths = _native.ffi.from_buffer, self._pieces, self._lengths
        buffers = [from_buffer("uint8_t[]", piece) for piece in pieces]   # alive until the call returns
        for i, buffer in enumerate(buffers):
            pointers[i] = buffer
            lengths[i] = len(buffer)
        pushed = _native.lib.ns_ring_push(self._ring, self._size, pointers, lengths, len(buffers), gso_size,
                                          self._wake)
        return pushed, bool(self._wake[0])

    def push(self, frames: Sequence[Sequence[Buffer]], gso_sizes: Sequence[int]) -> tuple[int, bool]:
        from_buffer = _native.ffi.from_buffer
        buffers = [[from_buffer("uint8_t[]", piece) for piece in pieces] for pieces in frames]
        count = sum(map(len, buffers))
        if count > len(self._pieces) or len(frames) > len(self._frame_pieces):
            self._allocate(max(count, len(self._pieces)), max(len(frames), len(self._frame_pieces)))
        pointers, lengths, frame_pieces = self._pieces, self._lengths, self._frame_pieces
        self._gso_sizes[0:len(frames)] = gso_sizes
        i = 0
        for f, pieces in enumerate(buffers):
            frame_pieces[f] = len(pieces)
            for buffer in pieces:
                pointers[i] = buffer
                lengths[i] = len(buffer)
                i += 1
        pushed = _native.lib.ns_ring_push_batch(self._ring, self._size, pointers, lengths, frame_pieces,
                                                self._gso_sizes, len(buffers), self._wake)
        return pushed, bool(self._wake[0])


class _NativeConsumer(_NativeRing):
    _OUT_BYTES = 1 << 20    # at most this much copied out per call, but always one largest record

    def __init__(self, region: mmap.mmap, offset: int, size: int, max_frame: int, max_super: int,
                 batch: int) -> None:
        super().__init__(region, offset, size)
        ffi = _native.ffi
        self._max_frame = max_frame
        self._max_super = max_super
        largest = max(max_frame, max_super)
        self._out = bytearray(max(largest, min(batch * largest, self._OUT_BYTES)))
        self._out_pointer = ffi.from_buffer("uint8_t[]", self._out, require_writable=True)
        self._lengths = ffi.new("uint32_t[]", batch)
        self._gso_sizes = ffi.new("uint32_t[]", batch)
        self._errors = ffi.new("uint32_t *")

    def pop(self, count: int) -> tuple[list[bytearray], list[int], int]:
        lengths, out = self._lengths, self._out
        n = _native.lib.ns_ring_pop_batch(self._ring, self._size, self._max_frame, self._max_super, self._out_pointer,
                                          len(out), min(count, len(lengths)), lengths, self._gso_sizes, self._errors)
        frames = []
        at = 0
        for i in range(n):
            end = at + lengths[i]
            frames.append(out[at:end])
            at = end
        return frames, _native.ffi.unpack(self._gso_sizes, n), self._errors[0]

    def prepare_wait(self) -> bool:
        return bool(_native.lib.ns_ring_prepare_wait(self._ring))


_NATIVE_RINGS = (_NativeProducer, _NativeConsumer)
_PYTHON_RINGS = (_PyProducer, _PyConsumer)
# The extension may predate these rings (an old build): then Python drives them too.
_RINGS = (_NATIVE_RINGS if _native is not None and getattr(_native.lib, "NS_RING_VERSION", 0) == VERSION
          else _PYTHON_RINGS)
