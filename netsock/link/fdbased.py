"""A link over a file descriptor (netstack's ``link/fdbased``): TUN, TAP, or a packet socket pair.

The fd must preserve packet boundaries — one read or write is one frame — as TUN/TAP fds and
SOCK_SEQPACKET/SOCK_DGRAM sockets do. It is made non-blocking.

Reading is driven by the gevent hub: an io watcher calls ``dispatch_available`` when the fd is
readable, which reads and delivers up to ``read_batch`` frames and returns, so that other greenlets
get their turn while traffic keeps arriving (the watcher fires again while frames are pending). The
callback runs in the hub, so the whole inbound path — link, network, transport up to queuing data
and waking readers — must neither block nor switch. No thread, no busy loop.

Frames are read in batches by one call into C (``native/fdio.c``) where the extension is built, one
``readv`` each otherwise. A large frame — a 64 KB super-segment — stays in the pooled buffer it was
read into, which the PacketBuffer (and, in the end, the payload a socket reader receives) refers to
without any further copy; the buffer goes back to the pool, not to the allocator, when the last view
of it is gone. A small frame is copied into a buffer of exactly its size, so that a queued segment
never pins more memory than it holds. Writes hand the header and payload buffers to one ``writev``.

Offloads (TUN devices opened by ``FdEndpoint.open_tun``, by default): the fd is attached with a
virtio-net header (IFF_VNET_HDR) and the kernel told we take partial checksums and TCP super-segments
(TUNSETOFFLOAD: TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6). Then the kernel's TCP arrives in super-segments
of up to 64 KB, passed up whole (``pkt.gso_size`` set, the checksum partial and not verified), and
the link advertises HARDWARE_GSO, so TCP hands it 64 KB super-segments that it writes with a header
asking the kernel to cut and checksum them (see ``link.gso``). The stack's per-segment work is then
done once per 64 KB instead of once per 1.5 KB. Where the kernel also takes UDP super-datagrams
(TUN_F_USO4/USO6, Linux 6.2), the link advertises HARDWARE_GSO_UDP: a UDP_SEGMENT write leaves in
one piece for the kernel to cut, and the kernel's own UDP GSO arrives whole, cut into datagrams here
(``header.gso.segment_udp``: the stack's UDP takes datagrams). Where the kernel has BIG TCP for IPv4
(Linux 6.3), IPv4 super-segments to the kernel's own addresses may be larger than 64 KB
(``gso_max_size``): the kernel takes them as its own GRO would build them. (Not to addresses it
forwards to: the next device would have them cut in software.) Inbound, the kernel's super-segments
are 64 KB at most (a TUN's tso_max_size is fixed), about three per wake-up: the C reader merges the
consecutive IPv4 ones of a flow as it reads them, without a copy, into one of up to
``gro_ipv4_max_size`` (BIG TCP's total length 0 beyond 64 KB, as Linux's GRO builds them), so that IP
and TCP walk three times fewer (``native/gro.c`` ns_read_gro; measured kernel -> netsock, 1 GiB,
alternated: 1,251-1,310 MB/s without, 1,525-1,927 with, user CPU 0.80-0.96 s -> 0.56-0.76 s). Where
the kernel refuses the offloads, the device is used plain.
Opt out with ``open_tun(..., offload=False)`` or, for every device, ``NETSOCK_OFFLOAD=0`` in the
environment.

Software GSO (a plain fd: TAP, a TUN without the header, a socket pair): the link advertises
HARDWARE_GSO all the same and cuts each super-segment itself just before the fd, as Linux does for
a device without TSO — in one call into C (``native/segment.c``) that completes each frame's headers
and checksums and writes the frames, the payload never copied; ``header.gso.segment_tcp`` where the
extension is not built. TCP's per-segment work is then done once per 64 KB here too; only the
writes remain per frame. Inbound, the consecutive segments of each flow that one batch read brings
are coalesced into super-segments (``link.gro``, Linux's GRO). A sniffer stacked above this link
records super-segments, not the frames on the wire (as tcpdump on a Linux device with GSO/GRO does).
"""

from __future__ import annotations

import errno
import logging
import os

from gevent import get_hub

from ..header import ethernet as eth
from ..header.checksum import complete_checksum
from ..header.gso import segment_tcp, segment_udp, split_tcp
from ..stack.interfaces import GSO_LEGACY_MAX_SIZE, LinkCapabilities, LinkEndpointBase, NetworkDispatcher
from ..stack.packet_buffer import PacketBuffer
from ..tcpip.errors import Error, ErrClosedForSend, ErrMessageTooLong, ErrNoBufferSpace
from ..tcpip.stats import StatCounter
from . import LinkStats, deliver_ethernet, deliver_ip, tun, write_each
from .gro import coalesce, mark_udp_flows
from .gso import (F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, NO_OFFLOAD,
                  VIRTIO_NET_HDR, VIRTIO_NET_HDR_SIZE, gso_header, transport_start)

