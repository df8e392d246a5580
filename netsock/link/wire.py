"""A wire between two in-memory links: two stacks in one process, connected as if by a cable.

Each end is a ``ChannelEndpoint``; what one end sends is delivered to the other from the gevent
hub's callback queue, never from inside the sender's call, so each stack sees the other's packets
the way a device would deliver them (no re-entrancy, batches per hub turn, each flow's consecutive
TCP segments of a batch coalesced: ``gro``, and its UDP datagrams marked for UDP_GRO sockets). TCP
super-segments cross whole, as over Linux's veth.
"""

from __future__ import annotations

import gevent

from ..stack.interfaces import network_protocol_of_ip
from .channel import ChannelEndpoint, PacketInfo
from .gro import coalesce_batch, mark_udp_flows

__all__ = ["Wire"]


class Wire:
    """Two connected ``ChannelEndpoint``s, ``wire.ends``: attach one to each stack's NIC.

    ``gso`` lets TCP hand the links 64 KB super-segments of MTU-sized segments, which reach the other
    stack whole, as a veth pair passes them (nothing on a wire needs the frames: it has no faults or
    capture; put a ``link.fault`` or ``link.sniffer`` endpoint between for those); ``size`` bounds each
    direction's queue.
    """

    def __init__(self, mtu: int = 1500, size: int = 1 << 16, gso: bool = False) -> None:
        self.ends = (ChannelEndpoint(size=size, mtu=mtu, gso=gso, cut_super_segments=False),
                     ChannelEndpoint(size=size, mtu=mtu, gso=gso, cut_super_segments=False))
        self._loop = gevent.get_hub().loop
        self._scheduled = False
        for end in self.ends:
            end.on_outbound = self._on_outbound

    def _on_outbound(self, _packet: PacketInfo) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._forward)

    def _forward(self) -> None:
        self._scheduled = False
        first, second = self.ends
        for source, destination in ((first, second), (second, first)):
            batch = [(packet.data, packet.gso_size) if packet.gso_size else packet.data for packet in source.drain()]
            packets = coalesce_batch(batch)
            mark_udp_flows(packets, 0, destination.dispatcher)
            for pkt in packets:
                data = pkt.data
                destination.inject(network_protocol_of_ip(data[0]) if data else 0, pkt)
