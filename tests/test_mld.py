"""Multicast listener discovery for a host (RFC 3810 MLDv2, RFC 2710 MLDv1 compatibility): reports
on joining and leaving, answers to general and group-specific queries, the switch to version 1,
and the groups that are never reported. On an Ethernet link, with scapy as the router."""

from __future__ import annotations

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (ICMPv6MLDMultAddrRec, ICMPv6MLDone, ICMPv6MLQuery, ICMPv6MLQuery2, ICMPv6MLReport,
                                ICMPv6MLReport2, IPv6, IPv6ExtHdrHopByHop, RouterAlert)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils6 import in6_getnsmac

from netsock.tcpip import IPV6_PROTOCOL_NUMBER, SockOpt

from test_ipv6 import a6
from test_ndp import (ALL_NODES, LOCAL, LOCAL_LL, LOCAL_MAC, NIC_ID, PEER, PEER_MAC, ROUTER_LL, ROUTER_MAC,
                      EtherV6Harness, solicited_node)

GROUP = "ff05::1:3"                 # site-local scope: what an application joins
OTHER_GROUP = "ff0e::db8:77"
SOLICITED = solicited_node(LOCAL)    # ff02::1:ff00:2, shared by LOCAL and LOCAL_LL
ALL_ROUTERS, ALL_MLDV2_ROUTERS = "ff02::2", "ff02::16"
CHANGE_TO_INCLUDE, CHANGE_TO_EXCLUDE, MODE_IS_EXCLUDE = 3, 4, 2


@pytest.fixture
def h() -> EtherV6Harness:
    """The stack with its addresses past DAD, quiet."""
    harness = EtherV6Harness()
    harness.settle(10)                  # DAD, router solicitations and initial reports done
    return harness


def records(frames: list[Ether]) -> list[tuple[int, str]]:
    """(record type, group) of every record in the MLDv2 reports among ``frames``, in order."""
    return [(rec.rtype, rec.dst) for f in frames if ICMPv6MLReport2 in f for rec in f[ICMPv6MLReport2].records]


def multicast_mac(group: str) -> str:
    """RFC 2464 §7: 33:33 and the group's low 32 bits (by scapy)."""
    return in6_getnsmac(a6(group))


def assert_mld_packet(frame: Ether, dst: str, src: str = LOCAL_LL) -> None:
    """RFC 3810 §5: from a link-local address, hop limit 1, with a Router Alert (MLD) hop-by-hop option."""
    ip = frame[IPv6]
    assert (frame.src, frame.dst) == (LOCAL_MAC, multicast_mac(dst))
    assert (ip.src, ip.dst, ip.hlim, ip.nh) == (src, dst, 1, 0)
    options = frame[IPv6ExtHdrHopByHop].options
    assert [(type(o), o.value) for o in options if isinstance(o, RouterAlert)] == [(RouterAlert, 0)]


def query(group: str = "::", mrd: int = 10000, version: int = 2, src: str = ROUTER_LL, hlim: int = 1,
          router_alert: bool = True) -> Ether:
    dst = ALL_NODES if group == "::" else group
    message: Packet = ICMPv6MLQuery2(mrd=mrd, mladdr=group) if version == 2 else ICMPv6MLQuery(mrd=mrd, mladdr=group)
    ip = IPv6(src=src, dst=dst, hlim=hlim)
    if router_alert:
        ip = ip / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
    return Ether(src=ROUTER_MAC, dst=multicast_mac(dst)) / ip / message


def join(h: EtherV6Harness, group: str = GROUP):  # noqa: ANN201 - UDPEndpoint
    ep = h.udp()
    ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (a6(group), NIC_ID))
    return ep


# --- unsolicited reports --------------------------------------------------------------------------