try:  # pragma: no cover - which branch runs depends on the build
    from .. import _native  # type: ignore[attr-defined]
except ImportError:  # no compiler where this was installed: read in Python
    _native = None

_log = logging.getLogger(__name__)

_READ = 1  # libev/libuv EV_READ

# What an fd with a virtio-net header is set up to carry (``tun.set_offloads``).
OFFLOADS = tun.TUN_F_CSUM | tun.TUN_F_TSO4 | tun.TUN_F_TSO6
UDP_OFFLOADS = tun.TUN_F_USO4 | tun.TUN_F_USO6    # asked for too, where the kernel has them
_UDP = 17
_IPV4 = 0x0800
_MAX_IP_PACKET = 65535                              # what a 16-bit IPv4 total length describes
_NO_ROOM = (errno.ENOBUFS, errno.EMSGSIZE, errno.ENOMEM)    # the kernel could not hold a packet that large
# The largest packet a super-segment makes: a full 16-bit IPv6 payload behind its header.
_LARGEST_SUPER_SEGMENT = 40 + 65535
# What an offloaded fd takes as one IPv4 TCP super-segment where the kernel has BIG TCP for IPv4
# (Linux 6.3: an IPv4 GSO packet whose total length field is 0): the most Linux lets a device take
# (GSO_MAX_SIZE), eight times 64 KB's worth per pass through netsock's Python. Measured (tcp_bulk,
# netsock -> kernel): 64 KB 1,332 MB/s, 128 KB 1,877, 192 KB 2,227, 256 KB 2,492, 384 KB 2,880,
# 512 KB 3,146. (IPv6 BIG TCP wants a jumbo hop-by-hop option; the kernel drops the plain form.)
_GSO_MAX_SIZE = 8 * 65535
BIG_TCP_GSO_MAX_SIZE = _GSO_MAX_SIZE


class FdLinkStats(LinkStats):
    """LinkStats, and what the offloads did. Byte counts are what crossed the fd, virtio-net headers
    included."""

    rx_super_segments: StatCounter   # TCP super-segments the kernel handed us whole (in rx_packets too)
    rx_super_datagrams: StatCounter  # UDP super-datagrams the kernel handed us, cut here (one rx_packet each)
    rx_bad_vnet_header: StatCounter  # an offload we did not ask for, or a checksum outside the frame
    rx_merged_super_segments: StatCounter  # ... merged into the one before them (GRO; not in rx_super_segments)
    tx_super_segments: StatCounter   # TCP super-segments handed to the kernel to cut (in tx_packets too)
    tx_super_datagrams: StatCounter  # UDP super-datagrams handed to the kernel to cut (in tx_packets too)
    tx_segmented: StatCounter        # TCP super-segments cut here (software GSO; their frames are tx_packets)
    tx_malformed: StatCounter        # super-segments dropped: not an IPv4/IPv6 TCP packet whose headers parse
    tx_split: StatCounter            # BIG TCP super-segments the kernel had no room for, written as 64 KB ones


