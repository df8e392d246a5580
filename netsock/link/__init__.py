"""Link endpoints: the bottom of the stack, where frames enter and leave (netstack's ``link/``).

- ``channel.ChannelEndpoint``: an in-memory link the caller plays the wire of (tests, private networks)
- ``loopback.LoopbackEndpoint``: everything written comes back in
- ``fdbased.FdEndpoint``: a TUN/TAP (or any packet-boundary-preserving) file descriptor, read from
  the gevent hub
- ``sharedmem.SharedMemoryEndpoint``: two stacks, in two processes or one, over rings in shared memory
- ``gro.coalesce``: a batch of received frames with each flow's consecutive TCP segments merged (GRO)
- ``sniffer.SnifferEndpoint``: wraps any link and records its traffic to a pcap file (``pcap``)
- ``fault.FaultEndpoint``: wraps any link and injects loss, delay, reordering, duplication,
  corruption and rate limits, per direction, from a seeded random source
- ``netns``: entering a network namespace to open a device that lives there
- ``tun``: creating, opening and configuring TUN/TAP devices

This module holds what they share: their counters, the inbound Ethernet/raw-IP demultiplexing and
the batch-write semantics.
"""

from __future__ import annotations

from collections.abc import Callable

from ..header import ethernet
from ..stack.interfaces import NetworkDispatcher, PacketType, network_protocol_of_ip
from ..stack.packet_buffer import PacketBuffer
from ..tcpip.errors import Error
from ..tcpip.stats import StatCounter, StatGroup

__all__ = ["LinkStats", "deliver_ethernet", "deliver_ip", "packet_type", "write_each"]


class LinkStats(StatGroup):
    """Traffic of one link endpoint. Every frame not passed on is counted under exactly one cause."""

    rx_packets: StatCounter          # frames taken off the medium (delivered or dropped below)
    rx_bytes: StatCounter
    rx_malformed: StatCounter        # shorter than the link header, or neither IPv4 nor IPv6 on a raw-IP link
    rx_too_long: StatCounter         # longer than MTU + link header (the medium truncated it)
    rx_not_attached: StatCounter     # arrived while no dispatcher was attached
    rx_dispatch_errors: StatCounter  # the dispatcher raised (a bug above the link; logged)
    rx_read_errors: StatCounter      # reading the medium failed with something other than "nothing there"
    tx_packets: StatCounter          # frames handed to the medium, link header included in tx_bytes
    tx_bytes: StatCounter
    tx_closed: StatCounter           # written after close
    tx_queue_full: StatCounter       # the medium had no room (queue full, EAGAIN, ENOBUFS)
    tx_too_long: StatCounter         # larger than the MTU
    tx_errors: StatCounter           # the medium refused it for another reason (device gone, I/O error)


_HOST, _BROADCAST, _MULTICAST, _OTHERHOST = (PacketType.HOST, PacketType.BROADCAST, PacketType.MULTICAST,
                                             PacketType.OTHERHOST)    # asked per frame: no Enum lookups


def packet_type(dst: bytes, own: bytes) -> PacketType:
    """Delivery class of a frame sent to ``dst`` as seen by the station whose address is ``own``."""
    if dst == own:
        return _HOST
    if dst[0] & 1:
        return _BROADCAST if dst == ethernet.BROADCAST else _MULTICAST
    return _OTHERHOST


def deliver_ethernet(dispatcher: NetworkDispatcher, own: bytes, pkt: PacketBuffer, stats: LinkStats) -> None:
    """Take the Ethernet header off an inbound frame, classify the frame and pass it up.

    Frames for other stations are passed up too (as OTHERHOST), as Linux does: whether to accept
    them is the network layer's decision, not the link's.
    """
    hdr = pkt.consume(ethernet.HEADER_SIZE)
    if hdr is None:
        stats.rx_malformed.increment()
        return
    dst, src, ethertype = ethernet.parse(hdr)
    pkt.link_header = hdr
    pkt.pkt_type = packet_type(dst, own)
    dispatcher.deliver_network_packet(src, dst, ethertype, pkt)


def deliver_ip(dispatcher: NetworkDispatcher, pkt: PacketBuffer, stats: LinkStats) -> None:
    """Pass up a raw IP packet (a TUN link has no header: the version nibble names the protocol)."""
    data = pkt.data
    protocol = network_protocol_of_ip(data[0]) if len(data) else 0
    if not protocol:
        stats.rx_malformed.increment()
        return
    dispatcher.deliver_network_packet(b"", b"", protocol, pkt)


def write_each(write: Callable[[bytes, int, PacketBuffer], None], remote_link_address: bytes, protocol: int,
               pkts: list[PacketBuffer]) -> int:
    """``write_packets`` on top of ``write_packet``: stop at the first packet the link refuses.

    Like netstack's ``WritePackets`` returning ``(n, err)``: the error is raised only if nothing was
    sent; otherwise the caller learns of the refusal from a count short of ``len(pkts)``.
    """
    sent = 0
    for pkt in pkts:
        try:
            write(remote_link_address, protocol, pkt)
        except Error:
            if not sent:
                raise
            break
        sent += 1
    return sent
