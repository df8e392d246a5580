"""ChannelEndpoint: synchronous injection, a bounded outbound queue, Ethernet framing."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from netsock.header import ethernet
from netsock.header.gso import segment_tcp
from netsock.link.channel import ChannelEndpoint, PacketInfo
from netsock.stack.interfaces import LinkCapabilities, PacketType
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip.errors import ErrClosedForSend, ErrMessageTooLong, ErrNoBufferSpace

OUR_MAC = b"\x02\x00\xc0\x00\x02\x02"
PEER_MAC = b"\x02\x00\xc0\x00\x02\x01"
IPV4 = 0x0800


class Recorder:
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, bytes, int, PacketBuffer]] = []

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.packets.append((remote, local, protocol, pkt))


def outbound(header: bytes, payload: bytes) -> PacketBuffer:
    """A packet as the network layer hands it down: header prepended in front of a separate payload."""
    pkt = PacketBuffer(reserve=len(header) + 14, data=payload)
    pkt.prepend(len(header))[:] = header
    return pkt


def test_inject_delivers_synchronously_with_addresses_and_protocol() -> None:
    ep = ChannelEndpoint()
    rec = Recorder()
    ep.attach(rec)
    ep.inject(IPV4, b"\x45packet", remote_link_address=b"r", local_link_address=b"l")
    assert len(rec.packets) == 1
    remote, local, protocol, pkt = rec.packets[0]
    assert (remote, local, protocol, bytes(pkt.data)) == (b"r", b"l", IPV4, b"\x45packet")
    given = PacketBuffer.inbound(b"\x45again")
    ep.inject(IPV4, given)
    assert rec.packets[1][3] is given
    assert (ep.stats.rx_packets.value, ep.stats.rx_bytes.value) == (2, 13)


def test_inject_while_detached_is_a_counted_drop() -> None:
    ep = ChannelEndpoint()
    ep.inject(IPV4, b"\x45")
    assert ep.stats.rx_not_attached.value == 1
    assert not ep.is_attached()


def test_written_packets_queue_in_order_as_copies() -> None:
    ep = ChannelEndpoint()
    payload = bytearray(b"payload")
    ep.write_packet(b"", IPV4, outbound(b"HDR1", payload))
    payload[:] = b"changed"   # the caller reuses its buffer: the queued copy must not change
    ep.write_packet(b"peer", IPV4, outbound(b"HDR2", b"second"))
    assert len(ep) == 2
    assert ep.read() == PacketInfo(IPV4, b"", b"HDR1payload")
    assert ep.read() == PacketInfo(IPV4, b"peer", b"HDR2second")
    assert ep.read() is None
    assert (ep.stats.tx_packets.value, ep.stats.tx_bytes.value) == (2, 21)


def test_drain_empties_the_queue() -> None:
    ep = ChannelEndpoint()
    for i in range(3):
        ep.write_packet(b"", IPV4, outbound(bytes([i]), b""))
    assert [info.data for info in ep.drain()] == [b"\x00", b"\x01", b"\x02"]
    assert len(ep) == 0
    assert ep.drain() == []
    assert ep   # an empty endpoint is still truthy


def test_overflow_drops_counts_and_reports_no_buffer_space() -> None:
    ep = ChannelEndpoint(size=2)
    ep.write_packet(b"", IPV4, outbound(b"a", b""))
    ep.write_packet(b"", IPV4, outbound(b"b", b""))
    with pytest.raises(ErrNoBufferSpace):
        ep.write_packet(b"", IPV4, outbound(b"c", b""))
    assert ep.stats.tx_queue_full.value == 1
    assert [info.data for info in ep.drain()] == [b"a", b"b"]


def test_write_packets_reports_how_many_fit() -> None:
    ep = ChannelEndpoint(size=2)
    pkts = [outbound(bytes([i]), b"") for i in range(3)]
    assert ep.write_packets(b"", IPV4, pkts) == 2
    with pytest.raises(ErrNoBufferSpace):   # nothing fits: the refusal itself is reported
        ep.write_packets(b"", IPV4, pkts[2:])


def test_on_outbound_sees_each_packet_after_it_is_queued() -> None:
    ep = ChannelEndpoint()
    seen: list[tuple[PacketInfo, int]] = []
    ep.on_outbound = lambda info: seen.append((info, len(ep)))
    ep.write_packet(b"x", IPV4, outbound(b"H", b"P"))
    assert seen == [(PacketInfo(IPV4, b"x", b"HP"), 1)]


def test_larger_than_mtu_is_refused() -> None:
    ep = ChannelEndpoint(mtu=10)
    ep.write_packet(b"", IPV4, outbound(b"h" * 5, b"p" * 5))
    with pytest.raises(ErrMessageTooLong):
        ep.write_packet(b"", IPV4, outbound(b"h" * 5, b"p" * 6))
    assert (ep.stats.tx_packets.value, ep.stats.tx_too_long.value) == (1, 1)


@pytest.mark.parametrize("cut", [True, False])
def test_a_gso_channel_cuts_super_segments_or_queues_them_whole(cut: bool) -> None:
    packet = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(flags="PA") / Raw(b"x" * 5000))
    super_segment = outbound(packet[:40], packet[40:])
    super_segment.gso_size = 1000
    ep = ChannelEndpoint(mtu=1040, gso=True, cut_super_segments=cut)
    ep.write_packet(b"", IPV4, super_segment)
    queued = [(info.data, info.gso_size) for info in ep.drain()]
    if cut:
        assert queued == [(frame, 0) for frame in segment_tcp(packet, 1000)] and len(queued) == 5
    else:
        assert queued == [(packet, 1000)]


def test_close_refuses_writes_stops_delivery_and_keeps_the_queue() -> None:
    ep = ChannelEndpoint()
    rec = Recorder()
    ep.attach(rec)
    ep.write_packet(b"", IPV4, outbound(b"H", b"before"))
    ep.close()
    with pytest.raises(ErrClosedForSend):
        ep.write_packet(b"", IPV4, outbound(b"H", b"after"))
    ep.inject(IPV4, b"\x45")
    assert rec.packets == []
    assert not ep.is_attached()
    assert [info.data for info in ep.drain()] == [b"Hbefore"]
    assert (ep.stats.tx_closed.value, ep.stats.rx_not_attached.value) == (1, 1)


# --- Ethernet mode ------------------------------------------------------------------------------

def frame(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    hdr = bytearray(14)
    ethernet.build(hdr, dst, src, ethertype)
    return bytes(hdr) + payload


def test_ethernet_channel_needs_a_mac_and_requires_resolution() -> None:
    with pytest.raises(ValueError):
        ChannelEndpoint(ethernet=True)
    ep = ChannelEndpoint(link_address=OUR_MAC, ethernet=True)
    assert ep.max_header_length() == 14
    assert ep.capabilities() & LinkCapabilities.RESOLUTION_REQUIRED
    assert ChannelEndpoint().max_header_length() == 0


def test_ethernet_write_prepends_the_header() -> None:
    ep = ChannelEndpoint(link_address=OUR_MAC, ethernet=True)
    ep.write_packet(PEER_MAC, IPV4, outbound(b"IPHDR", b"data"))
    info = ep.read()
    assert info == PacketInfo(IPV4, PEER_MAC, frame(PEER_MAC, OUR_MAC, IPV4, b"IPHDRdata"))
    assert ep.stats.tx_bytes.value == 14 + 9


@pytest.mark.parametrize("dst, kind", [
    (OUR_MAC, PacketType.HOST),
    (ethernet.BROADCAST, PacketType.BROADCAST),
    (b"\x01\x00\x5e\x00\x00\x01", PacketType.MULTICAST),
    (b"\x02\x00\x00\x00\x00\x09", PacketType.OTHERHOST),
])
def test_ethernet_inject_consumes_the_header_and_classifies(dst: bytes, kind: PacketType) -> None:
    ep = ChannelEndpoint(link_address=OUR_MAC, ethernet=True)
    rec = Recorder()
    ep.attach(rec)
    ep.inject(0, frame(dst, PEER_MAC, 0x0806, b"arp-body"))
    ((remote, local, protocol, pkt),) = rec.packets
    assert (remote, local, protocol) == (PEER_MAC, dst, 0x0806)
    assert bytes(pkt.data) == b"arp-body"
    assert bytes(pkt.link_header) == frame(dst, PEER_MAC, 0x0806, b"")
    assert pkt.pkt_type == kind


def test_ethernet_runt_frame_is_a_counted_drop() -> None:
    ep = ChannelEndpoint(link_address=OUR_MAC, ethernet=True)
    rec = Recorder()
    ep.attach(rec)
    ep.inject(IPV4, b"\xff" * 13)
    assert rec.packets == []
    assert ep.stats.rx_malformed.value == 1


def test_ethernet_frames_move_between_channels_unchanged() -> None:
    """What a private network does: inject what one Ethernet channel wrote into another."""
    a = ChannelEndpoint(link_address=PEER_MAC, ethernet=True)
    b = ChannelEndpoint(link_address=OUR_MAC, ethernet=True)
    rec = Recorder()
    b.attach(rec)
    a.on_outbound = lambda info: b.inject(info.protocol, info.data)
    a.write_packet(OUR_MAC, IPV4, outbound(b"IPHDR", b"data"))
    ((remote, local, protocol, pkt),) = rec.packets
    assert (remote, local, protocol, bytes(pkt.data)) == (PEER_MAC, OUR_MAC, IPV4, b"IPHDRdata")
    assert pkt.pkt_type == PacketType.HOST
