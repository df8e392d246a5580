"""Which ICMP errors a connected datagram socket (UDP, raw) is told of, and as what, without
IP_RECVERR: Linux reports the fatal ones of icmp_err_convert / icmpv6_err_convert and keeps quiet
about the transient ones (net or host unreachable, time exceeded). The IPv4 table was measured on
Linux (a UDP and a raw socket connected in a namespace, each error sent to it quoting its datagram);
the IPv6 one is icmpv6_err_convert's."""

from __future__ import annotations

import errno

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded, IPv6
from scapy.packet import Raw

from netsock.tcpip import IPV4_PROTOCOL_NUMBER, Error, ErrWouldBlock, FullAddress, SockOpt
from netsock.tcpip.options import PMTUDISC_DONT
from netsock.transport.raw import RawEndpoint
from netsock.waiter import WaiterQueue

from conftest import PEER, StackHarness, addr, to
from test_ipv6 import PEER as PEER6
from test_ipv6 import V6Harness, a6

EXPERIMENTAL = 253
# (type, code) -> the errno read() raises, None: nothing (as Linux 6.x answered in the namespace).
LINUX_IPV4 = {
    (3, 0): None, (3, 1): None, (3, 2): errno.ENOPROTOOPT, (3, 3): errno.ECONNREFUSED, (3, 4): errno.EMSGSIZE,
    (3, 6): errno.ENETUNREACH, (3, 7): errno.EHOSTDOWN, (3, 9): errno.ENETUNREACH, (3, 13): errno.EHOSTUNREACH,
    (11, 0): None, (12, 0): errno.EPROTO,
}


def outcome(ep) -> int | None:
    try:
        ep.read()
    except ErrWouldBlock:
        return None
    except Error as error:
        return error.errno
    raise AssertionError("an error was expected, or nothing")


def ipv4_error(sent: IP, icmp_type: int, code: int) -> IP:
    quoted = bytes(sent)[:sent.ihl * 4 + 8]
    rest = {"ptr": 20} if icmp_type == 12 else {"nexthopmtu": 1000} if (icmp_type, code) == (3, 4) else {}
    return IP(src=PEER, dst=sent.src) / ICMP(type=icmp_type, code=code, **rest) / Raw(quoted)


@pytest.mark.parametrize(("icmp_type", "code"), sorted(LINUX_IPV4))
@pytest.mark.parametrize("kind", ["udp", "raw"])
def test_ipv4_errors_as_linux_reports_them(harness: StackHarness, kind: str, icmp_type: int, code: int) -> None:
    if kind == "udp":
        ep = harness.udp()
        ep.connect(FullAddress(0, addr(PEER), 9))
    else:
        ep = RawEndpoint(harness.stack, IPV4_PROTOCOL_NUMBER, EXPERIMENTAL, WaiterQueue())
        ep.connect(FullAddress(0, addr(PEER), 0))
    ep.write(b"hello123")
    harness.inject(ipv4_error(harness.sent_one(), icmp_type, code))
    assert outcome(ep) == LINUX_IPV4[(icmp_type, code)]


def test_an_unconnected_raw_socket_hears_nothing(harness: StackHarness) -> None:
    ep = RawEndpoint(harness.stack, IPV4_PROTOCOL_NUMBER, EXPERIMENTAL, WaiterQueue())
    ep.write(b"hello123", to(PEER, 0))
    harness.inject(ipv4_error(harness.sent_one(), 3, 3))
    assert outcome(ep) is None


def test_frag_needed_is_not_an_error_with_pmtudisc_dont(harness: StackHarness) -> None:
    ep = harness.udp()
    ep.set_sock_opt(SockOpt.MTU_DISCOVER, PMTUDISC_DONT)
    ep.connect(FullAddress(0, addr(PEER), 9))
    ep.write(b"hello123")
    harness.inject(ipv4_error(harness.sent_one(), 3, 4))
    assert outcome(ep) is None


LINUX_IPV6 = [
    (ICMPv6DestUnreach(code=0), None),                   # no route
    (ICMPv6DestUnreach(code=1), errno.EACCES),           # administratively prohibited
    (ICMPv6DestUnreach(code=3), None),                   # address unreachable
    (ICMPv6DestUnreach(code=4), errno.ECONNREFUSED),     # port unreachable
    (ICMPv6PacketTooBig(mtu=1280), errno.EMSGSIZE),
    (ICMPv6TimeExceeded(code=0), None),
    (ICMPv6ParamProblem(code=0, ptr=4), errno.EPROTO),
]


@pytest.mark.parametrize(("message", "expected"), LINUX_IPV6, ids=[m.summary() for m, _ in LINUX_IPV6])
def test_ipv6_errors_as_linux_reports_them(message, expected: int | None) -> None:
    h = V6Harness()
    ep = h.udp()
    ep.connect(FullAddress(0, a6(PEER6), 9))
    ep.write(b"x" * 1400)
    sent = h.sent_one()
    h.inject(IPv6(src=PEER6, dst=sent.src) / message / Raw(bytes(sent)[:1232]))
    assert outcome(ep) == expected
