"""The IGMP host: reports on join and leave, answers to queries (RFC 3376 §5), IGMPv2/v1 compatibility
(§7.2.1, RFC 2236), validation of what arrives, and teardown.

The test plays the multicast router: it injects queries built by scapy and decodes every report with
scapy, after checking its checksums and that it leaves as Linux sends IGMP (TTL 1, Router Alert,
TOS 0xc0, DF).
"""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.igmp import IGMP_MQ, IGMP_MR, IGMPv2_LG, IGMPv2_MR, IGMPv3_MQ, IGMPv3_MR
from scapy.layers.inet import IP, IPOption_Router_Alert
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from netsock.link.loopback import LoopbackEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import ManualClock, Stack
from netsock.tcpip import IPV4_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, SockOpt
from netsock.transport.udp import UDPProtocol

from conftest import LOCAL, LOCAL_MAC, NIC_ID, OTHER_PEER, PEER, StackHarness, addr

GROUP = "239.1.2.3"
GROUP_B = "239.4.5.6"
GROUP_C = "239.7.8.9"
ALL_SYSTEMS = "224.0.0.1"
ALL_ROUTERS = "224.0.0.2"
IGMPV3_ROUTERS = "224.0.0.22"
ROUTER = PEER
SOURCES = ["198.51.100.7", "198.51.100.8"]

Members = dict[str, Any]      # group -> a UDP endpoint that joined it

MODE_IS_INCLUDE, MODE_IS_EXCLUDE, CHANGE_TO_INCLUDE, CHANGE_TO_EXCLUDE = 1, 2, 3, 4
OLDER_VERSION_QUERIER_TIMEOUT = 2 * 125 + 10     # robustness * query interval + query response interval


# --- helpers ------------------------------------------------------------------------------------------

def igmp_stats(stack: Stack) -> Any:
    return stack.network_protocols[IPV4_PROTOCOL_NUMBER].igmp_stats


def join(h: StackHarness, group: str) -> Any:
    """A UDP endpoint that joined ``group`` on the harness NIC."""
    ep = h.udp()
    ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (addr(group), NIC_ID))
    return ep


def leave(ep: Any, group: str) -> None:
    ep.set_sock_opt(SockOpt.REMOVE_MEMBERSHIP, (addr(group), NIC_ID))


def sent_igmp(h: StackHarness) -> list[IP]:
    """What the stack wrote, parsed by scapy, each checked to be IGMP sent as Linux sends it."""
    packets = []
    for raw in h.sent_raw():
        packet = IP(raw)
        hlen = packet.ihl * 4
        assert scapy_checksum(raw[:hlen]) == 0 and scapy_checksum(raw[hlen:packet.len]) == 0
        assert (packet.proto, packet.ttl, packet.tos, str(packet.flags)) == (2, 1, 0xC0, "DF")
        assert len(packet.options) == 1 and isinstance(packet.options[0], IPOption_Router_Alert)
        assert packet.options[0].alert == 0
        packets.append(packet)
    return packets


def records(packet: IP) -> list[tuple[int, str, list[str]]]:
    """The group records of a v3 report sent to 224.0.0.22."""
    assert packet.dst == IGMPV3_ROUTERS
    return [(r.rtype, r.maddr, list(r.srcaddrs)) for r in packet[IGMPv3_MR].records]


def v3_query(group: str = "0.0.0.0", max_response: int = 100, dst: str = ALL_SYSTEMS, sources: list[str] | None = None,
             qrv: int = 2, qqic: int = 125) -> IP:
    """An IGMPv3 query; ``max_response`` in tenths of a second (scapy encodes the 8-bit float)."""
    return IP(src=ROUTER, dst=dst, ttl=1) / IGMPv3_MQ(mrcode=max_response, gaddr=group, qrv=qrv, qqic=qqic,
                                                      srcaddrs=sources or [])


def v2_query(group: str = "0.0.0.0", max_response: int = 100, dst: str = ALL_SYSTEMS) -> IP:
    return IP(src=ROUTER, dst=dst, ttl=1) / IGMP_MQ(mrcode=max_response, gaddr=group)


