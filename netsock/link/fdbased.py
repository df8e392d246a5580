"""A link over a file descriptor (netstack's ``link/fdbased``): TUN, TAP, or a packet socket pair.

The fd must preserve packet boundaries — one read or write is one frame — as TUN/TAP fds and
SOCK_SEQPACKET/SOCK_DGRAM sockets do. It is made non-blocking.

Reading is driven by the gevent hub: an io watcher calls ``dispatch_available`` when the fd is
readable, which reads and delivers up to ``read_batch`` frames and returns, so that other greenlets
get their turn while traffic keeps arriving (the watcher fires again while frames are pending). The
callback runs in the hub, so the whole inbound path — link, network, transport up to queuing data
and waking readers — must neither block nor switch. No thread, no busy loop.

Each frame is read into a buffer of its own that the PacketBuffer (and, in the end, the payload a
socket reader receives) refers to without any further copy. Writes hand the header and payload
buffers to one ``writev``.
"""

from __future__ import annotations

import errno
import logging
import os

from gevent import get_hub

from ..header import ethernet as eth
from ..stack.interfaces import LinkCapabilities, LinkEndpointBase, NetworkDispatcher
from ..stack.packet_buffer import PacketBuffer
from ..tcpip.errors import Error, ErrClosedForSend, ErrMessageTooLong, ErrNoBufferSpace
from . import LinkStats, deliver_ethernet, deliver_ip, tun, write_each

_log = logging.getLogger(__name__)

_READ = 1  # libev/libuv EV_READ


class FdEndpoint(LinkEndpointBase):
    """``ethernet=True`` for TAP-like fds (frames carry a 14-byte Ethernet header; ``link_address``
    is our 6-byte MAC), False for TUN-like fds carrying raw IP packets.

    ``close_fd``: close the fd when the endpoint is closed (False if the caller still owns it).
    """

    def __init__(self, fd: int, mtu: int, ethernet: bool, link_address: bytes = b"", close_fd: bool = True,
                 read_batch: int = 64) -> None:
        if ethernet and len(link_address) != 6:
            raise ValueError("an Ethernet link needs a 6-byte link address")
        super().__init__(mtu, bytes(link_address),
                         LinkCapabilities.RESOLUTION_REQUIRED if ethernet else LinkCapabilities.NONE)
        os.set_blocking(fd, False)
        self._fd = fd
        self._ethernet = ethernet
        self._header_length = eth.HEADER_SIZE if ethernet else 0
        self._close_fd = close_fd
        self._read_batch = read_batch
        self._watcher = None
        self._closed = False
        self.stats = LinkStats()

    @classmethod
    def open_tun(cls, name: str, mtu: int | None = None, read_batch: int = 64) -> FdEndpoint:
        """Attach to TUN device ``name`` (created, transient, if absent); the MTU defaults to the device's."""
        fd, _ = tun.open_device(name, tap=False)
        try:
            return cls(fd, mtu or tun.device_mtu(name), ethernet=False, read_batch=read_batch)
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

    def max_header_length(self) -> int:
        return self._header_length

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
        counted and the next frame is delivered. Frames are left in the fd while detached. If the
        fd reports end of file or an error, reading stops (a level-triggered watcher would
        otherwise spin on it) until the next ``attach``/``start``.
        """
        fd = self._fd
        frame_size = self._mtu + self._header_length
        ethernet = self._ethernet
        own = self._link_address
        stats = self.stats
        frames = nbytes = 0
        try:
            while frames < self._read_batch and not self._closed:
                dispatcher = self.dispatcher
                if dispatcher is None:
                    break
                # One byte more than the largest valid frame: a read that fills it was truncated.
                buf = bytearray(frame_size + 1)
                try:
                    n = os.readv(fd, (buf,))
                except BlockingIOError:
                    break
                except OSError as e:
                    stats.rx_read_errors.increment()
                    _log.error("fd %d: read failed, reading stopped: %s", fd, e)
                    self._stop_watcher()
                    break
                if n == 0:
                    _log.warning("fd %d: end of file, reading stopped", fd)
                    self._stop_watcher()
                    break
                frames += 1
                nbytes += n
                if n > frame_size:
                    stats.rx_too_long.increment()
                    continue
                del buf[n:]  # give back the unused tail (a realloc in place): queued packets stay small
                pkt = PacketBuffer.inbound(buf)
                try:
                    if ethernet:
                        deliver_ethernet(dispatcher, own, pkt, stats)
                    else:
                        deliver_ip(dispatcher, pkt, stats)
                except Exception:
                    stats.rx_dispatch_errors.increment()
                    _log.exception("fd %d: dispatcher failed on an inbound frame", fd)
        finally:
            stats.rx_packets.increment(frames)
            stats.rx_bytes.increment(nbytes)
        return frames

    # --- outbound ---------------------------------------------------------------------------------

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        stats = self.stats
        if self._closed:
            stats.tx_closed.increment()
            raise ErrClosedForSend
        if pkt.size() > self._mtu:
            stats.tx_too_long.increment()
            raise ErrMessageTooLong
        if self._ethernet:
            eth.build(pkt.prepend(eth.HEADER_SIZE), remote_link_address, self._link_address, protocol)
        try:
            n = os.writev(self._fd, pkt.views())
        except OSError as e:
            raise self._write_error(e) from None
        stats.tx_packets.increment()
        stats.tx_bytes.increment(n)

    def write_packets(self, remote_link_address: bytes, protocol: int, pkts: list[PacketBuffer]) -> int:
        return write_each(self.write_packet, remote_link_address, protocol, pkts)

    def _write_error(self, e: OSError) -> Error:
        """The stack error for a failed write, counted under its cause."""
        stats = self.stats
        if e.errno in (errno.EAGAIN, errno.ENOBUFS):
            stats.tx_queue_full.increment()
            return ErrNoBufferSpace()
        if e.errno == errno.EMSGSIZE:
            stats.tx_too_long.increment()
            return ErrMessageTooLong()
        # EIO (TUN device down), EBADFD (device deleted), EPIPE/ECONNRESET (peer gone), EBADF...:
        # the link cannot carry anything now.
        stats.tx_errors.increment()
        return ErrClosedForSend(f"write on fd {self._fd}: {e.strerror}")

    def close(self) -> None:
        """Stop reading, refuse further writes and (with ``close_fd``) close the fd. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.dispatcher = None
        self._stop_watcher()
        if self._close_fd:
            os.close(self._fd)