class FdEndpoint(LinkEndpointBase):
    """``ethernet=True`` for TAP-like fds (frames carry a 14-byte Ethernet header; ``link_address``
    is our 6-byte MAC), False for TUN-like fds carrying raw IP packets.

    ``close_fd``: close the fd when the endpoint is closed (False if the caller still owns it).

    ``vnet_header``: every frame is preceded by a virtio-net header, the fd having been set up with
    ``tun.set_offloads(fd, OFFLOADS, VIRTIO_NET_HDR_SIZE)`` (``open_tun`` does it); the link then
    takes TCP super-segments both ways, and UDP super-datagrams too with ``udp_gso`` (the fd also set
    up with ``UDP_OFFLOADS``). Without it, outbound super-segments are cut here (see the module
    docstring).

    ``gso_ipv4_max_size``: the largest IPv4 super-segment written (Linux's device setting of that
    name): more than 64 KB only with a vnet header and a reader that takes BIG TCP, as the kernel
    does from 6.3 (``open_tun`` asks for it there; the default, another netsock, does not).
    ``kernel_destinations``: then only toward the addresses the kernel says are its own (``open_tun``
    passes one); without it, toward all.

    ``gro_ipv4_max_size``: with a vnet header on a TUN, the consecutive IPv4 TCP super-segments of a
    flow read in one wake-up are merged into one of up to this many bytes (Linux's device setting of
    that name; above 64 KB its total length is 0, as in BIG TCP); 65536 or less: none are merged.
    """

    def __init__(self, fd: int, mtu: int, ethernet: bool, link_address: bytes = b"", close_fd: bool = True,
                 read_batch: int = 64, vnet_header: bool = False, udp_gso: bool = False,
                 gso_ipv4_max_size: int = GSO_LEGACY_MAX_SIZE,
                 kernel_destinations: tun.KernelDestinations | None = None,
                 gro_ipv4_max_size: int = _GSO_MAX_SIZE) -> None:
        if ethernet and len(link_address) != 6:
            raise ValueError("an Ethernet link needs a 6-byte link address")
        # Super-segments either way: the kernel cuts them (virtio-net header) or we do (software GSO).
        capabilities = LinkCapabilities.HARDWARE_GSO
        if ethernet:
            capabilities |= LinkCapabilities.RESOLUTION_REQUIRED
        if vnet_header:
            # One writev takes the pieces. (Not TX_CHECKSUM_OFFLOAD: measured, the kernel's work on a
            # small packet whose checksum it must complete costs more than netsock's sum saves:
            # connection rate 208-210 -> 218-234 us of server CPU per connection.)
            capabilities |= LinkCapabilities.SCATTER_GATHER
        if vnet_header and udp_gso:
            capabilities |= LinkCapabilities.HARDWARE_GSO_UDP
        super().__init__(mtu, bytes(link_address), capabilities)
        self._udp_gso = vnet_header and udp_gso
        if not GSO_LEGACY_MAX_SIZE <= gso_ipv4_max_size <= _GSO_MAX_SIZE or \
                (gso_ipv4_max_size > GSO_LEGACY_MAX_SIZE and not vnet_header):
            raise ValueError(f"gso_ipv4_max_size {gso_ipv4_max_size}: 65536, or up to {_GSO_MAX_SIZE} "
                             "with a vnet header")
        self._gso_ipv4_max_size = gso_ipv4_max_size
        if not 0 <= gro_ipv4_max_size <= _GSO_MAX_SIZE:
            raise ValueError(f"gro_ipv4_max_size {gro_ipv4_max_size}: 0 to {_GSO_MAX_SIZE}")
        self._kernel_destinations = kernel_destinations
        os.set_blocking(fd, False)
        self._fd = fd
        self._ethernet = ethernet
        self._header_length = eth.HEADER_SIZE if ethernet else 0
        self._vnet_header_length = VIRTIO_NET_HDR_SIZE if vnet_header else 0
        self._close_fd = close_fd
        self._read_batch = read_batch
        # One byte more than the largest valid frame: a read that fills it was truncated.
        read_size = (_LARGEST_SUPER_SEGMENT if vnet_header else mtu) + self._header_length + \
            self._vnet_header_length + 1
        self.stats = FdLinkStats()
        if _native is None:
            self._reader: _Reader | _NativeReader | _NativeMergingReader = _Reader(fd, read_size, read_batch,
                                                                                  self.stats)
        elif vnet_header and not ethernet and gro_ipv4_max_size > GSO_LEGACY_MAX_SIZE:
            self._reader = _NativeMergingReader(fd, read_size, read_batch, self.stats, VIRTIO_NET_HDR_SIZE,
                                                VIRTIO_NET_HDR_SIZE + gro_ipv4_max_size)
        else:
            self._reader = _NativeReader(fd, read_size, read_batch, self.stats)
        self._segmenter = (_NativeSegmenter if _native is not None else _Segmenter)(fd, self._header_length)
        self._watcher = None
        self._closed = False

    @classmethod
    def open_tun(cls, name: str, mtu: int | None = None, read_batch: int = 64,
                 offload: bool | None = None) -> FdEndpoint:
        """Attach to TUN device ``name`` (created, transient, if absent); the MTU defaults to the device's.

        ``offload``: use the virtio-net header offloads if the kernel grants them (None: unless
        NETSOCK_OFFLOAD=0); ``vnet_header`` on the endpoint says whether it did. With them, IPv4
        super-segments up to ``BIG_TCP_GSO_MAX_SIZE`` where the kernel takes BIG TCP, to the
        kernel's own addresses (``tun.KernelDestinations``: asked in the current namespace, the
        device's).
        """
        if offload is None:
            offload = os.environ.get("NETSOCK_OFFLOAD", "1") != "0"
        fd, udp_gso = _open_offloaded_tun(name) if offload else (None, False)
        vnet_header = fd is not None
        if fd is None:
            fd, _ = tun.open_device(name, tap=False)
        try:
            big_tcp = vnet_header and tun.kernel_has_big_tcp_ipv4()
            return cls(fd, mtu or tun.device_mtu(name), ethernet=False, read_batch=read_batch,
                       vnet_header=vnet_header, udp_gso=udp_gso,
                       gso_ipv4_max_size=BIG_TCP_GSO_MAX_SIZE if big_tcp else GSO_LEGACY_MAX_SIZE,
                       kernel_destinations=tun.KernelDestinations() if big_tcp else None)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open_tap(cls, name: str, link_address: bytes, mtu: int | None = None,
                 read_batch: int = 64) -> FdEndpoint:
        """Attach to TAP device ``name`` as the station ``link_address`` (see ``tun.mac_for``)."""
        fd, _ = tun.open_device(name, tap=True)
        try:
            return cls(fd, mtu or tun.device_mtu(name), ethernet=True, link_address=link_address,
                       read_batch=read_batch)
        except BaseException:
            os.close(fd)
            raise

    def fileno(self) -> int:
        return self._fd

    @property
    def vnet_header(self) -> bool:
        """Whether frames carry a virtio-net header, that is, whether the offloads are on."""
        return bool(self._vnet_header_length)

    def max_header_length(self) -> int:
        return self._header_length

    def gso_max_size(self, network_protocol: int, remote: bytes = b"") -> int:
        if network_protocol != _IPV4 or self._gso_ipv4_max_size == GSO_LEGACY_MAX_SIZE:
            return GSO_LEGACY_MAX_SIZE
        kernel = self._kernel_destinations
        if kernel is None or (remote and kernel.is_local(remote)):
            return self._gso_ipv4_max_size
        return GSO_LEGACY_MAX_SIZE

    # --- inbound ----------------------------------------------------------------------------------

    def attach(self, dispatcher: NetworkDispatcher | None) -> None:
        """Attach and start reading from the current thread's gevent hub; None stops reading."""
        self.dispatcher = dispatcher
        if dispatcher is None:
            self._stop_watcher()
        else:
            self.start()

    def start(self) -> None:
        """Start the hub io watcher that drives ``dispatch_available`` (idempotent)."""
        if self._watcher is None and not self._closed:
            watcher = get_hub().loop.io(self._fd, _READ)
            watcher.start(self.dispatch_available)
            self._watcher = watcher

    def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()

    def dispatch_available(self) -> int:
        """Read and deliver up to ``read_batch`` pending frames; return how many were read.

        Never raises and never blocks: the hub calls it. A dispatcher exception is logged and
        counted and the next frame is delivered. Frames are left in the fd while detached (those
        of a batch already read when the link is detached or closed are counted as not attached).
        If the fd reports end of file or an error, reading stops (a level-triggered watcher would
        otherwise spin on it) until the next ``attach``/``start``.
        """
        fd = self._fd
        vnet = self._vnet_header_length
        ethernet = self._ethernet
        own = self._link_address
        stats = self.stats
        reader = self._reader
        total = 0
        while total < self._read_batch and not self._closed and self.dispatcher is not None:
            frames, count, status = reader.read(self._read_batch - total)
            total += count
            # With a vnet header the kernel hands over its super-segments whole; without one, the
            # batch's consecutive segments of each flow are coalesced here (GRO).
            packets = self._offloaded(frames) if vnet else coalesce(frames, eth.HEADER_SIZE if ethernet else 0)
            mark_udp_flows(packets, eth.HEADER_SIZE if ethernet else 0, self.dispatcher)
            for pkt in packets:
                dispatcher = self.dispatcher
                if dispatcher is None or self._closed:
                    stats.rx_not_attached.increment()
                    continue
                try:
                    if ethernet:
                        deliver_ethernet(dispatcher, own, pkt, stats)
                    else:
                        deliver_ip(dispatcher, pkt, stats)
                except Exception:
                    stats.rx_dispatch_errors.increment()
                    _log.exception("fd %d: dispatcher failed on an inbound frame", fd)
            if status == _MORE:
                continue
            if status == _EOF:
                _log.warning("fd %d: end of file, reading stopped", fd)
                self._stop_watcher()
            elif status != errno.EAGAIN:
                stats.rx_read_errors.increment()
                _log.error("fd %d: read failed, reading stopped: %s", fd, os.strerror(status))
                self._stop_watcher()
            break
        return total

    def _offloaded(self, frames: list[bytearray | memoryview]) -> list[PacketBuffer]:
        """The frames behind their virtio-net headers, as the stack takes them: a TCP super-segment
        keeps its segment size (and its partial checksum, which TCP then leaves unverified); a UDP
        super-datagram is cut into its datagrams; any other partial checksum stays so
        (``csum_offset``: forwarding completes it, as a Linux router does for CHECKSUM_PARTIAL) and,
        like one the kernel already checked (F_DATA_VALID), is not summed by the transport
        (``checksum_verified``): the kernel computed it over bytes that never left the machine. A
        header asking for what we did not offer is a counted drop."""
        stats = self.stats
        udp_gso = self._udp_gso
        link_header = self._header_length
        packets = []
        for buf in frames:
            if len(buf) < VIRTIO_NET_HDR_SIZE:
                stats.rx_malformed.increment()
                continue
            flags, gso_type, _, gso_size, csum_start, csum_offset = VIRTIO_NET_HDR.unpack_from(buf)
            frame = memoryview(buf)[VIRTIO_NET_HDR_SIZE:]
            if gso_type == GSO_UDP_L4 and udp_gso and gso_size:
                try:
                    datagrams = segment_udp(frame, gso_size)     # fresh checksums: nothing left to verify
                except ValueError:
                    stats.rx_bad_vnet_header.increment()
                    continue
                stats.rx_super_datagrams.increment()
                key = object()      # a UDP_GRO socket reads the datagrams as one again (PacketBuffer.gro)
                for index, datagram in enumerate(datagrams):
                    pkt = PacketBuffer.inbound(datagram, 0, (key, gso_size, index))
                    pkt.checksum_verified = True
                    packets.append(pkt)
                continue
            pkt = PacketBuffer.inbound(frame)
            if gso_type != GSO_NONE:
                if gso_type & ~GSO_ECN not in (GSO_TCPV4, GSO_TCPV6) or not gso_size:
                    stats.rx_bad_vnet_header.increment()
                    continue
                pkt.gso_size = gso_size
                stats.rx_super_segments.increment()
            elif flags & F_NEEDS_CSUM:
                if csum_start + csum_offset + 2 > len(frame):
                    stats.rx_bad_vnet_header.increment()
                    continue
                if csum_start == transport_start(frame, link_header):
                    pkt.csum_offset = csum_offset       # left partial: nothing here needs it whole
                else:
                    complete_checksum(frame, csum_start, csum_offset)
                pkt.checksum_verified = True
            elif flags & F_DATA_VALID:
                pkt.checksum_verified = True
            packets.append(pkt)
        return packets

    # --- outbound ---------------------------------------------------------------------------------

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        stats = self.stats
        if self._closed:
            stats.tx_closed.increment()
            raise ErrClosedForSend
        gso_size = pkt.gso_size
        if not gso_size and pkt.size() > self._mtu:
            stats.tx_too_long.increment()
            raise ErrMessageTooLong
        if self._ethernet:
            eth.build(pkt.prepend(eth.HEADER_SIZE), remote_link_address, self._link_address, protocol)
        vnet = self._vnet_header_length
        if gso_size and not vnet:
            self._write_segmented(pkt, gso_size)
            return
        views = pkt.views()
        if vnet:
            views.insert(0, gso_header(pkt.headers(), self._header_length, gso_size) if gso_size else NO_OFFLOAD)
        try:
            n = os.writev(self._fd, views)
        except OSError as e:
            error = e.errno or errno.EIO
            if error in _NO_ROOM and gso_size and pkt.network_protocol == _IPV4 and \
                    pkt.size() - self._header_length > _MAX_IP_PACKET:
                self._write_split(pkt, gso_size)
                return
            raise self._write_error(error) from None
        stats.tx_packets.value += 1
        stats.tx_bytes.value += n
        if gso_size:
            if views[0][1] == GSO_UDP_L4:   # (the virtio-net header's gso_type)
                stats.tx_super_datagrams.value += 1
            else:
                stats.tx_super_segments.value += 1

    def _write_split(self, pkt: PacketBuffer, gso_size: int) -> None:
        """Write a BIG TCP super-segment the kernel had no room for (its pages come in too few pieces
        when memory is fragmented: ENOBUFS, EMSGSIZE) as 64 KB super-segments instead, which it
        cuts into the same wire segments (``header.gso.split_tcp``)."""
        stats = self.stats
        link_header = self._header_length
        frame = pkt.to_bytes()
        try:
            pieces = split_tcp(memoryview(frame)[link_header:], gso_size, _MAX_IP_PACKET)
        except ValueError:
            stats.tx_malformed.increment()
            return
        stats.tx_split.increment()
        for piece in pieces:
            piece_frame = frame[:link_header] + piece
            try:
                n = os.writev(self._fd, [gso_header(memoryview(piece_frame), link_header, gso_size), piece_frame])
            except OSError as e:
                raise self._write_error(e.errno or errno.EIO) from None
            stats.tx_packets.value += 1
            stats.tx_bytes.value += n
            stats.tx_super_segments.value += 1

    def _write_segmented(self, pkt: PacketBuffer, gso_size: int) -> None:
        """Cut a TCP super-segment into frames and write them (software GSO). The frames that went
        out count as packets; those a failed write left behind count, each, under its cause, which
        is raised only if none went out (as ``write_packets`` does for a batch). What does not parse
        as an IPv4/IPv6 TCP packet is a counted drop."""
        stats = self.stats
        status, pieces, sent, nbytes, error = self._segmenter.write(pkt, gso_size, self._mtu)
        if status == _GSO_MALFORMED:
            stats.tx_malformed.increment()
            return
        if status == _GSO_TOO_LONG:
            stats.tx_too_long.increment()
            raise ErrMessageTooLong
        stats.tx_segmented.increment()
        stats.tx_packets.increment(sent)
        stats.tx_bytes.increment(nbytes)
        if sent < pieces:
            err = self._write_error(error, pieces - sent)
            if not sent:
                raise err

    def write_packets(self, remote_link_address: bytes, protocol: int, pkts: list[PacketBuffer]) -> int:
        return write_each(self.write_packet, remote_link_address, protocol, pkts)

    def _write_error(self, error: int, frames: int = 1) -> Error:
        """The stack error for a write failed with ``error`` (an errno), ``frames`` counted under its cause."""
        stats = self.stats
        if error in (errno.EAGAIN, errno.ENOBUFS):
            stats.tx_queue_full.increment(frames)
            return ErrNoBufferSpace()
        if error == errno.EMSGSIZE:
            stats.tx_too_long.increment(frames)
            return ErrMessageTooLong()
        # EIO (TUN device down), EBADFD (device deleted), EPIPE/ECONNRESET (peer gone), EBADF...:
        # the link cannot carry anything now.
        stats.tx_errors.increment(frames)
        return ErrClosedForSend(f"write on fd {self._fd}: {os.strerror(error)}")

    def close(self) -> None:
        """Stop reading, refuse further writes and (with ``close_fd``) close the fd. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.dispatcher = None
        self._stop_watcher()
        if self._kernel_destinations is not None:
            self._kernel_destinations.close()
        if self._close_fd:
            os.close(self._fd)


# --- reading ----------------------------------------------------------------------------------------
# A reader takes up to ``count`` frames off the fd per call: ``(frames, read, status)``, where
# ``frames`` are the valid ones, each in a writable buffer of its own and exactly its length, ``read``
# counts those and the truncated ones (counted rx_too_long and dropped), and ``status`` says why it
# stopped: _MORE (``count`` reached), errno.EAGAIN (drained), _EOF, or another errno.

_MORE = 0
_EOF = -1


class _Reader:
    """Pure Python: one ``readv`` per frame into a reused buffer, then a copy of exactly the frame.

    Reading into a fresh buffer of the largest frame size instead would zero 64 KB per read with
    offloads on, ACKs included; the copy costs what the frame is long."""

    def __init__(self, fd: int, size: int, batch: int, stats: FdLinkStats) -> None:
        self._fd = fd
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._stats = stats

    def read(self, count: int) -> tuple[list[bytearray], int, int]:
        fd, buffer, view, stats = self._fd, (self._buffer,), self._view, self._stats
        limit = len(view) - 1
        frames: list[bytearray] = []
        read = nbytes = 0
        status = _MORE
        while read < count:
            try:
                n = os.readv(fd, buffer)
            except BlockingIOError:
                status = errno.EAGAIN
                break
            except OSError as e:
                status = e.errno or errno.EIO
                break
            if n == 0:
                status = _EOF
                break
            read += 1
            nbytes += n
            if n > limit:
                stats.rx_too_long.increment()
            else:
                frames.append(bytearray(view[:n]))
        stats.rx_packets.increment(read)
        stats.rx_bytes.increment(nbytes)
        return frames, read, status


class _NativeReader:
    """The C batch read (native/fdio.c): one call drains up to a ring of blocks from a pool.

    A large frame (a super-segment) goes up in its block, which a fresh one replaces in the ring; the
    block returns to the pool when the stack and the socket reader are done with it, and is reused
    without being faulted in or zeroed again. A small one is copied out and its block stays, so
    ACKs cost no block and a queued small segment pins no 64 KB."""

    _COPY_BELOW = 16384
    _RING_BYTES = 1 << 20   # at most this much buffer space per call

    def __init__(self, fd: int, size: int, batch: int, stats: FdLinkStats) -> None:
        self._fd = fd
        self._size = size
        self._stats = stats
        ring = max(1, min(batch, self._RING_BYTES // size))
        pool = _native.lib.ns_pool_new(size, ring)
        if pool == _native.ffi.NULL:
            raise MemoryError("no memory for the read buffer pool")
        self._pool = _native.ffi.gc(pool, _native.lib.ns_pool_close)
        self._blocks = [self._block() for _ in range(ring)]
        self._pointers = _native.ffi.new("uint8_t *[]", self._blocks)
        self._lengths = _native.ffi.new("uint32_t[]", ring)
        self._error = _native.ffi.new("int *")

    def _block(self) -> object:
        block = _native.lib.ns_pool_get(self._pool)
        if block == _native.ffi.NULL:
            raise MemoryError("no memory for a read buffer")
        return _native.ffi.gc(block, _native.lib.ns_pool_put)

    def read(self, count: int) -> tuple[list[bytearray | memoryview], int, int]:
        ffi = _native.ffi
        blocks, pointers, lengths, stats = self._blocks, self._pointers, self._lengths, self._stats
        count = min(count, len(blocks))
        read = _native.lib.ns_read_batch(self._fd, pointers, count, self._size, lengths, self._error)
        limit = self._size - 1
        frames: list[bytearray | memoryview] = []
        nbytes = 0
        for i in range(read):
            n = lengths[i]
            nbytes += n
            if n > limit:
                stats.rx_too_long.increment()
                continue
            block = blocks[i]
            if n >= self._COPY_BELOW:
                try:
                    fresh = self._block()
                except MemoryError:
                    pass        # short of memory: copy this one, the block stays in the ring
                else:
                    blocks[i] = pointers[i] = fresh
                    frames.append(memoryview(ffi.buffer(block, n)))   # keeps the block until released
                    continue
            frames.append(bytearray(ffi.buffer(block, n)))
        stats.rx_packets.increment(read)
        stats.rx_bytes.increment(nbytes)
        if read == count:
            return frames, read, _MORE
        error = self._error[0]
        return frames, read, error if error else _EOF


class _NativeMergingReader:
    """The C read that merges as it reads (``ns_read_gro``, native/gro.c), for a TUN with offloads: the
    consecutive TCP/IPv4 super-segments of a flow that one wake-up finds (about three of the kernel's
    64 KB ones at a time) come up as one BIG TCP super-segment, so IP and TCP walk it once (Linux's
    GRO, to ``gro_ipv4_max_size``). Packets are read one behind the other into an arena of eight
    largest frames taken from a pool; a large frame goes up as a view of it, a small one is copied
    out. The arena is filled across calls until the largest frame no longer fits, and goes back to the
    pool once the stack and the socket readers hold no view of it. Data flowing through fills arenas
    densely; but a view held long (data a socket leaves unread) keeps its whole arena, up to 512 KB
    for a 16 KB frame where the block reader's buffer keeps 64 KB: the price of merging without a
    copy, as Linux's GRO keeps whole pages for the fragments it holds."""

    _COPY_BELOW = _NativeReader._COPY_BELOW
    _ARENA_FRAMES = 8       # the arena's size, in largest frames (about 512 KB)

    def __init__(self, fd: int, size: int, batch: int, stats: FdLinkStats, link_header_length: int,
                 max_merged: int) -> None:
        ffi, lib = _native.ffi, _native.lib
        self._fd = fd
        self._size = size
        self._stats = stats
        self._link_header_length = link_header_length
        self._max_merged = max_merged
        self._arena_size = size * self._ARENA_FRAMES
        pool = lib.ns_pool_new(self._arena_size, 2)
        if pool == ffi.NULL:
            raise MemoryError("no memory for the read arena pool")
        self._pool = ffi.gc(pool, lib.ns_pool_close)
        self._frames = ffi.new("ns_rx_frame[]", batch)
        self._totals = ffi.new("ns_rx_totals *")
        self._used = ffi.new("size_t *")
        self._error = ffi.new("int *")
        self._arena, self._view = self._fresh_arena()

    def _fresh_arena(self) -> tuple[object, memoryview]:
        ffi, lib = _native.ffi, _native.lib
        block = lib.ns_pool_get(self._pool)
        if block == ffi.NULL:
            raise MemoryError("no memory for a read arena")
        block = ffi.gc(block, lib.ns_pool_put)
        self._used[0] = 0
        return block, memoryview(ffi.buffer(block, self._arena_size))   # the views keep the block

    def read(self, count: int) -> tuple[list[bytearray | memoryview], int, int]:
        stats, frames, totals, view = self._stats, self._frames, self._totals, self._view
        count = min(count, len(frames))
        made = _native.lib.ns_read_gro(self._fd, self._arena, self._arena_size, self._used, self._size,
                                       self._link_header_length, self._max_merged, count, frames, totals,
                                       self._error)
        out: list[bytearray | memoryview] = []
        copy_below = self._COPY_BELOW
        for i in range(made):
            frame = frames[i]
            offset, length = frame.offset, frame.length
            piece = view[offset:offset + length]
            out.append(piece if length >= copy_below else bytearray(piece))
        read = totals.reads
        stats.rx_packets.increment(read)
        stats.rx_bytes.increment(totals.bytes)
        if totals.merged:
            stats.rx_merged_super_segments.increment(totals.merged)
        if totals.too_long:
            stats.rx_too_long.increment(totals.too_long)
        error = self._error[0]
        if error == _native.lib.NS_ARENA_FULL:
            try:
                self._arena, self._view = self._fresh_arena()
            except MemoryError:
                return out, read, errno.ENOMEM
            return out, read, _MORE
        if read == count:
            return out, read, _MORE
        return out, read, error if error else _EOF


