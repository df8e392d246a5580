"""The vocabulary types: addresses, subnets, the error space and its errno mapping, counters."""

import errno
import socket

import pytest

from netsock import tcpip
from netsock.tcpip import Address, AddressMask, AddressWithPrefix, FullAddress, LinkAddress, Route, Subnet


def test_address_parses_and_prints_both_versions():
    v4 = Address.parse("192.0.2.7")
    assert v4 == socket.inet_aton("192.0.2.7") and str(v4) == "192.0.2.7" and v4.version == 4
    v6 = Address.parse("2001:db8::1")
    assert v6 == socket.inet_pton(socket.AF_INET6, "2001:db8::1") and str(v6) == "2001:db8::1"
    assert Address.of(b"\xc0\x00\x02\x07") == v4 and Address.of("192.0.2.7") == v4
    assert hash(v4) == hash(bytes(v4)), "plain bytes from a packet must find configured addresses in dicts"
    with pytest.raises(ValueError):
        Address.parse("192.0.2.256")
    with pytest.raises(ValueError):
        Address.of(b"\x01\x02\x03")


def test_mask_prefix_and_subnet_membership():
    assert AddressMask.from_prefix(24, 4) == b"\xff\xff\xff\x00"
    assert AddressMask(b"\xff\xff\xf0\x00").prefix() == 20
    assert AddressMask(b"\xff\x00\xff\x00").prefix() == 8  # bits before the first host bit
    net = Subnet.parse("198.51.100.0/24")
    assert net.contains(Address.parse("198.51.100.200")) and Address.parse("198.51.101.1") not in net
    assert not net.contains(Address.parse("2001:db8::1")), "lengths differ: never a member"
    assert net.bits() == (24, 8)
    assert net.broadcast() == Address.parse("198.51.100.255") and net.is_broadcast(net.broadcast())
    assert not Subnet.parse("198.51.100.0/31").is_broadcast(Address.parse("198.51.100.1")), "RFC 3021"
    assert Subnet.parse("0.0.0.0/0").contains(Address.parse("203.0.113.9"))
    with pytest.raises(ValueError):
        Subnet(Address.parse("192.0.2.1"), AddressMask.from_prefix(24, 4))
    assert Subnet.parse("192.0.2.0/24") == Subnet.parse("192.0.2.0/24")
    assert len({Subnet.parse("192.0.2.0/24"), Subnet.parse("192.0.2.0/24")}) == 1


def test_address_with_prefix_and_route():
    awp = AddressWithPrefix.parse("203.0.113.9/28")
    assert awp.subnet() == Subnet.parse("203.0.113.0/28") and str(awp) == "203.0.113.9/28"
    r = Route.parse("0.0.0.0/0", 1, gateway="192.0.2.1")
    assert r.gateway == Address.parse("192.0.2.1") and "via 192.0.2.1" in str(r)
    assert str(FullAddress(0, Address.parse("192.0.2.1"), 80)) == "192.0.2.1:80"


def test_mac_parsing():
    assert LinkAddress.parse("02:00:c0:00:02:01") == bytes.fromhex("0200c0000201")
    assert LinkAddress.parse("02-00-C0-00-02-01") == bytes.fromhex("0200c0000201")
    assert str(LinkAddress(bytes.fromhex("0200c0000201"))) == "02:00:c0:00:02:01"
    for bad in ("02:00:c0:00:02", "02:00:c0:00:02:zz", "0200.c000.0201", "02:00-c0:00:02:01"):
        with pytest.raises(ValueError):
            LinkAddress.parse(bad)


@pytest.mark.parametrize("err, exc_type, code", [
    (tcpip.ErrConnectionRefused, ConnectionRefusedError, errno.ECONNREFUSED),
    (tcpip.ErrConnectionReset, ConnectionResetError, errno.ECONNRESET),
    (tcpip.ErrConnectionAborted, ConnectionAbortedError, errno.ECONNABORTED),
    (tcpip.ErrWouldBlock, BlockingIOError, errno.EAGAIN),
    (tcpip.ErrConnectStarted, BlockingIOError, errno.EINPROGRESS),
    (tcpip.ErrTimeout, TimeoutError, errno.ETIMEDOUT),
    (tcpip.ErrClosedForSend, BrokenPipeError, errno.EPIPE),
    (tcpip.ErrPortInUse, OSError, errno.EADDRINUSE),
    (tcpip.ErrBadLocalAddress, OSError, errno.EADDRNOTAVAIL),
    (tcpip.ErrNetworkUnreachable, OSError, errno.ENETUNREACH),
    (tcpip.ErrMessageTooLong, OSError, errno.EMSGSIZE),
    (tcpip.ErrNotConnected, OSError, errno.ENOTCONN),
    (tcpip.ErrBroadcastDisabled, PermissionError, errno.EACCES),
])
def test_errors_become_the_oserror_cpython_raises(err, exc_type, code):
    exc = err().to_oserror()
    assert type(exc) is exc_type and exc.errno == code


def test_every_error_has_a_distinct_message_and_an_errno():
    errors = tcpip.ALL_ERRORS
    assert len(errors) >= 39, "netstack's list plus ours"
    assert len({e.message for e in errors}) == len(errors)
    assert all(isinstance(e.errno, int) and e.errno > 0 for e in errors)
    assert tcpip.ErrWouldBlock.ignore_stats and not tcpip.ErrTimeout.ignore_stats
    assert issubclass(tcpip.ErrPortInUse, tcpip.Error) and issubclass(tcpip.Error, Exception)


def test_stats_tree_counts_and_flattens():
    stats = tcpip.Stats()
    stats.ip.packets_received.increment()
    stats.icmp.v4_packets_sent.echo_reply.increment(3)
    stats.tcp.retransmits.increment()
    stats.tcp.retransmits.decrement()
    assert stats.nonzero() == {"ip.packets_received": 1, "icmp.v4_packets_sent.echo_reply": 3}
    tree = stats.as_dict()
    assert tree["udp"]["checksum_errors"] == 0 and "listen_overflow_syn_cookie_sent" in tree["tcp"]
    assert tcpip.Stats().ip.packets_received.value == 0, "each Stats has counters of its own"
    ep = tcpip.TransportEndpointStats()
    ep.receive_errors.receive_buffer_overflow.increment()
    assert ep.as_dict()["receive_errors"]["receive_buffer_overflow"] == 1