def test_joining_sends_a_report_robustness_times(h: EtherV6Harness) -> None:
    joined = h.clock.now()
    join(h)
    h.clock.advance(5)
    sent = h.sent_timed()
    assert len(sent) == 2
    assert sent[0][0] == joined and sent[1][0] - joined <= 1.0    # then within the unsolicited report interval
    for _, frame in sent:
        assert_mld_packet(frame, ALL_MLDV2_ROUTERS)
        assert records([frame]) == [(CHANGE_TO_EXCLUDE, GROUP)]
        assert frame[ICMPv6MLDMultAddrRec].sources_number == 0
    assert len(h.stack.timers) == 0


def test_nic_join_group_sends_the_same_reports(h: EtherV6Harness) -> None:
    h.nic.join_group(IPV6_PROTOCOL_NUMBER, a6(OTHER_GROUP))
    h.clock.advance(5)
    assert records(h.sent()) == [(CHANGE_TO_EXCLUDE, OTHER_GROUP)] * 2


def test_leaving_sends_change_to_include(h: EtherV6Harness) -> None:
    ep = join(h)
    h.clock.advance(5)
    h.sent()
    ep.set_sock_opt(SockOpt.REMOVE_MEMBERSHIP, (a6(GROUP), NIC_ID))
    h.clock.advance(5)
    sent = h.sent()
    assert records(sent) == [(CHANGE_TO_INCLUDE, GROUP)] * 2
    for frame in sent:
        assert_mld_packet(frame, ALL_MLDV2_ROUTERS)


def test_group_shared_by_two_members_is_reported_once_and_left_by_the_last(h: EtherV6Harness) -> None:
    first, second = join(h), join(h)
    h.clock.advance(5)
    assert records(h.sent()) == [(CHANGE_TO_EXCLUDE, GROUP)] * 2
    first.set_sock_opt(SockOpt.REMOVE_MEMBERSHIP, (a6(GROUP), NIC_ID))
    h.clock.advance(5)
    assert h.sent() == []
    second.close()
    h.clock.advance(5)
    assert records(h.sent()) == [(CHANGE_TO_INCLUDE, GROUP)] * 2


def test_member_receives_datagrams_to_the_group(h: EtherV6Harness) -> None:
    receiver = h.udp(9)
    receiver.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (a6(OTHER_GROUP), NIC_ID))
    h.inject(Ether(src=PEER_MAC, dst=multicast_mac(OTHER_GROUP)) / IPv6(src=PEER, dst=OTHER_GROUP) /
             UDP(sport=1, dport=9) / Raw(b"to the group"))
    assert receiver.read().data == b"to the group"


def test_solicited_node_groups_are_reported_from_the_start() -> None:
    h = EtherV6Harness(address=None, enabled=False)
    assert h.sent() == []
    h.stack.enable_nic(NIC_ID)                  # forms fe80::ff:fe00:2 and joins ff02::1:ff00:2
    h.clock.advance(2)
    sent = h.sent(ICMPv6MLReport2)
    assert records(sent) == [(CHANGE_TO_EXCLUDE, SOLICITED)] * 2
    assert_mld_packet(sent[0], ALL_MLDV2_ROUTERS, src="::")     # RFC 3590: before the link-local passed DAD
    h.stack.add_address(NIC_ID, IPV6_PROTOCOL_NUMBER, "2001:db8::1:5/64")
    h.clock.advance(2)
    sent = h.sent(ICMPv6MLReport2)
    assert records(sent) == [(CHANGE_TO_EXCLUDE, "ff02::1:ff01:5")] * 2
    assert_mld_packet(sent[0], ALL_MLDV2_ROUTERS)


def test_nothing_is_reported_while_the_nic_is_down() -> None:
    h = EtherV6Harness(enabled=False)
    h.nic.join_group(IPV6_PROTOCOL_NUMBER, a6(GROUP))
    assert h.sent() == []
    h.stack.enable_nic(NIC_ID)
    h.clock.advance(2)
    assert sorted(records(h.sent())) == sorted([(CHANGE_TO_EXCLUDE, GROUP), (CHANGE_TO_EXCLUDE, SOLICITED)] * 2)


@pytest.mark.parametrize("group", [ALL_NODES, "ff01::1:2", "ff00::1:2"], ids=["all nodes", "interface-local",
                                                                               "reserved scope"])