# --- software GSO -----------------------------------------------------------------------------------
# A segmenter cuts a TCP super-segment (link header, IP, TCP, payload: the PacketBuffer as TCP and the
# link built it) into frames of ``gso_size`` payload bytes, none over ``mtu`` (the IP packet), and
# writes them to the fd, stopping at the first failed write: ``(status, pieces, sent, bytes, errno)``,
# status one of the _GSO_* below (nothing written unless _GSO_OK), ``errno`` that of the failed
# write (0: all sent).

_GSO_OK, _GSO_MALFORMED, _GSO_TOO_LONG = 0, 1, 2    # native/segment.h NS_GSO_*


class _Segmenter:
    """Pure Python: ``gso.segment_tcp`` and one ``writev`` per frame."""

    def __init__(self, fd: int, link_header_length: int) -> None:
        self._fd = fd
        self._link_header_length = link_header_length

    def write(self, pkt: PacketBuffer, gso_size: int, mtu: int) -> tuple[int, int, int, int, int]:
        packet = pkt.to_bytes()
        link_header, ip_packet = packet[:self._link_header_length], memoryview(packet)[self._link_header_length:]
        try:
            pieces = segment_tcp(ip_packet, gso_size)
        except ValueError:
            return _GSO_MALFORMED, 0, 0, 0, 0
        if len(pieces[0]) > mtu:      # the first is the longest
            return _GSO_TOO_LONG, 0, 0, 0, 0
        sent = nbytes = 0
        for piece in pieces:
            try:
                nbytes += os.writev(self._fd, (link_header, piece))
            except OSError as e:
                return _GSO_OK, len(pieces), sent, nbytes, e.errno or errno.EIO
            sent += 1
        return _GSO_OK, len(pieces), sent, nbytes, 0


