"""Packet endpoints, as Linux's AF_PACKET sockets: a copy of every frame of their EtherType a NIC
receives (ETH_P_ALL: and sends, as PACKET_OUTGOING), with its link header (SOCK_RAW) or without
(SOCK_DGRAM), narrowed to one NIC by bind; writes go to the NIC's link as they are.

The stack sits on channel links, Ethernet and bare IP (TUN-like); scapy builds what is injected."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from netsock.link.channel import ChannelEndpoint
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, ErrDestinationRequired, ErrInvalidOptionValue,
                           ErrMessageTooLong, ErrNotSupported, ErrUnknownDevice, ErrUnknownProtocolOption,
                           ErrWouldBlock, FullAddress, SockOpt, WriteOptions)
from netsock.transport.packet import ARPHRD_ETHER, ARPHRD_NONE, ETH_P_ALL, PacketAddress, PacketEndpoint
from netsock.waiter import EventMask, WaiterQueue

from conftest import LOCAL, LOCAL_MAC, NIC_ID, PEER, PEER_MAC, StackHarness, addr, mac

ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
HOST, BROADCAST, MULTICAST, OTHERHOST, OUTGOING = range(5)     # Linux's PACKET_*
LLDP = 0x88CC               # an EtherType no netsock protocol handles
SECOND_NIC, SECOND_MAC = 2, "02:00:00:00:00:22"


def tap(h: StackHarness, protocol: int = ETH_P_ALL, cooked: bool = False) -> PacketEndpoint:
    return PacketEndpoint(h.stack, protocol, cooked, WaiterQueue())


def read_all(ep: PacketEndpoint) -> list[tuple[bytes, PacketAddress]]:
    got = []
    while True:
        try:
            result = ep.read()
        except ErrWouldBlock:
            return got
        got.append((result.data, result.sender))


def lldp(dst: str = LOCAL_MAC, src: str = PEER_MAC) -> bytes:
    return bytes(Ether(dst=dst, src=src, type=LLDP) / Raw(b"chassis"))


def echo_request(h: StackHarness) -> bytes:
    packet = IP(src=PEER, dst=LOCAL) / ICMP(type=8, id=1, seq=1) / Raw(b"ping")
    return bytes(Ether(src=PEER_MAC, dst=LOCAL_MAC) / packet if h.ethernet else packet)


@pytest.fixture
def eth() -> StackHarness:
    return StackHarness(ethernet=True)


# --- reading --------------------------------------------------------------------------------------------

def test_raw_reads_inbound_frames_whole_and_what_the_stack_sends_as_outgoing(eth: StackHarness) -> None:
    ep = tap(eth)
    events: list[EventMask] = []
    ep.waiter_queue.register(events.append, EventMask.IN)
    request = echo_request(eth)
    eth.inject(request)

    sent = eth.sent_raw()       # the stack still answers: first it asks ARP for the peer
    assert len(sent) == 1 and Ether(sent[0])[ARP].pdst == PEER
    assert events == [EventMask.IN] and ep.readiness(EventMask.IN) == EventMask.IN
    assert read_all(ep) == [
        (request, PacketAddress(NIC_ID, ETH_P_IP, HOST, ARPHRD_ETHER, mac(PEER_MAC))),
        (sent[0], PacketAddress(NIC_ID, ETH_P_ARP, OUTGOING, ARPHRD_ETHER, mac(LOCAL_MAC)))]


def test_pkttype_classifies_by_destination_and_unknown_ethertypes_are_read(eth: StackHarness) -> None:
    ep = tap(eth)
    for dst in (LOCAL_MAC, "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "02:00:00:00:00:99"):
        eth.inject(lldp(dst))

    assert [(data, sender.pkt_type) for data, sender in read_all(ep)] == [
        (lldp(LOCAL_MAC), HOST), (lldp("ff:ff:ff:ff:ff:ff"), BROADCAST), (lldp("01:00:5e:00:00:01"), MULTICAST),
        (lldp("02:00:00:00:00:99"), OTHERHOST)]
    assert eth.sent_raw() == []


def test_one_protocol_reads_only_its_inbound_frames_as_linux_ptype_base(eth: StackHarness) -> None:
    arp_only, every = tap(eth, ETH_P_ARP), tap(eth)
    request = bytes(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") /
                    ARP(op=1, hwsrc=PEER_MAC, psrc=PEER, pdst=LOCAL))
    eth.inject(lldp())
    eth.inject(request)

    reply = eth.sent_raw()
    assert len(reply) == 1 and Ether(reply[0])[ARP].op == 2
    assert read_all(arp_only) == [(request, PacketAddress(NIC_ID, ETH_P_ARP, BROADCAST, ARPHRD_ETHER, mac(PEER_MAC)))]
    assert [data for data, _ in read_all(every)] == [lldp(), request, reply[0]]


def test_dgram_reads_without_the_link_header(eth: StackHarness) -> None:
    ep = tap(eth, cooked=True)
    eth.inject(lldp())
    assert read_all(ep) == [(b"chassis", PacketAddress(NIC_ID, LLDP, HOST, ARPHRD_ETHER, mac(PEER_MAC)))]


def test_bind_narrows_to_one_nic_and_changes_the_protocol(eth: StackHarness) -> None:
    second = ChannelEndpoint(link_address=mac(SECOND_MAC), ethernet=True)
    eth.stack.create_nic(SECOND_NIC, second, name="eth1")
    ep = tap(eth)
    ep.bind(PacketAddress(SECOND_NIC))
    assert ep.get_local_address() == PacketAddress(SECOND_NIC, ETH_P_ALL, 0, ARPHRD_ETHER, mac(SECOND_MAC))
    eth.inject(lldp())
    second.inject(0, lldp(SECOND_MAC))
    assert read_all(ep) == [(lldp(SECOND_MAC), PacketAddress(SECOND_NIC, LLDP, HOST, ARPHRD_ETHER, mac(PEER_MAC)))]

    ep.bind(PacketAddress(SECOND_NIC, ETH_P_ARP))
    second.inject(0, lldp(SECOND_MAC))
    assert read_all(ep) == [] and list(eth.stack.packet_endpoints) == [ETH_P_ARP]
    with pytest.raises(ErrUnknownDevice):
        ep.bind(PacketAddress(9))


def test_protocol_zero_reads_nothing_until_bound_to_one(eth: StackHarness) -> None:
    ep = tap(eth, 0)
    assert eth.stack.packet_endpoints == {}
    eth.inject(lldp())
    assert read_all(ep) == []
    ep.bind(PacketAddress(0, LLDP))
    eth.inject(lldp())
    assert len(read_all(ep)) == 1


def test_close_unregisters_and_without_a_loopback_nic_looped_packets_are_not_shown(eth: StackHarness) -> None:
    ep = tap(eth)
    udp = eth.stack.new_endpoint(UDP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER)
    udp.bind(FullAddress(0, addr(LOCAL), 9000))
    udp.write(b"to myself", WriteOptions(to=FullAddress(0, addr(LOCAL), 9000)))
    assert udp.read().data == b"to myself"
    assert read_all(ep) == []       # no link carried it, and there is no loopback NIC to show it on

    ep.close()
    assert eth.stack.packet_endpoints == {}


# --- writing --------------------------------------------------------------------------------------------

def test_raw_write_puts_the_frame_on_the_link_and_others_read_it_as_outgoing(eth: StackHarness) -> None:
    writer, watcher = tap(eth), tap(eth)
    frame = lldp(dst=PEER_MAC, src=LOCAL_MAC)
    assert writer.write(frame, WriteOptions(to=PacketAddress(NIC_ID, ETH_P_ALL))) == len(frame)

    info = eth.link.drain()
    assert [(i.protocol, i.remote_link_address, i.data) for i in info] == [(LLDP, mac(PEER_MAC), frame)]
    assert read_all(watcher) == [(frame, PacketAddress(NIC_ID, LLDP, OUTGOING, ARPHRD_ETHER, mac(LOCAL_MAC)))]
    assert read_all(writer) == []       # Linux's dev_queue_xmit_nit skips the sending socket


def test_dgram_write_gets_an_ethernet_header_to_the_given_address(eth: StackHarness) -> None:
    ep = tap(eth, LLDP, cooked=True)
    ep.bind(PacketAddress(NIC_ID))
    ep.write(b"chassis", WriteOptions(to=PacketAddress(NIC_ID, 0, 0, 0, mac(PEER_MAC))))
    ep.write(b"again", WriteOptions(to=PacketAddress(NIC_ID, ETH_P_IP, 0, 0, mac("ff:ff:ff:ff:ff:ff"))))
    assert eth.sent_raw() == [lldp(dst=PEER_MAC, src=LOCAL_MAC),
                              bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=LOCAL_MAC, type=ETH_P_IP) / Raw(b"again"))]


def test_write_errors(eth: StackHarness) -> None:
    ep, cooked = tap(eth), tap(eth, LLDP, cooked=True)
    with pytest.raises(ErrDestinationRequired):
        ep.write(lldp())
    with pytest.raises(ErrUnknownDevice):
        ep.write(lldp(), WriteOptions(to=PacketAddress(9)))
    with pytest.raises(ErrInvalidOptionValue):
        ep.write(b"short", WriteOptions(to=PacketAddress(NIC_ID)))
    with pytest.raises(ErrMessageTooLong):
        ep.write(lldp() + bytes(1500), WriteOptions(to=PacketAddress(NIC_ID)))
    with pytest.raises(ErrInvalidOptionValue):
        cooked.write(b"x", WriteOptions(to=PacketAddress(NIC_ID)))      # no destination link address
    with pytest.raises(ErrInvalidOptionValue):
        ep.write(lldp(), WriteOptions(to=FullAddress(NIC_ID, addr(PEER), 0)))
    assert eth.sent_raw() == []
    with pytest.raises(ErrNotSupported):
        ep.connect(FullAddress(NIC_ID, addr(PEER), 0))
    with pytest.raises(ErrUnknownProtocolOption):
        ep.set_sock_opt(SockOpt.TTL, 5)
    ep.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 8192)
    assert ep.get_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE) == 8192


def test_bind_to_device_filters_as_bind_does(eth: StackHarness) -> None:
    ep = tap(eth)
    eth.stack.create_nic(SECOND_NIC, ChannelEndpoint(link_address=mac(SECOND_MAC), ethernet=True))
    ep.set_sock_opt(SockOpt.BIND_TO_DEVICE, SECOND_NIC)
    eth.inject(lldp())
    assert read_all(ep) == []


# --- a link without header (TUN) ------------------------------------------------------------------------

def test_ip_link_frames_are_the_packets_themselves() -> None:
    h = StackHarness()
    raw, cooked = tap(h), tap(h, ETH_P_IP, cooked=True)
    request = echo_request(h)
    h.inject(request)

    reply = h.sent_raw()
    assert len(reply) == 1 and IP(reply[0])[ICMP].type == 0
    assert read_all(raw) == [(request, PacketAddress(NIC_ID, ETH_P_IP, HOST, ARPHRD_NONE, b"")),
                             (reply[0], PacketAddress(NIC_ID, ETH_P_IP, OUTGOING, ARPHRD_NONE, b""))]
    assert read_all(cooked) == [(request, PacketAddress(NIC_ID, ETH_P_IP, HOST, ARPHRD_NONE, b""))]

    datagram = bytes(IP(src=LOCAL, dst=PEER) / UDP(sport=1, dport=2) / Raw(b"raw"))
    raw.write(datagram, WriteOptions(to=PacketAddress(NIC_ID, ETH_P_IP)))
    assert [(i.protocol, i.data) for i in h.link.drain()] == [(ETH_P_IP, datagram)]
