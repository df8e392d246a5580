"""LoopbackEndpoint: written packets come back in, iteratively and in order."""

from __future__ import annotations

import logging

import pytest

from netsock.link.loopback import LoopbackEndpoint
from netsock.stack.interfaces import LinkCapabilities
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip.errors import ErrClosedForSend, ErrMessageTooLong

IPV4 = 0x0800


def outbound(header: bytes, payload: bytes | bytearray) -> PacketBuffer:
    pkt = PacketBuffer(reserve=len(header), data=payload)
    pkt.prepend(len(header))[:] = header
    return pkt


class Recorder:
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, bytes, int, bytes]] = []

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.packets.append((remote, local, protocol, bytes(pkt.data)))


def test_properties() -> None:
    ep = LoopbackEndpoint()
    assert ep.mtu() == 65536
    assert ep.max_header_length() == 0
    assert ep.link_address() == b""
    caps = ep.capabilities()
    assert caps & LinkCapabilities.LOOPBACK
    assert caps & LinkCapabilities.RX_CHECKSUM_OFFLOAD
    assert caps & LinkCapabilities.TX_CHECKSUM_OFFLOAD
    assert not caps & LinkCapabilities.RESOLUTION_REQUIRED


def test_written_packet_comes_back_as_a_fresh_copy() -> None:
    ep = LoopbackEndpoint()
    rec = Recorder()
    ep.attach(rec)
    payload = bytearray(b"payload")
    pkt = outbound(b"HDR", payload)
    ep.write_packet(b"", 0x86DD, pkt)
    payload[:] = b"XXXXXXX"
    assert rec.packets == [(b"", b"", 0x86DD, b"HDRpayload")]
    s = ep.stats
    assert (s.tx_packets.value, s.tx_bytes.value, s.rx_packets.value, s.rx_bytes.value) == (1, 10, 1, 10)


class PingPong:
    """Writes one packet back for every packet delivered, ``limit`` times, and tracks nesting."""

    def __init__(self, ep: LoopbackEndpoint, limit: int) -> None:
        self.ep = ep
        self.limit = limit
        self.received: list[int] = []
        self.depth = 0
        self.max_depth = 0

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        seq = int.from_bytes(pkt.data, "big")
        self.received.append(seq)
        if seq < self.limit:
            self.ep.write_packet(b"", IPV4, outbound((seq + 1).to_bytes(4, "big"), b""))
        self.depth -= 1


def test_ping_pong_is_iterative_not_recursive() -> None:
    ep = LoopbackEndpoint()
    peer = PingPong(ep, limit=10_000)
    ep.attach(peer)
    ep.write_packet(b"", IPV4, outbound((0).to_bytes(4, "big"), b""))
    assert peer.received == list(range(10_001))
    assert peer.max_depth == 1
    assert ep.stats.rx_packets.value == 10_001


def test_packets_written_during_delivery_are_delivered_in_write_order() -> None:
    ep = LoopbackEndpoint()
    order: list[bytes] = []
    replies = {b"a": [b"b", b"c"], b"b": [b"d"], b"c": [b"e"]}

    class Fanout:
        def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
            name = bytes(pkt.data)
            order.append(name)
            for reply in replies.get(name, []):
                ep.write_packet(b"", IPV4, outbound(reply, b""))

    ep.attach(Fanout())
    ep.write_packet(b"", IPV4, outbound(b"a", b""))
    assert order == [b"a", b"b", b"c", b"d", b"e"]


def test_dispatcher_failure_is_counted_and_the_queue_continues(caplog: pytest.LogCaptureFixture) -> None:
    ep = LoopbackEndpoint()
    delivered: list[bytes] = []

    class Faulty:
        def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
            name = bytes(pkt.data)
            delivered.append(name)
            if name == b"first":
                ep.write_packet(b"", IPV4, outbound(b"second", b""))
                raise RuntimeError("bug above the link")

    ep.attach(Faulty())
    with caplog.at_level(logging.ERROR, logger="netsock.link.loopback"):
        ep.write_packet(b"", IPV4, outbound(b"first", b""))
    assert delivered == [b"first", b"second"]
    assert ep.stats.rx_dispatch_errors.value == 1
    assert "bug above the link" in caplog.text


def test_detached_packets_are_counted_drops() -> None:
    ep = LoopbackEndpoint()
    ep.write_packet(b"", IPV4, outbound(b"x", b""))
    assert ep.stats.rx_not_attached.value == 1


def test_mtu_and_close() -> None:
    ep = LoopbackEndpoint(mtu=8)
    rec = Recorder()
    ep.attach(rec)
    with pytest.raises(ErrMessageTooLong):
        ep.write_packet(b"", IPV4, outbound(b"h" * 4, b"p" * 5))
    ep.close()
    with pytest.raises(ErrClosedForSend):
        ep.write_packet(b"", IPV4, outbound(b"h", b""))
    assert rec.packets == []
    assert (ep.stats.tx_too_long.value, ep.stats.tx_closed.value) == (1, 1)