class _NativeSegmenter:
    """native/segment.c: the whole cut and every write in one call, the payload never copied."""

    def __init__(self, fd: int, link_header_length: int) -> None:
        self._fd = fd
        self._link_header_length = link_header_length
        self._result = _native.ffi.new("ns_gso_result *")

    def write(self, pkt: PacketBuffer, gso_size: int, mtu: int) -> tuple[int, int, int, int, int]:
        head, data, result = pkt.headers(), pkt.data, self._result
        from_buffer = _native.ffi.from_buffer
        status = _native.lib.ns_gso_write(self._fd, from_buffer(head), len(head), from_buffer(data), data.nbytes,
                                          self._link_header_length, gso_size, mtu, result)
        return status, result.pieces, result.sent, result.bytes, result.error


def _open_offloaded_tun(name: str) -> tuple[int | None, bool]:
    """An fd on TUN device ``name`` with a virtio-net header and ``OFFLOADS`` granted, and whether
    ``UDP_OFFLOADS`` were granted too; (None, False) if the kernel refuses the header or ``OFFLOADS``
    (other failures, such as a busy device, raise as for a plain open)."""
    try:
        fd, _ = tun.open_device(name, tap=False, vnet_header=True)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        _log.warning("%s: no virtio-net header (%s); offloads off", name, e.strerror)
        return None, False
    for offloads in (OFFLOADS | UDP_OFFLOADS, OFFLOADS):     # a kernel before 6.2 has no USO
        try:
            tun.set_offloads(fd, offloads, VIRTIO_NET_HDR_SIZE)
        except OSError as e:
            error = e
            continue
        return fd, offloads == OFFLOADS | UDP_OFFLOADS
    os.close(fd)
    _log.warning("%s: offloads refused (%s); offloads off", name, error.strerror)
    return None, False
