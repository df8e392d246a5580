"""UDP over IPv4 multicast as a socket user sees it on Linux: receiving on joined groups, sharing a
port, leaving, and the sending options (IP_MULTICAST_TTL, IP_MULTICAST_LOOP, IP_MULTICAST_IF)."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from netsock.link.channel import ChannelEndpoint
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, ErrBadLocalAddress, ErrInvalidOptionValue,
                           FullAddress, Route, SockOpt)

from conftest import LOCAL, NIC_ID, PEER, StackHarness, addr, checksums_valid, received, to

GROUP = "239.1.2.3"
GROUP_B = "239.4.5.6"
PORT = 5000
SECOND_NIC = 2
SECOND_LOCAL = "203.0.113.2"


def datagram(group: str = GROUP, payload: bytes = b"news", port: int = PORT) -> IP:
    return IP(src=PEER, dst=group, ttl=1) / UDP(sport=40000, dport=port) / Raw(payload)


def member(h: StackHarness, port: int | None = PORT, group: str = GROUP, host: str = "",
           reuse: bool = False) -> Any:
    """A UDP endpoint bound to ``host:port`` (unless port is None) that joined ``group`` on the NIC."""
    ep = h.udp()
    if reuse:
        ep.set_sock_opt(SockOpt.REUSE_ADDRESS, True)
    if port is not None:
        ep.bind(FullAddress(0, addr(host) if host else b"", port))
    ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (addr(group), NIC_ID))
    return ep


def udp_on_wire(link: ChannelEndpoint) -> list[IP]:
    """The UDP packets written to ``link`` (IGMP reports left out), each with valid checksums."""
    packets = []
    for info in link.drain():
        packet = IP(info.data)
        if UDP in packet:
            assert checksums_valid(info.data)
            packets.append(packet)
    return packets


def add_second_nic(h: StackHarness) -> ChannelEndpoint:
    """A second NIC on 203.0.113.0/24; the default route stays on the first."""
    link = ChannelEndpoint()
    h.stack.create_nic(SECOND_NIC, link)
    h.stack.add_address(SECOND_NIC, IPV4_PROTOCOL_NUMBER, f"{SECOND_LOCAL}/24")
    h.stack.add_route(Route.parse("203.0.113.0/24", SECOND_NIC))
    return link


# --- receiving --------------------------------------------------------------------------------------

def test_a_member_receives_group_traffic(harness: StackHarness) -> None:
    ep = member(harness)
    harness.inject(datagram(payload=b"hello"))
    result = ep.read()
    assert result.data == b"hello"
    assert result.sender == FullAddress(NIC_ID, addr(PEER), 40000)


def test_traffic_for_a_group_the_nic_has_not_joined_is_dropped(harness: StackHarness) -> None:
    ep = harness.udp(PORT)
    harness.inject(datagram())
    assert received(ep) == []
    assert harness.stats.ip.invalid_addresses_received.value == 1


def test_a_wildcard_socket_receives_for_groups_other_sockets_joined(harness: StackHarness) -> None:
    member(harness, port=None)                     # joins, listens on no port
    listener = harness.udp(PORT)                   # INADDR_ANY:5000, never joined (Linux: IP_MULTICAST_ALL)
    harness.inject(datagram())
    assert received(listener) == [b"news"]


def test_a_socket_bound_to_a_group_receives_that_group_only(harness: StackHarness) -> None:
    member(harness, port=None, group=GROUP_B)
    ep = member(harness, host=GROUP)
    harness.inject(datagram(GROUP_B, b"other group"))
    harness.inject(datagram(GROUP, b"ours"))
    assert received(ep) == [b"ours"]


def test_sockets_sharing_the_port_each_get_a_copy(harness: StackHarness) -> None:
    first, second = member(harness, reuse=True), member(harness, reuse=True)
    harness.inject(datagram())
    assert received(first) == [b"news"]
    assert received(second) == [b"news"]


def test_leaving_stops_delivery_once_the_last_member_left(harness: StackHarness) -> None:
    first, second = member(harness, reuse=True), member(harness, reuse=True)
    first.set_sock_opt(SockOpt.REMOVE_MEMBERSHIP, (addr(GROUP), NIC_ID))
    harness.inject(datagram(payload=b"still a member"))        # the NIC still is: both sockets get it
    assert (received(first), received(second)) == ([b"still a member"], [b"still a member"])

    second.set_sock_opt(SockOpt.REMOVE_MEMBERSHIP, (addr(GROUP), NIC_ID))
    harness.inject(datagram(payload=b"too late"))
    assert (received(first), received(second)) == ([], [])
    assert harness.stats.ip.invalid_addresses_received.value == 1


def test_membership_options_are_checked(harness: StackHarness) -> None:
    ep = member(harness)
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (addr(GROUP), NIC_ID))        # already a member
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.REMOVE_MEMBERSHIP, (addr(GROUP_B), NIC_ID))   # never joined
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (addr(PEER), NIC_ID))         # not a group


# --- sending: TTL ---------------------------------------------------------------------------------------

def test_multicast_ttl_is_1_by_default_and_settable(harness: StackHarness) -> None:
    ep = harness.udp()
    ep.write(b"a", to(GROUP, PORT))
    ep.write(b"b", to(PEER, PORT))                 # unicast keeps the default TTL
    ep.set_sock_opt(SockOpt.MULTICAST_TTL, 7)
    ep.write(b"c", to(GROUP, PORT))
    assert [(p.dst, p.ttl) for p in udp_on_wire(harness.link)] == [(GROUP, 1), (PEER, 64), (GROUP, 7)]
    assert ep.get_sock_opt(SockOpt.MULTICAST_TTL) == 7
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.MULTICAST_TTL, 256)


def test_multicast_goes_to_the_group_mac_on_ethernet(ether_harness: StackHarness) -> None:
    ether_harness.udp().write(b"x", to(GROUP, PORT))
    [frame] = [Ether(info.data) for info in ether_harness.link.drain()]
    assert frame.dst == "01:00:5e:01:02:03"
    assert frame[IP].dst == GROUP


# --- sending: loop -----------------------------------------------------------------------------------

def test_a_datagram_to_a_group_this_host_joined_is_also_delivered_locally(harness: StackHarness) -> None:
    receiver = member(harness)
    sender = harness.udp(6000)
    sender.write(b"loop", to(GROUP, PORT))
    result = receiver.read()
    assert (result.data, result.sender) == (b"loop", FullAddress(NIC_ID, addr(LOCAL), 6000))
    [packet] = udp_on_wire(harness.link)           # and once on the wire
    assert (packet.src, packet.dst, packet[UDP].dport) == (LOCAL, GROUP, PORT)


def test_the_sender_receives_its_own_datagram_if_it_listens(harness: StackHarness) -> None:
    ep = member(harness)
    ep.write(b"echo", to(GROUP, PORT))
    assert received(ep) == [b"echo"]


def test_with_loop_off_no_local_copy(harness: StackHarness) -> None:
    receiver = member(harness)
    sender = harness.udp()
    sender.set_sock_opt(SockOpt.MULTICAST_LOOP, False)
    sender.write(b"wire only", to(GROUP, PORT))
    assert received(receiver) == []
    assert len(udp_on_wire(harness.link)) == 1


def test_no_local_copy_when_the_host_is_no_member(harness: StackHarness) -> None:
    listener = harness.udp(PORT)
    harness.udp().write(b"x", to(GROUP, PORT))
    assert received(listener) == []
    assert len(udp_on_wire(harness.link)) == 1
    assert harness.stats.ip.packets_received.value == 0


def test_ttl_0_stays_on_this_host(harness: StackHarness) -> None:
    receiver = member(harness)
    sender = harness.udp()
    sender.set_sock_opt(SockOpt.MULTICAST_TTL, 0)
    sender.write(b"host only", to(GROUP, PORT))
    assert received(receiver) == [b"host only"]
    assert udp_on_wire(harness.link) == []


def test_a_connected_socket_loops_too(harness: StackHarness) -> None:
    receiver = member(harness)
    sender = harness.udp()
    sender.connect(FullAddress(0, addr(GROUP), PORT))
    sender.write(b"connected")
    assert received(receiver) == [b"connected"]
    assert len(udp_on_wire(harness.link)) == 1


# --- sending: interface and source ---------------------------------------------------------------------

def test_multicast_interface_selects_the_nic(harness: StackHarness) -> None:
    second_link = add_second_nic(harness)
    ep = harness.udp()
    ep.write(b"default", to(GROUP, PORT))
    ep.set_sock_opt(SockOpt.MULTICAST_INTERFACE, SECOND_NIC)
    ep.write(b"chosen", to(GROUP, PORT))
    ep.write(b"unicast", to(PEER, PORT))            # unicast ignores the option
    assert [(p.src, p[Raw].load) for p in udp_on_wire(harness.link)] == [(LOCAL, b"default"), (LOCAL, b"unicast")]
    assert [(p.src, p[Raw].load) for p in udp_on_wire(second_link)] == [(SECOND_LOCAL, b"chosen")]
    assert ep.get_sock_opt(SockOpt.MULTICAST_INTERFACE) == SECOND_NIC


def test_multicast_interface_applies_to_connect(harness: StackHarness) -> None:
    second_link = add_second_nic(harness)
    ep = harness.udp()
    ep.set_sock_opt(SockOpt.MULTICAST_INTERFACE, SECOND_NIC)
    ep.connect(FullAddress(0, addr(GROUP), PORT))
    ep.write(b"x")
    assert udp_on_wire(harness.link) == []
    assert [p.src for p in udp_on_wire(second_link)] == [SECOND_LOCAL]


def test_multicast_interface_must_exist(harness: StackHarness) -> None:
    with pytest.raises(ErrBadLocalAddress):
        harness.udp().set_sock_opt(SockOpt.MULTICAST_INTERFACE, 9)


def test_the_local_copy_follows_the_membership_of_the_sending_nic(harness: StackHarness) -> None:
    add_second_nic(harness)
    receiver = member(harness)                      # joined on the first NIC only
    sender = harness.udp()
    sender.set_sock_opt(SockOpt.MULTICAST_INTERFACE, SECOND_NIC)
    sender.write(b"x", to(GROUP, PORT))
    assert received(receiver) == []


def test_a_socket_bound_to_a_group_sends_from_the_nic_address(harness: StackHarness) -> None:
    ep = member(harness, host=GROUP)
    ep.write(b"reply", to(PEER, 7))
    [packet] = udp_on_wire(harness.link)
    assert (packet.src, packet[UDP].sport, packet.dst) == (LOCAL, PORT, PEER)


def test_group_bound_and_wildcard_bound_sockets_both_get_each_datagram(harness: StackHarness) -> None:
    """Linux hands a multicast datagram to every socket on the port bound to the group or to any address."""
    on_group = member(harness, host=GROUP, reuse=True)
    on_any = member(harness, reuse=True)
    harness.inject(datagram(payload=b"both"))
    assert received(on_group) == [b"both"] and received(on_any) == [b"both"]


def test_with_multicast_all_off_only_the_groups_it_joined(harness: StackHarness) -> None:
    """IP_MULTICAST_ALL off (Linux's ip_mc_sf_allow for a group the socket is no member of): a wildcard
    socket gets no traffic for a group only another socket joined, still its own group's."""
    member(harness, port=None, group=GROUP_B)      # another socket's group
    ep = member(harness, reuse=True)               # INADDR_ANY:5000, a member of GROUP
    ep.set_sock_opt(SockOpt.MULTICAST_ALL, False)
    harness.inject(datagram(GROUP_B, b"not ours"))
    harness.inject(datagram(GROUP, b"ours"))
    assert received(ep) == [b"ours"]
    ep.set_sock_opt(SockOpt.MULTICAST_ALL, True)
    harness.inject(datagram(GROUP_B, b"anyone's"))
    assert received(ep) == [b"anyone's"]
