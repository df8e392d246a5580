"""Source-specific multicast (RFC 3376 §3, RFC 3810 §4, RFC 3678): members' source filters merged into the
interface state, the IGMPv3 and MLDv2 records that report its changes and answer queries (state-change
records of RFC 3376 §5.1, current-state ones of §5.2), and the datagrams each socket and the NIC let in.
The test is the router and the sources; scapy decodes every report."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6MLQuery2, ICMPv6MLReport2, IPv6, IPv6ExtHdrHopByHop, RouterAlert
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils6 import in6_getnsmac

from netsock.stack.multicast import MCAST_EXCLUDE, MCAST_INCLUDE, GroupFilter, state_change_records
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, ErrBadLocalAddress, ErrInvalidOptionValue,
                           ErrNoBufferSpace, FullAddress, SockOpt)
from netsock.transport.raw import RawEndpoint
from netsock.waiter import WaiterQueue

from conftest import NIC_ID, StackHarness, addr, received
from test_igmp import GROUP, GROUP_B, records, sent_igmp, v3_query
from test_ipv6 import a6
from test_ndp import ROUTER_LL, ROUTER_MAC, EtherV6Harness

MODE_IS_INCLUDE, MODE_IS_EXCLUDE, TO_IN, TO_EX, ALLOW, BLOCK = 1, 2, 3, 4, 5, 6
S1, S2, S3 = "198.51.100.7", "198.51.100.8", "198.51.100.9"
PORT = 5000


def member(h: StackHarness, mode: int = MCAST_EXCLUDE, source: str | None = None, group: str = GROUP) -> Any:
    """A UDP endpoint on PORT that joined ``group``: plainly, or in ``mode`` with ``source``."""
    ep = h.udp()
    ep.set_sock_opt(SockOpt.REUSE_ADDRESS, True)
    ep.bind(FullAddress(0, b"", PORT))
    value = (addr(group), NIC_ID) if source is None else (addr(group), NIC_ID, mode, addr(source))
    ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, value)
    return ep


def source(ep: Any, add: bool, mode: int, src: str, group: str = GROUP) -> None:
    ep.set_sock_opt(SockOpt.SOURCE_MEMBERSHIP, (add, mode, addr(group), NIC_ID, addr(src)))


def reports(h: StackHarness, seconds: float = 0.0) -> list[list[tuple[int, str, list[str]]]]:
    if seconds:
        h.clock.advance(seconds)
    return [records(p) for p in sent_igmp(h)]


def datagram(src: str, group: str = GROUP) -> IP:
    return IP(src=src, dst=group, ttl=1) / UDP(sport=40000, dport=PORT) / Raw(src.encode())


# --- the merged state ---------------------------------------------------------------------------------

def test_the_interface_state_merges_the_members_filters_as_rfc_3376_says() -> None:
    merged = GroupFilter()
    merged.add(MCAST_INCLUDE, [b"a", b"b"])
    assert merged.state() == (MCAST_INCLUDE, {b"a", b"b"})
    merged.add(MCAST_EXCLUDE, [b"a", b"c", b"d"])
    merged.add(MCAST_EXCLUDE, [b"c", b"e"])
    assert merged.state() == (MCAST_EXCLUDE, {b"c"})   # excluded by every excluding member, included by none
    assert [merged.allows(s) for s in (b"a", b"c", b"d", b"z")] == [True, False, True, True]
    merged.remove(MCAST_EXCLUDE, [b"c", b"e"])
    assert merged.state() == (MCAST_EXCLUDE, {b"c", b"d"})
    merged.remove(MCAST_EXCLUDE, [b"a", b"c", b"d"])
    assert merged.state() == (MCAST_INCLUDE, {b"a", b"b"}) and not merged.allows(b"z")


@pytest.mark.parametrize(("old", "new", "expected"), [
    ((MCAST_INCLUDE, {b"a"}), (MCAST_INCLUDE, {b"b"}), [(ALLOW, (b"b",)), (BLOCK, (b"a",))]),
    ((MCAST_EXCLUDE, {b"a"}), (MCAST_EXCLUDE, {b"b"}), [(ALLOW, (b"a",)), (BLOCK, (b"b",))]),
    ((MCAST_INCLUDE, {b"a"}), (MCAST_EXCLUDE, {b"b"}), [(TO_EX, (b"b",))]),
    ((MCAST_EXCLUDE, {b"a"}), (MCAST_INCLUDE, set()), [(TO_IN, ())]),
    ((MCAST_EXCLUDE, set()), (MCAST_EXCLUDE, set()), []),
])
def test_state_change_records_follow_the_table_of_rfc_3376_section_5_1(old: Any, new: Any, expected: Any) -> None:
    assert state_change_records((old[0], frozenset(old[1])), (new[0], frozenset(new[1]))) == expected


# --- IGMPv3 reports -----------------------------------------------------------------------------------

def test_a_source_specific_member_is_reported_by_its_sources(harness: StackHarness) -> None:
    ep = member(harness, MCAST_INCLUDE, S1)
    assert reports(harness) == [[(ALLOW, GROUP, [S1])]]
    assert reports(harness, 1.0) == [[(ALLOW, GROUP, [S1])]]          # robustness 2
    source(ep, True, MCAST_INCLUDE, S2)
    assert reports(harness, 1.0) == [[(ALLOW, GROUP, [S2])]] * 2
    source(ep, False, MCAST_INCLUDE, S1)
    assert reports(harness, 1.0) == [[(BLOCK, GROUP, [S1])]] * 2
    source(ep, False, MCAST_INCLUDE, S2)                                # the last one: a leave
    assert reports(harness, 1.0) == [[(BLOCK, GROUP, [S2])]] * 2
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.REMOVE_MEMBERSHIP, (addr(GROUP), NIC_ID))
    assert len(harness.stack.timers) == 0


def test_an_excluding_member_turns_the_interface_to_exclude_and_back(harness: StackHarness) -> None:
    member(harness, MCAST_INCLUDE, S1)
    reports(harness, 1.0)
    plain = member(harness)
    assert reports(harness, 1.0) == [[(TO_EX, GROUP, [])]] * 2
    source(plain, True, MCAST_EXCLUDE, S2)                              # blocked by every excluder, included by none
    source(plain, True, MCAST_EXCLUDE, S1)                              # ... S1 is included by the other member
    assert reports(harness, 1.0) == [[(BLOCK, GROUP, [S2])]] * 2
    plain.close()
    assert reports(harness, 1.0) == [[(TO_IN, GROUP, [S1])]] * 2


def test_a_change_during_retransmissions_is_reported_from_what_was_last_told(harness: StackHarness) -> None:
    ep = member(harness, MCAST_INCLUDE, S1)
    assert reports(harness) == [[(ALLOW, GROUP, [S1])]]
    source(ep, True, MCAST_INCLUDE, S2)
    assert reports(harness, 1.0) == [[(ALLOW, GROUP, [S2])]] * 2


def test_queries_are_answered_with_the_current_state(harness: StackHarness) -> None:
    member(harness, MCAST_INCLUDE, S1)
    excluding = member(harness, group=GROUP_B)
    source(excluding, True, MCAST_EXCLUDE, S1, GROUP_B)
    reports(harness, 1.0)
    harness.inject(v3_query(max_response=10))
    assert reports(harness, 1.0) == [[(MODE_IS_INCLUDE, GROUP, [S1]), (MODE_IS_EXCLUDE, GROUP_B, [S1])]]
    # Group-and-source-specific (§5.2): INCLUDE(A) answers A*Q, EXCLUDE(A) answers Q-A; nothing when empty.
    harness.inject(v3_query(GROUP, dst=GROUP, max_response=10, sources=[S1, S2]))
    harness.inject(v3_query(GROUP_B, dst=GROUP_B, max_response=10, sources=[S1, S2]))
    assert sorted(reports(harness, 1.0)) == [[(MODE_IS_INCLUDE, GROUP, [S1])], [(MODE_IS_INCLUDE, GROUP_B, [S2])]]
    harness.inject(v3_query(GROUP, dst=GROUP, max_response=10, sources=[S2, S3]))
    assert reports(harness, 1.0) == []


# --- what comes in ------------------------------------------------------------------------------------

def test_each_socket_gets_what_its_filter_lets_through_and_the_nic_what_all_do(harness: StackHarness) -> None:
    including = member(harness, MCAST_INCLUDE, S1)
    for src in (S1, S2, S3):
        harness.inject(datagram(src))
    assert received(including) == [S1.encode()]
    excluding = member(harness)
    source(excluding, True, MCAST_EXCLUDE, S2)
    for src in (S1, S2, S3):
        harness.inject(datagram(src))
    assert received(including) == [S1.encode()]
    assert received(excluding) == [S1.encode(), S3.encode()]     # S2 excluded by the only excluder: the NIC drops it
    assert harness.stack.stats().ip.invalid_addresses_received.value == 3


def test_source_operations_keep_linuxs_rules(harness: StackHarness) -> None:
    ep = member(harness, MCAST_INCLUDE, S1)
    with pytest.raises(ErrBadLocalAddress):
        source(ep, True, MCAST_INCLUDE, S1)                 # already there
    with pytest.raises(ErrInvalidOptionValue):
        source(ep, True, MCAST_EXCLUDE, S2)                 # a list of the other mode
    with pytest.raises(ErrBadLocalAddress):
        source(ep, False, MCAST_INCLUDE, S2)                # not there
    for i in range(9):
        source(ep, True, MCAST_INCLUDE, f"203.0.113.{i + 1}")
    with pytest.raises(ErrNoBufferSpace):
        source(ep, True, MCAST_INCLUDE, S2)                 # ten at most
    ep.set_sock_opt(SockOpt.SOURCE_FILTER, (addr(GROUP), NIC_ID, MCAST_EXCLUDE, [addr(S3)]))
    assert ep.source_filter(addr(GROUP), NIC_ID) == (MCAST_EXCLUDE, [addr(S3)])
    ep.set_sock_opt(SockOpt.SOURCE_FILTER, (addr(GROUP), NIC_ID, MCAST_INCLUDE, []))   # INCLUDE of none: leave
    with pytest.raises(ErrBadLocalAddress):
        ep.source_filter(addr(GROUP), NIC_ID)
    assert not harness.stack.nics[NIC_ID].is_in_group(IPV4_PROTOCOL_NUMBER, addr(GROUP))


# --- MLDv2 --------------------------------------------------------------------------------------------

def test_mldv2_reports_sources_as_igmpv3_does() -> None:
    h = EtherV6Harness()
    h.settle(10)
    ep = h.udp()
    ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (a6("ff05::1:3"), NIC_ID, MCAST_INCLUDE, a6("2001:db8::7")))
    ep.set_sock_opt(SockOpt.SOURCE_MEMBERSHIP, (True, MCAST_INCLUDE, a6("ff05::1:3"), NIC_ID, a6("2001:db8::8")))
    ep.close()
    h.clock.advance(5)
    seen = [(r.rtype, r.dst, list(r.sources)) for _, f in h.sent_timed() if ICMPv6MLReport2 in f
            for r in f[ICMPv6MLReport2].records]
    assert seen[0] == (ALLOW, "ff05::1:3", ["2001:db8::7"])
    assert (ALLOW, "ff05::1:3", ["2001:db8::8"]) in seen and seen[-1][0] == BLOCK
    assert sorted(seen[-1][2]) == ["2001:db8::7", "2001:db8::8"]


def test_a_raw_socket_takes_a_group_datagram_as_its_filter_says(harness: StackHarness) -> None:
    """Linux's raw_v4_input asks ip_mc_sf_allow as UDP does: a raw socket including S1 alone gets S1's,
    while a plain member keeps the NIC receiving S2's."""
    raw = RawEndpoint(harness.stack, IPV4_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, WaiterQueue())
    raw.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (addr(GROUP), NIC_ID, MCAST_INCLUDE, addr(S1)))
    member(harness)
    for src in (S1, S2):
        harness.inject(datagram(src))
    assert [bytes(IP(d)[Raw].load) for d in received(raw)] == [S1.encode()]