def v1_query() -> IP:
    return IP(src=ROUTER, dst=ALL_SYSTEMS, ttl=1) / IGMP_MQ(mrcode=0)


def raw_igmp(message: bytes, dst: str = ALL_SYSTEMS) -> IP:
    return IP(src=ROUTER, dst=dst, ttl=1, proto=2) / Raw(message)


def with_checksum(message: bytes) -> bytes:
    csum = scapy_checksum(message[:2] + b"\x00\x00" + message[4:])
    return message[:2] + csum.to_bytes(2, "big") + message[4:]


@pytest.fixture
def latest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every random delay is the longest allowed: timing tests become exact."""
    monkeypatch.setattr("netsock.network.ipv4.igmp.random.uniform", lambda low, high: high)


@pytest.fixture
def members(harness: StackHarness) -> Members:
    """Endpoints that joined GROUP and GROUP_B on the harness NIC, their unsolicited reports done."""
    endpoints = {GROUP: join(harness, GROUP), GROUP_B: join(harness, GROUP_B)}
    harness.clock.advance(1.0)
    sent_igmp(harness)
    return endpoints


# --- joining and leaving ----------------------------------------------------------------------------

def test_join_reports_change_to_exclude_robustness_times_within_a_second(harness: StackHarness) -> None:
    join(harness, GROUP)
    [first] = sent_igmp(harness)                 # the first at once
    assert first.src == LOCAL
    assert records(first) == [(CHANGE_TO_EXCLUDE, GROUP, [])]

    harness.clock.advance(1.0)                   # the second at a random moment within a second
    [second] = sent_igmp(harness)
    assert records(second) == [(CHANGE_TO_EXCLUDE, GROUP, [])]

    harness.clock.advance(300)
    assert harness.sent() == []
    assert igmp_stats(harness.stack).packets_sent.v3_membership_report.value == 2
    assert len(harness.stack.timers) == 0


def test_leave_reports_change_to_include(harness: StackHarness, members: Members) -> None:
    leave(members[GROUP], GROUP)
    [first] = sent_igmp(harness)
    assert records(first) == [(CHANGE_TO_INCLUDE, GROUP, [])]
    harness.clock.advance(1.0)
    assert [records(p) for p in sent_igmp(harness)] == [[(CHANGE_TO_INCLUDE, GROUP, [])]]

    members[GROUP_B].close()   # closing leaves too
    assert [records(p) for p in sent_igmp(harness)] == [[(CHANGE_TO_INCLUDE, GROUP_B, [])]]


def test_leave_replaces_the_join_still_being_retransmitted(harness: StackHarness) -> None:
    ep = join(harness, GROUP)
    leave(ep, GROUP)
    assert [records(p) for p in sent_igmp(harness)] == [[(CHANGE_TO_EXCLUDE, GROUP, [])],
                                                        [(CHANGE_TO_INCLUDE, GROUP, [])]]
    harness.clock.advance(5.0)
    assert [records(p) for p in sent_igmp(harness)] == [[(CHANGE_TO_INCLUDE, GROUP, [])]]


def test_a_group_shared_by_sockets_is_reported_by_the_first_join_and_the_last_leave(harness: StackHarness) -> None:
    first, second = join(harness, GROUP), join(harness, GROUP)
    harness.clock.advance(1.0)
    assert len(sent_igmp(harness)) == 2          # the first join's two reports; the second join adds none
    first.close()
    harness.clock.advance(1.0)
    assert sent_igmp(harness) == []
    second.close()
    assert [records(p) for p in sent_igmp(harness)] == [[(CHANGE_TO_INCLUDE, GROUP, [])]]


def test_all_systems_is_never_reported(harness: StackHarness) -> None:
    ep = join(harness, ALL_SYSTEMS)
    harness.inject(v3_query(max_response=10))
    harness.clock.advance(2.0)
    leave(ep, ALL_SYSTEMS)
    harness.clock.advance(2.0)
    assert harness.sent() == []


@pytest.mark.usefixtures("latest")
def test_a_querier_robustness_is_adopted(harness: StackHarness) -> None:
    harness.inject(v3_query(qrv=3, max_response=100))
    join(harness, GROUP)
    harness.clock.advance(2.5)                  # the retransmissions 1 s apart, the answer due at 10 s
    assert [records(p) for p in sent_igmp(harness)] == [[(CHANGE_TO_EXCLUDE, GROUP, [])]] * 3


def test_groups_joined_while_the_nic_is_down_are_reported_when_it_comes_up(harness: StackHarness) -> None:
    harness.stack.disable_nic(NIC_ID)
    join(harness, GROUP)
    assert harness.sent() == []
    harness.stack.enable_nic(NIC_ID)
    assert [records(p) for p in sent_igmp(harness)] == [[(CHANGE_TO_EXCLUDE, GROUP, [])]]


def test_without_an_address_reports_come_from_0_0_0_0(harness: StackHarness) -> None:
    harness.stack.remove_address(NIC_ID, addr(LOCAL))
    join(harness, GROUP)
    [report] = sent_igmp(harness)
    assert report.src == "0.0.0.0"


def test_on_ethernet_reports_go_to_the_group_mac(ether_harness: StackHarness) -> None:
    join(ether_harness, GROUP)
    [frame] = [Ether(info.data) for info in ether_harness.link.drain()]
    assert (frame.dst, frame.src, frame.type) == ("01:00:5e:00:00:16", LOCAL_MAC, 0x0800)
    assert records(frame[IP]) == [(CHANGE_TO_EXCLUDE, GROUP, [])]


# --- answering queries (IGMPv3) -----------------------------------------------------------------------

@pytest.mark.usefixtures("members")
def test_general_query_is_answered_with_every_group_within_the_max_response_time(harness: StackHarness) -> None:
    for _ in range(10):
        harness.inject(v3_query(max_response=20))
        assert harness.sent() == []               # never at once: after a random delay
        harness.clock.advance(2.0)
        [report] = sent_igmp(harness)
        assert sorted(records(report)) == [(MODE_IS_EXCLUDE, GROUP, []), (MODE_IS_EXCLUDE, GROUP_B, [])]


@pytest.mark.usefixtures("latest", "members")
@pytest.mark.parametrize("max_response", [100, 248])     # 248 tenths: the float code 0x8f (RFC 3376 §4.1.1)
def test_the_answer_waits_at_most_the_max_response_time(harness: StackHarness, max_response: int) -> None:
    harness.inject(v3_query(max_response=max_response))
    harness.clock.advance(max_response / 10 - 0.01)
    assert harness.sent() == []
    harness.clock.advance(0.02)
    assert len(sent_igmp(harness)) == 1


@pytest.mark.usefixtures("members")
def test_group_specific_query_is_answered_for_that_group_only(harness: StackHarness) -> None:
    harness.inject(v3_query(GROUP, dst=GROUP, max_response=10))
    harness.inject(v3_query(GROUP_C, dst=GROUP_C, max_response=10))    # not ours: not even accepted
    harness.clock.advance(1.0)
    assert [records(p) for p in sent_igmp(harness)] == [[(MODE_IS_EXCLUDE, GROUP, [])]]


@pytest.mark.usefixtures("members")
def test_group_and_source_specific_query_is_answered_with_the_sources_asked_about(harness: StackHarness) -> None:
    harness.inject(v3_query(GROUP, dst=GROUP, max_response=10, sources=SOURCES))
    harness.clock.advance(1.0)
    assert [records(p) for p in sent_igmp(harness)] == [[(MODE_IS_INCLUDE, GROUP, SOURCES)]]


@pytest.mark.usefixtures("latest", "members")
def test_source_lists_merge_and_a_group_query_widens_them(harness: StackHarness) -> None:
    harness.inject(v3_query(GROUP, dst=GROUP, sources=SOURCES[:1]))
    harness.inject(v3_query(GROUP, dst=GROUP, sources=SOURCES[1:]))
    harness.clock.advance(10.0)
    assert [records(p) for p in sent_igmp(harness)] == [[(MODE_IS_INCLUDE, GROUP, SOURCES)]]

    harness.inject(v3_query(GROUP, dst=GROUP, sources=SOURCES))
    harness.inject(v3_query(GROUP, dst=GROUP))
    harness.clock.advance(10.0)
    assert [records(p) for p in sent_igmp(harness)] == [[(MODE_IS_EXCLUDE, GROUP, [])]]


@pytest.mark.usefixtures("latest", "members")
def test_a_pending_general_answer_covers_later_group_queries(harness: StackHarness) -> None:
    harness.inject(v3_query(max_response=10))
    harness.inject(v3_query(GROUP, dst=GROUP, max_response=100))
    harness.clock.advance(10.0)
    [report] = sent_igmp(harness)
    assert len(records(report)) == 2


@pytest.mark.usefixtures("members")
def test_general_query_to_a_group_is_ignored_but_a_unicast_one_is_answered(harness: StackHarness) -> None:
    harness.inject(v3_query(dst=GROUP, max_response=10))        # RFC 3376 §9.1
    harness.clock.advance(1.0)
    assert harness.sent() == []
    harness.inject(v3_query(dst=LOCAL, max_response=10))
    harness.clock.advance(1.0)
    assert len(sent_igmp(harness)) == 1


def test_answers_are_split_to_fit_the_mtu() -> None:
    h = StackHarness(mtu=100)                    # room for 8 records behind the IP and report headers
    groups = [f"239.0.0.{i}" for i in range(1, 11)]
    for group in groups:
        join(h, group)
    h.clock.advance(1.0)
    sent_igmp(h)
    h.inject(v3_query(max_response=10))
    h.clock.advance(1.0)
    reports = sent_igmp(h)
    assert [len(records(r)) for r in reports] == [8, 2]
    assert all(len(r) <= 100 for r in reports)
    assert sorted(g for r in reports for _, g, _ in records(r)) == sorted(groups)


# --- IGMPv2 and IGMPv1 compatibility ------------------------------------------------------------------

@pytest.mark.usefixtures("members")
def test_a_v2_querier_switches_the_host_to_v2_until_it_falls_silent(harness: StackHarness) -> None:
    harness.inject(v2_query(max_response=10))
    harness.clock.advance(1.0)
    answers = sent_igmp(harness)
    assert sorted((p.dst, p[IGMPv2_MR].gaddr) for p in answers) == [(GROUP, GROUP), (GROUP_B, GROUP_B)]

    ep = join(harness, GROUP_C)                    # unsolicited v2 reports: twice, within 10 s (RFC 2236)
    harness.clock.advance(10.0)
    reports = [(p.dst, p[IGMPv2_MR].type, p[IGMPv2_MR].gaddr) for p in sent_igmp(harness)]
    assert reports == [(GROUP_C, 0x16, GROUP_C)] * 2

    leave(ep, GROUP_C)                            # one leave, to all routers
    leaves = [(p.dst, p[IGMPv2_LG].type, p[IGMPv2_LG].gaddr) for p in sent_igmp(harness)]
    assert leaves == [(ALL_ROUTERS, 0x17, GROUP_C)]

    harness.clock.advance(OLDER_VERSION_QUERIER_TIMEOUT)
    join(harness, GROUP_C)
    assert [records(p) for p in sent_igmp(harness)] == [[(CHANGE_TO_EXCLUDE, GROUP_C, [])]]
    stats = igmp_stats(harness.stack)
    assert stats.packets_sent.v2_membership_report.value == 4
    assert stats.packets_sent.leave_group.value == 1


def test_a_v1_querier_gets_v1_reports_and_no_leave(harness: StackHarness, members: Members) -> None:
    harness.inject(v1_query())
    harness.clock.advance(10.0)                    # a v1 query allows 10 s (RFC 2236 §4)
    answers = sent_igmp(harness)
    assert sorted((p.dst, p[IGMP_MR].type, p[IGMP_MR].gaddr) for p in answers) == [(GROUP, 0x12, GROUP),
                                                                                  (GROUP_B, 0x12, GROUP_B)]
    leave(members[GROUP], GROUP)
    harness.clock.advance(10.0)
    assert harness.sent() == []


def test_changing_mode_cancels_pending_v3_reports(harness: StackHarness) -> None:
    join(harness, GROUP)
    assert len(sent_igmp(harness)) == 1           # the v3 retransmission is still due
    harness.inject(v2_query(max_response=10))
    harness.clock.advance(20.0)
    assert [(p.dst, p[IGMPv2_MR].type) for p in sent_igmp(harness)] == [(GROUP, 0x16)]


@pytest.mark.usefixtures("latest")
def test_in_v2_mode_a_report_heard_suppresses_ours_and_our_leave(harness: StackHarness, members: Members) -> None:
    harness.inject(v2_query(GROUP, dst=GROUP, max_response=100))
    harness.clock.advance(5.0)
    harness.inject(IP(src=OTHER_PEER, dst=GROUP, ttl=1) / IGMPv2_MR(gaddr=GROUP))
    harness.clock.advance(5.0)
    assert harness.sent() == []
    leave(members[GROUP], GROUP)  # not the last reporter
    assert harness.sent() == []
    assert igmp_stats(harness.stack).packets_received.v2_membership_report.value == 1


@pytest.mark.usefixtures("latest", "members")
def test_in_v3_mode_reports_heard_suppress_nothing(harness: StackHarness) -> None:
    harness.inject(v3_query(GROUP, dst=GROUP, max_response=100))
    harness.inject(IP(src=OTHER_PEER, dst=GROUP, ttl=1) / IGMPv2_MR(gaddr=GROUP))
    harness.clock.advance(10.0)
    assert [records(p) for p in sent_igmp(harness)] == [[(MODE_IS_EXCLUDE, GROUP, [])]]


# --- validation ---------------------------------------------------------------------------------------

@pytest.mark.usefixtures("members")
def test_bad_checksum_is_counted_and_ignored(harness: StackHarness) -> None:
    query = v3_query(max_response=10)
    query[IGMPv3_MQ].chksum = 0x1234
    harness.inject(query)
    harness.clock.advance(1.0)
    assert harness.sent() == []
    received = igmp_stats(harness.stack).packets_received
    assert received.checksum_errors.value == 1
    assert received.membership_query.value == 0


@pytest.mark.parametrize("message, counter", [
    (b"\x11\x0a\x00\x00", "invalid"),                                       # shorter than any message
    (with_checksum(b"\x11\x0a\x00\x00" + bytes(6)), "invalid"),             # 10 bytes: no version's query
    (with_checksum(b"\x99\x00\x00\x00" + bytes(4)), "unrecognized"),        # a type IGMP does not define
])
@pytest.mark.usefixtures("members")
def test_malformed_messages_are_counted(harness: StackHarness, message: bytes, counter: str) -> None:
    harness.inject(raw_igmp(message))
    harness.clock.advance(10.0)
    assert harness.sent() == []
    assert getattr(igmp_stats(harness.stack).packets_received, counter).value == 1
    assert harness.stats.ip.packets_delivered.value == 1


# --- scope and teardown -------------------------------------------------------------------------------

@pytest.mark.usefixtures("latest")
def test_no_timers_are_left_after_close(harness: StackHarness, members: Members) -> None:
    harness.inject(v3_query(max_response=100))
    harness.inject(v3_query(GROUP, dst=GROUP, max_response=50, sources=SOURCES))
    members[GROUP_B].close()    # a leave being retransmitted
    assert len(harness.stack.timers) == 3
    harness.stack.close()
    assert len(harness.stack.timers) == 0


def test_a_loopback_nic_sends_no_igmp() -> None:
    clock = ManualClock()
    stack = Stack((IPv4Protocol,), (UDPProtocol,), clock=clock)
    stack.create_nic(1, LoopbackEndpoint())
    stack.add_address(1, IPV4_PROTOCOL_NUMBER, "127.0.0.1/8")
    ep = stack.new_endpoint(UDP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER)
    ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (addr(GROUP), 1))
    clock.advance(1.0)
    ep.close()
    assert not any(igmp_stats(stack).packets_sent.as_dict().values())
    assert stack.stats().ip.packets_sent.value == 0
    assert len(stack.timers) == 0
