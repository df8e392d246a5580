"""ICMP echo ("ping") endpoints, as Linux's SOCK_DGRAM/IPPROTO_ICMP sockets: the user writes an echo
request, the endpoint stamps its identifier and checksum, and reads back the replies to it."""

from __future__ import annotations

import errno

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.packet import Raw

from netsock.tcpip import (ICMPV4_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER, ErrInvalidOptionValue, ErrPortInUse,
                           ErrWouldBlock, FullAddress)
from netsock.waiter import EventMask

from conftest import LOCAL, NIC_ID, OTHER_PEER, PEER, StackHarness, addr, checksums_valid, to


def ping_endpoint(h: StackHarness, ident: int | None = None):
    ep = h.stack.new_endpoint(ICMPV4_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER)
    if ident is not None:
        ep.bind(FullAddress(0, b"", ident))
    return ep


def echo_request(seq: int, payload: bytes = b"", ident: int = 0) -> bytes:
    """What a user writes: the identifier and checksum are left for the endpoint to fill."""
    return bytes(ICMP(type=8, code=0, id=ident, seq=seq, chksum=0) / Raw(payload))


def echo_reply(ident: int, seq: int, payload: bytes = b"", src: str = PEER) -> IP:
    return IP(src=src, dst=LOCAL) / ICMP(type=0, id=ident, seq=seq) / Raw(payload)


def test_request_carries_the_endpoint_identifier_and_a_valid_checksum(harness: StackHarness) -> None:
    ep = ping_endpoint(harness, ident=0x4242)
    ep.write(echo_request(seq=9, payload=b"are you there", ident=0x1111), to(PEER, 0))

    [raw] = harness.sent_raw()
    packet = IP(raw)
    assert checksums_valid(raw)
    assert (packet.src, packet.dst, packet.proto, packet.ttl) == (LOCAL, PEER, 1, 64)
    assert (packet[ICMP].type, packet[ICMP].code, packet[ICMP].id, packet[ICMP].seq) == (8, 0, 0x4242, 9)
    assert packet[Raw].load == b"are you there"
    assert harness.stats.icmp.v4_packets_sent.echo.value == 1


def test_unbound_endpoint_gets_an_identifier_on_first_write(harness: StackHarness) -> None:
    ep = ping_endpoint(harness)
    ep.write(echo_request(seq=1), to(PEER, 0))
    ident = ep.get_local_address().port
    assert ident != 0
    assert harness.sent_one()[ICMP].id == ident


def test_reply_to_our_identifier_is_read_back_whole(harness: StackHarness) -> None:
    ep = ping_endpoint(harness, ident=77)
    events = []
    ep.waiter_queue.register(events.append, EventMask.IN)
    ep.write(echo_request(seq=5, payload=b"payload"), to(PEER, 0))
    harness.sent()

    reply = echo_reply(77, 5, b"payload")
    harness.inject(reply)

    assert events == [EventMask.IN]
    result = ep.read()
    assert result.data == bytes(reply[ICMP])                 # header included, as Linux returns it
    assert result.sender == FullAddress(NIC_ID, addr(PEER), 0)


def test_reply_for_another_identifier_is_not_delivered(harness: StackHarness) -> None:
    ours, theirs = ping_endpoint(harness, ident=77), ping_endpoint(harness, ident=78)
    harness.inject(echo_reply(78, 1, b"for 78"))
    with pytest.raises(ErrWouldBlock):
        ours.read()
    assert theirs.read().data.endswith(b"for 78")

    harness.inject(echo_reply(79, 1))                         # no endpoint: quietly dropped
    assert harness.sent() == []


def test_connected_endpoint_reads_only_its_peer(harness: StackHarness) -> None:
    ep = ping_endpoint(harness, ident=77)
    ep.connect(FullAddress(0, addr(PEER), 0))
    ep.write(echo_request(seq=1))
    assert harness.sent_one().dst == PEER
    harness.inject(echo_reply(77, 1, b"impostor", src=OTHER_PEER))
    harness.inject(echo_reply(77, 1, b"peer"))
    assert ep.read().data.endswith(b"peer")
    with pytest.raises(ErrWouldBlock):
        ep.read()


def test_reply_with_bad_checksum_is_not_delivered(harness: StackHarness) -> None:
    ep = ping_endpoint(harness, ident=77)
    harness.inject(IP(src=PEER, dst=LOCAL) / ICMP(type=0, id=77, seq=1, chksum=0xBAD))
    with pytest.raises(ErrWouldBlock):
        ep.read()
    assert harness.stats.icmp.v4_packets_received.invalid.value == 1


def test_echo_requests_to_us_are_answered_not_delivered(harness: StackHarness) -> None:
    ep = ping_endpoint(harness, ident=77)
    harness.inject(IP(src=PEER, dst=LOCAL) / ICMP(type=8, id=77, seq=1))
    assert harness.sent_one()[ICMP].type == 0
    with pytest.raises(ErrWouldBlock):
        ep.read()


@pytest.mark.parametrize("message", [
    bytes(ICMP(type=0, id=1, seq=1)),       # an echo reply
    bytes(ICMP(type=13)),                   # a timestamp request
    bytes(ICMP(type=8, code=1)),            # echo with a non-zero code
    b"\x08\x00\x00",                        # shorter than the header
])
def test_only_echo_requests_can_be_sent(harness: StackHarness, message: bytes) -> None:
    ep = ping_endpoint(harness, ident=77)
    with pytest.raises(ErrInvalidOptionValue) as info:
        ep.write(message, to(PEER, 0))
    assert info.value.errno == errno.EINVAL
    assert harness.sent() == []


def test_ping_own_address(harness: StackHarness) -> None:
    ep = ping_endpoint(harness, ident=77)
    ep.write(echo_request(seq=3, payload=b"loop"), to(LOCAL, 0))
    reply = ICMP(ep.read().data)
    assert (reply.type, reply.id, reply.seq, reply[Raw].load) == (0, 77, 3, b"loop")
    assert harness.sent() == []


def test_identifier_is_exclusive(harness: StackHarness) -> None:
    ping_endpoint(harness, ident=77)
    with pytest.raises(ErrPortInUse) as info:
        ping_endpoint(harness, ident=77)
    assert info.value.errno == errno.EADDRINUSE