def test_mldv2_answers_a_source_specific_query_with_the_sources_listened_to() -> None:
    """RFC 3810 §6.3, as IGMPv3's §5.2: INCLUDE(A) answers A*Q, and nothing when that is empty."""
    group, s1, s2 = "ff05::1:3", "2001:db8::7", "2001:db8::8"
    h = EtherV6Harness()
    h.settle(10)
    ep = h.udp()
    ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (a6(group), NIC_ID, MCAST_INCLUDE, a6(s1)))
    h.clock.advance(5)
    h.sent_timed()

    def query(sources: list[str]) -> Ether:
        return (Ether(src=ROUTER_MAC, dst=in6_getnsmac(a6(group))) / IPv6(src=ROUTER_LL, dst=group, hlim=1)
                / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
                / ICMPv6MLQuery2(mrd=1000, mladdr=group, sources=sources, sources_number=len(sources)))

    def answers() -> list[tuple[int, str, list[str]]]:
        h.clock.advance(2)
        return [(r.rtype, r.dst, list(r.sources)) for _, f in h.sent_timed() if ICMPv6MLReport2 in f
                for r in f[ICMPv6MLReport2].records]

    h.inject(query([s1, s2]))
    assert answers() == [(MODE_IS_INCLUDE, group, [s1])]
    h.inject(query([s2]))
    assert answers() == []
