"""An in-memory link (netstack's ``link/channel``): the caller plays the wire.

Inbound frames are injected and delivered synchronously; outbound frames are queued for the caller
to read, and optionally announced through ``on_outbound`` so that a private network can forward
them to other endpoints as they are written.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from ..header import ethernet as eth
from ..stack.interfaces import LinkCapabilities, LinkEndpointBase
from ..stack.packet_buffer import Buffer, PacketBuffer
from ..tcpip.errors import ErrClosedForSend, ErrMessageTooLong, ErrNoBufferSpace
from ..header.gso import segment
from . import LinkStats, deliver_ethernet, write_each


class PacketInfo(NamedTuple):
    """One packet the stack wrote: ``data`` is a copy of the whole frame, link header included;
    ``gso_size`` > 0 if it is a TCP super-segment queued whole (``cut_super_segments=False``)."""

    protocol: int
    remote_link_address: bytes
    data: bytes
    gso_size: int = 0


class ChannelEndpoint(LinkEndpointBase):
    """A link whose wire is a bounded queue (outbound) and a method call (inbound).

    With ``ethernet=True`` it behaves as an Ethernet segment: written frames carry a 14-byte header
    built from ``link_address`` (required, 6 bytes) and injected frames must carry one.

    ``gso=True`` takes TCP super-segments (64 KB, ``PacketBuffer.gso_size``) and cuts each into its
    wire segments (UDP super-datagrams too, given ``LinkCapabilities.HARDWARE_GSO_UDP``); with
    ``cut_super_segments=False`` it queues them whole instead, for a reader that
    passes them on whole where nothing needs the frames, as Linux's veth and bridge pass GSO packets
    (``privnet.switch``, ``link.wire``).
    """

    def __init__(self, size: int = 256, mtu: int = 1500, link_address: bytes = b"",
                 capabilities: LinkCapabilities = LinkCapabilities.NONE, ethernet: bool = False,
                 gso: bool = False, cut_super_segments: bool = True) -> None:
        if ethernet:
            if len(link_address) != 6:
                raise ValueError("an Ethernet channel needs a 6-byte link address")
            capabilities |= LinkCapabilities.RESOLUTION_REQUIRED
        if gso:
            capabilities |= LinkCapabilities.HARDWARE_GSO
        super().__init__(mtu, bytes(link_address), capabilities)
        self._ethernet = ethernet
        self._cut = cut_super_segments
        self._size = size
        self._queue: deque[PacketInfo] = deque()
        self._closed = False
        self.on_outbound: Callable[[PacketInfo], None] | None = None
        self.stats = LinkStats()

    def max_header_length(self) -> int:
        return eth.HEADER_SIZE if self._ethernet else 0

    # --- inbound ----------------------------------------------------------------------------------

    def inject(self, protocol: int, pkt: PacketBuffer | Buffer, remote_link_address: bytes = b"",
               local_link_address: bytes = b"") -> None:
        """Deliver a frame to the attached dispatcher now, in the caller's context.

        On an Ethernet channel ``pkt`` is a whole frame and its header supplies the protocol and the
        link addresses (the arguments are not consulted), so that ``PacketInfo.data`` read from one
        Ethernet channel can be injected into another as it is. Exceptions raised by the dispatcher
        propagate to the caller: this is a test and simulation tool, and they are bugs to see.
        """
        if not isinstance(pkt, PacketBuffer):
            pkt = PacketBuffer.inbound(pkt)
        stats = self.stats
        stats.rx_packets.increment()
        stats.rx_bytes.increment(len(pkt.data))
        dispatcher = self.dispatcher
        if dispatcher is None:
            stats.rx_not_attached.increment()
        elif self._ethernet:
            deliver_ethernet(dispatcher, self._link_address, pkt, stats)
        else:
            dispatcher.deliver_network_packet(remote_link_address, local_link_address, protocol, pkt)

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
        if len(self._queue) >= self._size:
            stats.tx_queue_full.increment()
            raise ErrNoBufferSpace
        if self._ethernet:
            eth.build(pkt.prepend(eth.HEADER_SIZE), remote_link_address, self._link_address, protocol)
        frame = b"".join(pkt.views())
        if not gso_size or not self._cut:
            self._enqueue(remote_link_address, protocol, frame, gso_size)
            return
        for piece in segment(frame, gso_size, eth.HEADER_SIZE if self._ethernet else 0):
            self._enqueue(remote_link_address, protocol, piece)

    def _enqueue(self, remote_link_address: bytes, protocol: int, frame: bytes, gso_size: int = 0) -> None:
        stats = self.stats
        info = PacketInfo(protocol, bytes(remote_link_address), frame, gso_size)
        self._queue.append(info)
        stats.tx_packets.increment()
        stats.tx_bytes.increment(len(info.data))
        if self.on_outbound is not None:
            self.on_outbound(info)

    def write_packets(self, remote_link_address: bytes, protocol: int, pkts: list[PacketBuffer]) -> int:
        return write_each(self.write_packet, remote_link_address, protocol, pkts)

    def read(self) -> PacketInfo | None:
        """The oldest queued outbound packet, or None if there is none."""
        return self._queue.popleft() if self._queue else None

    def drain(self) -> list[PacketInfo]:
        """All queued outbound packets, oldest first; the queue is left empty."""
        packets = list(self._queue)
        self._queue.clear()
        return packets

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:  # an endpoint with an empty queue is still an endpoint
        return True

    def close(self) -> None:
        """Refuse further writes and stop delivering; packets already queued stay readable."""
        self._closed = True
        self.dispatcher = None
