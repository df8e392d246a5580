"""Sending UDP without a checksum, and taking it so: SO_NO_CHECK over IPv4 (RFC 768 makes the checksum
optional there), UDP_NO_CHECK6_TX and UDP_NO_CHECK6_RX over IPv6 (RFC 6935 / 6936 allow it for tunnels;
otherwise RFC 8200 makes a zero checksum invalid), as Linux's udp_send_skb / udp_v6_send_skb and
__udp6_lib_rcv apply them."""

from __future__ import annotations

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from netsock.tcpip import ErrInvalidOptionValue, FullAddress, SendableControlMessages, SockOpt, WriteOptions

from conftest import PEER, StackHarness, addr
from test_ipv6 import LOCAL
from test_ipv6 import PEER as PEER6
from test_ipv6 import V6Harness, a6


@pytest.mark.parametrize("no_check", [False, True])
def test_so_no_check_over_ipv4(harness: StackHarness, no_check: bool) -> None:
    ep = harness.udp()
    ep.set_sock_opt(SockOpt.NO_CHECKSUM, no_check)
    ep.write(b"payload", WriteOptions(to=FullAddress(0, addr(PEER), 9)))
    sent = harness.sent_one()
    assert (sent[UDP].chksum == 0) == no_check
    assert bytes(sent[UDP].payload) == b"payload"


@pytest.mark.parametrize(("option", "zero"), [(None, False), (SockOpt.NO_CHECKSUM, False),
                                             (SockOpt.NO_CHECKSUM6_TX, True)])
def test_only_udp_no_check6_tx_leaves_ipv6_without(option: SockOpt | None, zero: bool) -> None:
    h = V6Harness()
    ep = h.udp()
    if option is not None:
        ep.set_sock_opt(option, True)
    ep.write(b"payload", WriteOptions(to=FullAddress(0, a6(PEER6), 9)))
    assert (h.sent_one()[UDP].chksum == 0) == zero


@pytest.mark.parametrize("accept", [False, True])
def test_udp_no_check6_rx_takes_a_zero_checksum(accept: bool) -> None:
    h = V6Harness()
    ep = h.udp(port=5353)
    ep.set_sock_opt(SockOpt.NO_CHECKSUM6_RX, accept)
    datagram = IPv6(src=PEER6, dst=LOCAL) / UDP(sport=40000, dport=5353) / Raw(b"tunnelled")
    raw = bytearray(bytes(datagram))
    raw[40 + 6:40 + 8] = b"\0\0"
    h.inject(bytes(raw))
    errors = h.stack.stats().udp.checksum_errors.value
    if accept:
        assert ep.read().data == b"tunnelled" and errors == 0
    else:
        assert ep.get_sock_opt(SockOpt.RECEIVE_QUEUE_SIZE) == 0 and errors == 1


def test_a_super_datagram_needs_its_checksum(harness: StackHarness) -> None:
    """UDP_SEGMENT's datagrams are completed by the link from a partial checksum: EINVAL without one."""
    ep = harness.udp()
    ep.set_sock_opt(SockOpt.NO_CHECKSUM, True)
    with pytest.raises(ErrInvalidOptionValue):
        ep.write(b"x" * 3000, WriteOptions(to=FullAddress(0, addr(PEER), 9),
                                           control=SendableControlMessages(gso_size=1000)))
