"""``PacketBuffer.checksum_verified``: a transport checksum the link completed, or that the device
checked, is not summed again by TCP or UDP; without the mark a corrupt one is still a counted drop."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from netsock.link.channel import ChannelEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import ManualClock, Stack
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip import IPV4_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, FullAddress, Route
from netsock.transport.tcp import TCPProtocol
from netsock.transport.tcp.segment import parse_segment
from netsock.transport.udp import UDPProtocol

from conftest import LOCAL, NIC_ID, PEER, addr

WRONG = 0x1234      # a checksum none of these packets has


def frame(packet: IP, verified: bool) -> PacketBuffer:
    pkt = PacketBuffer.inbound(bytearray(bytes(packet)))
    pkt.checksum_verified = verified
    return pkt


def stack_on_a_channel() -> tuple[Stack, ChannelEndpoint]:
    stack = Stack([IPv4Protocol], [TCPProtocol, UDPProtocol], clock=ManualClock())
    link = ChannelEndpoint()
    stack.create_nic(NIC_ID, link)
    stack.add_address(NIC_ID, IPV4_PROTOCOL_NUMBER, f"{LOCAL}/24")
    stack.set_route_table([Route.parse("192.0.2.0/24", NIC_ID)])
    return stack, link


@pytest.mark.parametrize("verified", [True, False], ids=["verified", "unmarked"])
def test_parse_segment_skips_the_sum_only_for_a_verified_segment(verified: bool) -> None:
    stack, _ = stack_on_a_channel()
    stats = stack.stats().tcp
    pkt = PacketBuffer.inbound(bytes(TCP(sport=1, dport=2, flags="S", chksum=WRONG) / Raw(b"x")))
    pkt.checksum_verified = verified
    seg = parse_segment(pkt, addr(PEER), addr(LOCAL), stats, verify_checksum=True)
    assert (seg is not None) is verified
    assert (stats.checksum_errors.value, stats.invalid_segments_received.value) == ((0, 0) if verified else (1, 1))


def test_a_verified_syn_with_a_wrong_checksum_is_answered_an_unmarked_one_dropped() -> None:
    stack, link = stack_on_a_channel()
    listener = stack.new_endpoint(TCP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER)
    listener.bind(FullAddress(0, b"", 80))
    listener.listen(8)
    syn = IP(src=PEER, dst=LOCAL) / TCP(sport=40000, dport=80, seq=7, flags="S", chksum=WRONG)

    link.inject(IPV4_PROTOCOL_NUMBER, frame(syn, verified=False))
    assert link.drain() == []
    stats = stack.stats().tcp
    assert (stats.checksum_errors.value, stats.invalid_segments_received.value) == (1, 1)

    link.inject(IPV4_PROTOCOL_NUMBER, frame(syn, verified=True))
    (reply,) = [IP(info.data) for info in link.drain()]
    assert (reply[TCP].flags, reply[TCP].ack) == ("SA", 8)
    assert stats.checksum_errors.value == 1


def test_a_verified_datagram_with_a_wrong_checksum_is_delivered_an_unmarked_one_dropped() -> None:
    stack, link = stack_on_a_channel()
    ep = stack.new_endpoint(UDP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER)
    ep.bind(FullAddress(0, b"", 7))
    datagram = IP(src=PEER, dst=LOCAL) / UDP(sport=1000, dport=7, chksum=WRONG) / Raw(b"payload")

    link.inject(IPV4_PROTOCOL_NUMBER, frame(datagram, verified=False))
    assert stack.stats().udp.checksum_errors.value == 1
    link.inject(IPV4_PROTOCOL_NUMBER, frame(datagram, verified=True))
    assert ep.read().data == b"payload"
    assert stack.stats().udp.checksum_errors.value == 1