def test_groups_never_reported(h: EtherV6Harness, group: str) -> None:
    """RFC 3810 §6: not the link-scope all-nodes address, nor scopes 0 and 1."""
    h.nic.join_group(IPV6_PROTOCOL_NUMBER, a6(group))
    h.clock.advance(5)
    assert h.sent() == []
    h.inject(query())
    h.clock.advance(11)
    assert group not in {g for _, g in records(h.sent())}
    h.nic.leave_group(IPV6_PROTOCOL_NUMBER, a6(group))
    h.clock.advance(5)
    assert h.sent() == []


# --- queries --------------------------------------------------------------------------------------

def test_general_query_is_answered_for_every_group_within_the_delay(h: EtherV6Harness) -> None:
    join(h)
    h.nic.join_group(IPV6_PROTOCOL_NUMBER, a6(OTHER_GROUP))
    h.clock.advance(5)
    h.sent()
    start = h.clock.now()
    h.inject(query(mrd=3000))
    h.clock.advance(3)
    sent = h.sent_timed()
    assert sorted(records([f for _, f in sent])) == sorted([(MODE_IS_EXCLUDE, GROUP), (MODE_IS_EXCLUDE, OTHER_GROUP),
                                                            (MODE_IS_EXCLUDE, SOLICITED)])
    assert all(0 <= when - start <= 3 for when, _ in sent)
    for _, frame in sent:
        assert_mld_packet(frame, ALL_MLDV2_ROUTERS)
    h.clock.advance(30)
    assert h.sent() == [] and len(h.stack.timers) == 0


def test_group_specific_query_is_answered_for_that_group_only(h: EtherV6Harness) -> None:
    join(h)
    h.clock.advance(5)
    h.sent()
    h.inject(query(GROUP, mrd=1000))
    h.inject(query("ff05::99", mrd=1000))                 # not ours: dropped by the destination check
    h.clock.advance(1)
    assert records(h.sent()) == [(MODE_IS_EXCLUDE, GROUP)]


@pytest.mark.parametrize("bad", ["hop limit 2", "no router alert", "global source"])
def test_invalid_query_is_ignored(h: EtherV6Harness, bad: str) -> None:
    join(h)
    h.clock.advance(5)
    h.sent()
    h.inject(query(**{"hop limit 2": {"hlim": 2}, "no router alert": {"router_alert": False},
                      "global source": {"src": "2001:db8::fe"}}[bad]))
    h.clock.advance(11)
    assert h.sent() == []
    assert h.stats.icmp.v6_packets_received.invalid.value == 1


def test_version_1_query_switches_to_version_1_reports(h: EtherV6Harness) -> None:
    ep = join(h)
    h.clock.advance(5)
    h.sent()
    h.inject(query(version=1, mrd=2000))
    h.clock.advance(2)
    answers = h.sent()
    assert sorted(f[ICMPv6MLReport].mladdr for f in answers) == sorted([GROUP, SOLICITED])
    for frame in answers:
        assert_mld_packet(frame, frame[ICMPv6MLReport].mladdr)    # a v1 report goes to the group itself
        assert ICMPv6MLReport2 not in frame

    ep.set_sock_opt(SockOpt.REMOVE_MEMBERSHIP, (a6(GROUP), NIC_ID))
    h.clock.advance(2)
    done = h.sent()
    assert done and all(ICMPv6MLDone in f and f[ICMPv6MLDone].mladdr == GROUP for f in done)
    assert_mld_packet(done[0], ALL_ROUTERS)

    h.clock.advance(260)                                  # the older-version querier present timeout
    join(h, OTHER_GROUP)
    assert records(h.sent()) == [(CHANGE_TO_EXCLUDE, OTHER_GROUP)]


def test_no_timers_once_reports_are_sent(h: EtherV6Harness) -> None:
    join(h)
    h.inject(query(mrd=1000))
    h.clock.advance(10)
    assert len(h.stack.timers) == 0
