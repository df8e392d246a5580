"""LoopbackEndpoint: written packets come back in, iteratively and in order."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from netsock.header.checksum import pseudo_header_checksum
from netsock.link.fault import FaultConfig, FaultEndpoint
from netsock.link.loopback import LoopbackEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import Stack
from netsock.stack.interfaces import LinkCapabilities
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip import ErrConnectStarted, FullAddress, Route
from netsock.tcpip.errors import ErrClosedForSend, ErrMessageTooLong
from netsock.transport.tcp import TCPProtocol
from netsock.waiter import WaiterQueue

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
    # Faults strike what was sent: behind a fault link, no checksum is left to be computed over damage.
    assert not FaultEndpoint(ep, FaultConfig()).capabilities() & LinkCapabilities.TX_CHECKSUM_OFFLOAD


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


def test_tcp_over_loopback_leaves_its_checksums_unsummed_and_the_stream_is_intact() -> None:
    """Nothing crosses a wire: TCP leaves the pseudo-header sum (TX_CHECKSUM_OFFLOAD) and the
    receiving side checks nothing (RX_CHECKSUM_OFFLOAD), as over Linux's lo."""
    stack = Stack([IPv4Protocol], [TCPProtocol])
    stack.create_nic(1, LoopbackEndpoint())
    stack.add_address(1, IPV4, "127.0.0.1/8")
    stack.set_route_table([Route.parse("127.0.0.0/8", 1)])
    looped: list[bytes] = []
    deliver_local = stack.deliver_local

    def record(nic: object, net_proto: int, packet: bytes, *metadata: Any) -> None:
        looped.append(packet)
        deliver_local(nic, net_proto, packet, *metadata)
    stack.deliver_local = record        # type: ignore[method-assign]
    listener = stack.new_endpoint(TCPProtocol.number, IPV4, WaiterQueue())
    listener.bind(FullAddress(0, b"", 7))
    listener.listen(1)
    client = stack.new_endpoint(TCPProtocol.number, IPV4, WaiterQueue())
    with pytest.raises(ErrConnectStarted):
        client.connect(FullAddress(0, bytes([127, 0, 0, 1]), 7))
    server, _ = listener.accept()
    assert client.write(b"over lo") == 7
    assert server.read(100) == b"over lo"
    tcp_packets = [packet for packet in looped if packet[9] == 6]
    assert len(tcp_packets) >= 4            # the handshake and the data
    for packet in tcp_packets:
        pseudo = pseudo_header_checksum(6, packet[12:16], packet[16:20], len(packet) - 20)
        assert int.from_bytes(packet[36:38], "big") == pseudo
    assert stack.stats().tcp.checksum_errors.value == 0
    stack.close()
