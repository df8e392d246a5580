"""The loopback link (netstack's ``link/loopback``): every packet written is received back.

Nothing crosses a wire, so checksums are neither computed nor verified (both offloads are
advertised, as netstack and Linux's ``lo`` do), and there is no link header or address.

Delivery is synchronous but never recursive: a packet written while an inbound delivery is in
progress — a TCP ACK sent while the segment it acknowledges is being processed — is queued and
delivered by the loop already running further up the call stack (a trampoline). A ping-pong of any
length therefore runs in constant stack depth, in the order the packets were written.
"""

from __future__ import annotations

import logging
from collections import deque

from ..stack.interfaces import LinkCapabilities, LinkEndpointBase
from ..stack.packet_buffer import PacketBuffer
from ..tcpip.errors import ErrClosedForSend, ErrMessageTooLong
from . import LinkStats, write_each

_log = logging.getLogger(__name__)

CAPABILITIES = (LinkCapabilities.LOOPBACK | LinkCapabilities.RX_CHECKSUM_OFFLOAD
                | LinkCapabilities.TX_CHECKSUM_OFFLOAD)


class LoopbackEndpoint(LinkEndpointBase):
    def __init__(self, mtu: int = 65536) -> None:
        super().__init__(mtu, b"", CAPABILITIES)
        self._pending: deque[tuple[int, bytes, int, tuple[object, int, int] | None]] = deque()
        self._delivering = False
        self._closed = False
        self.stats = LinkStats()

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        stats = self.stats
        if self._closed:
            stats.tx_closed.increment()
            raise ErrClosedForSend
        size = pkt.size()
        if size > self._mtu:
            stats.tx_too_long.increment()
            raise ErrMessageTooLong
        # A copy: the writer keeps ownership of its buffers (it may retransmit or reuse them). The mark goes
        # along, as Linux's loopback keeps skb->mark: the receiver's SO_RCVMARK sees the sender's SO_MARK.
        self._pending.append((protocol, b"".join(pkt.views()), pkt.mark, pkt.gro))
        stats.tx_packets.increment()
        stats.tx_bytes.increment(size)
        if not self._delivering:
            self._deliver_pending()

    def write_packets(self, remote_link_address: bytes, protocol: int, pkts: list[PacketBuffer]) -> int:
        return write_each(self.write_packet, remote_link_address, protocol, pkts)

    def _deliver_pending(self) -> None:
        """Deliver queued packets, including those written during the deliveries, until none is left.

        A dispatcher exception is logged and counted rather than propagated: the packet that caused
        it may not be the caller's, and the queue behind it must still be delivered.
        """
        pending = self._pending
        stats = self.stats
        self._delivering = True
        try:
            while pending:
                protocol, frame, mark, gro = pending.popleft()
                stats.rx_packets.increment()
                stats.rx_bytes.increment(len(frame))
                dispatcher = self.dispatcher
                if dispatcher is None:
                    stats.rx_not_attached.increment()
                    continue
                try:
                    dispatcher.deliver_network_packet(b"", b"", protocol, PacketBuffer.inbound(frame, mark, gro))
                except Exception:
                    stats.rx_dispatch_errors.increment()
                    _log.exception("loopback: dispatcher failed on a 0x%04x packet", protocol)
        finally:
            self._delivering = False

    def close(self) -> None:
        """Refuse further writes; packets still queued are dropped (counted as not attached)."""
        self._closed = True
        self.dispatcher = None
