"""FdEndpoint over a SOCK_SEQPACKET socket pair: boundary-preserving, like a TUN/TAP fd."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator

import gevent
import pytest

from netsock.header import ethernet
from netsock.link.fdbased import FdEndpoint
from netsock.stack.interfaces import LinkCapabilities, PacketType
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip.errors import ErrClosedForSend, ErrMessageTooLong, ErrNoBufferSpace

OUR_MAC = b"\x02\x00\xc0\x00\x02\x02"
PEER_MAC = b"\x02\x00\xc0\x00\x02\x01"
IPV4_PACKET = bytes([0x45]) + bytes(19) + b"ipv4 payload"
IPV6_PACKET = bytes([0x60]) + bytes(39) + b"ipv6 payload"


class Recorder:
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, bytes, int, PacketBuffer]] = []

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.packets.append((remote, local, protocol, pkt))


class Link:
    """An FdEndpoint on one end of a socket pair; ``peer`` plays the kernel side of the device."""

    def __init__(self, mtu: int = 1500, ethernet: bool = False, **kwargs: object) -> None:
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ep = FdEndpoint(ours.detach(), mtu, ethernet, OUR_MAC if ethernet else b"", **kwargs)
        self.rec = Recorder()

    def close(self) -> None:
        self.ep.close()
        self.peer.close()


@pytest.fixture
def link() -> Iterator[Link]:
    lk = Link()
    yield lk
    lk.close()


@pytest.fixture
def eth_link() -> Iterator[Link]:
    lk = Link(ethernet=True)
    yield lk
    lk.close()


def outbound(header: bytes, payload: bytes) -> PacketBuffer:
    pkt = PacketBuffer(reserve=len(header) + 14, data=payload)
    pkt.prepend(len(header))[:] = header
    return pkt


def frame(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    hdr = bytearray(14)
    ethernet.build(hdr, dst, src, ethertype)
    return bytes(hdr) + payload


# --- inbound, driven by hand ----------------------------------------------------------------------

def test_raw_ip_frames_are_delivered_by_version(link: Link) -> None:
    link.ep.attach(link.rec)
    link.peer.send(IPV4_PACKET)
    link.peer.send(IPV6_PACKET)
    assert link.ep.dispatch_available() == 2
    assert [(r, l, p, bytes(pkt.data)) for r, l, p, pkt in link.rec.packets] == [
        (b"", b"", 0x0800, IPV4_PACKET), (b"", b"", 0x86DD, IPV6_PACKET)]
    assert link.rec.packets[0][3].pkt_type == PacketType.HOST
    assert (link.ep.stats.rx_packets.value, link.ep.stats.rx_bytes.value) == (2, len(IPV4_PACKET + IPV6_PACKET))
    assert link.ep.dispatch_available() == 0


def test_not_ip_is_a_counted_drop(link: Link) -> None:
    link.ep.attach(link.rec)
    link.peer.send(b"\x50not ip")
    link.peer.send(IPV4_PACKET)
    assert link.ep.dispatch_available() == 2
    assert [bytes(pkt.data) for *_, pkt in link.rec.packets] == [IPV4_PACKET]
    assert link.ep.stats.rx_malformed.value == 1


def test_reads_are_batched() -> None:
    lk = Link(read_batch=8)
    try:
        lk.ep.attach(lk.rec)
        for _ in range(20):
            lk.peer.send(IPV4_PACKET)
        assert [lk.ep.dispatch_available() for _ in range(4)] == [8, 8, 4, 0]
        assert len(lk.rec.packets) == 20
    finally:
        lk.close()


def test_frames_wait_in_the_fd_while_detached(link: Link) -> None:
    link.peer.send(IPV4_PACKET)
    assert link.ep.dispatch_available() == 0
    link.ep.attach(link.rec)
    assert link.ep.dispatch_available() == 1
    assert len(link.rec.packets) == 1


def test_each_frame_has_its_own_exactly_sized_buffer(link: Link) -> None:
    link.ep.attach(link.rec)
    link.peer.send(IPV4_PACKET)
    link.peer.send(IPV6_PACKET)
    link.ep.dispatch_available()
    first, second = (pkt.data for *_, pkt in link.rec.packets)
    assert bytes(first) == IPV4_PACKET    # not overwritten by the second read
    assert first.obj is not second.obj
    assert len(first.obj) == len(IPV4_PACKET)


def test_frame_larger_than_mtu_is_dropped_and_reading_goes_on() -> None:
    lk = Link(mtu=100)
    try:
        lk.ep.attach(lk.rec)
        lk.peer.send(bytes([0x45]) + bytes(100))    # 101 bytes: truncated by the read
        lk.peer.send(bytes([0x45]) + bytes(99))     # exactly the MTU
        assert lk.ep.dispatch_available() == 2
        assert [len(pkt.data) for *_, pkt in lk.rec.packets] == [100]
        assert lk.ep.stats.rx_too_long.value == 1
    finally:
        lk.close()


def test_dispatcher_exception_is_counted_logged_and_contained(link: Link,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    delivered: list[bytes] = []

    class Faulty:
        def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
            delivered.append(bytes(pkt.data))
            if len(delivered) == 1:
                raise RuntimeError("bug above the link")

    link.ep.attach(Faulty())
    link.peer.send(IPV4_PACKET)
    link.peer.send(IPV6_PACKET)
    with caplog.at_level(logging.ERROR, logger="netsock.link.fdbased"):
        assert link.ep.dispatch_available() == 2
    assert delivered == [IPV4_PACKET, IPV6_PACKET]
    assert link.ep.stats.rx_dispatch_errors.value == 1
    assert "bug above the link" in caplog.text


def test_peer_gone_stops_reading_without_raising(link: Link, caplog: pytest.LogCaptureFixture) -> None:
    link.ep.attach(link.rec)
    link.peer.send(IPV4_PACKET)
    link.peer.close()
    with caplog.at_level(logging.WARNING, logger="netsock.link.fdbased"):
        assert link.ep.dispatch_available() == 1
    assert "end of file" in caplog.text
    with pytest.raises(ErrClosedForSend):
        link.ep.write_packet(b"", 0x0800, outbound(IPV4_PACKET[:20], b""))
    assert link.ep.stats.tx_errors.value == 1


# --- Ethernet -----------------------------------------------------------------------------------

def test_ethernet_needs_a_mac() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b, pytest.raises(ValueError):
        FdEndpoint(a.fileno(), 1500, ethernet=True, close_fd=False)


def test_ethernet_inbound_consumes_header_and_classifies(eth_link: Link) -> None:
    ep = eth_link.ep
    assert ep.max_header_length() == 14
    assert ep.capabilities() & LinkCapabilities.RESOLUTION_REQUIRED
    ep.attach(eth_link.rec)
    kinds = {OUR_MAC: PacketType.HOST, ethernet.BROADCAST: PacketType.BROADCAST,
             b"\x33\x33\x00\x00\x00\x01": PacketType.MULTICAST, b"\x02" + bytes(5): PacketType.OTHERHOST}
    for dst in kinds:
        eth_link.peer.send(frame(dst, PEER_MAC, 0x0806, b"arp"))
    eth_link.peer.send(b"\xff" * 10)   # a runt
    assert ep.dispatch_available() == 5
    assert ep.stats.rx_malformed.value == 1
    assert [(r, l, p, bytes(pkt.data), bytes(pkt.link_header), pkt.pkt_type)
            for r, l, p, pkt in eth_link.rec.packets] == [
        (PEER_MAC, dst, 0x0806, b"arp", frame(dst, PEER_MAC, 0x0806, b""), kind) for dst, kind in kinds.items()]


def test_ethernet_outbound_gets_the_header(eth_link: Link) -> None:
    pkt = outbound(IPV4_PACKET[:20], IPV4_PACKET[20:])
    assert len(pkt.views()) == 2   # header and payload travel separately to writev
    eth_link.ep.write_packet(PEER_MAC, 0x0800, pkt)
    assert eth_link.peer.recv(2000) == frame(PEER_MAC, OUR_MAC, 0x0800, IPV4_PACKET)
    assert (eth_link.ep.stats.tx_packets.value, eth_link.ep.stats.tx_bytes.value) == (1, 14 + len(IPV4_PACKET))


# --- outbound -----------------------------------------------------------------------------------

def test_outbound_frames_arrive_intact(link: Link) -> None:
    link.ep.write_packet(b"", 0x0800, outbound(IPV4_PACKET[:20], IPV4_PACKET[20:]))
    link.ep.write_packet(b"", 0x86DD, outbound(IPV6_PACKET[:40], IPV6_PACKET[40:]))
    assert link.peer.recv(2000) == IPV4_PACKET
    assert link.peer.recv(2000) == IPV6_PACKET


def test_write_packets_sends_all(link: Link) -> None:
    pkts = [outbound(IPV4_PACKET[:20], bytes([i])) for i in range(5)]
    assert link.ep.write_packets(b"", 0x0800, pkts) == 5
    assert [link.peer.recv(2000)[-1] for _ in range(5)] == list(range(5))


def test_larger_than_mtu_is_refused() -> None:
    lk = Link(mtu=100)
    try:
        lk.ep.write_packet(b"", 0x0800, outbound(bytes(20), bytes(80)))
        with pytest.raises(ErrMessageTooLong):
            lk.ep.write_packet(b"", 0x0800, outbound(bytes(20), bytes(81)))
        assert len(lk.peer.recv(2000)) == 100
        assert lk.ep.stats.tx_too_long.value == 1
    finally:
        lk.close()


def test_full_socket_buffer_is_no_buffer_space(link: Link) -> None:
    link.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent = 0
    with pytest.raises(ErrNoBufferSpace):
        for sent in range(100_000):
            link.ep.write_packet(b"", 0x0800, outbound(IPV4_PACKET[:20], bytes(1000)))
    assert sent > 0
    assert link.ep.stats.tx_queue_full.value == 1
    assert link.ep.stats.tx_packets.value == sent
    link.peer.recv(2000)                                 # room again: writes succeed
    link.ep.write_packet(b"", 0x0800, outbound(IPV4_PACKET[:20], b""))


def test_write_packets_stops_at_the_first_refusal(link: Link) -> None:
    link.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    pkts = [outbound(IPV4_PACKET[:20], bytes(1000)) for _ in range(1000)]
    sent = link.ep.write_packets(b"", 0x0800, pkts)
    assert 0 < sent < 1000
    with pytest.raises(ErrNoBufferSpace):
        link.ep.write_packets(b"", 0x0800, pkts[sent:])


# --- close --------------------------------------------------------------------------------------

def test_close_stops_everything_and_closes_the_fd(link: Link) -> None:
    ep = link.ep
    fd = ep.fileno()
    ep.attach(link.rec)
    ep.close()
    ep.close()
    assert not ep.is_attached()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ErrClosedForSend):
        ep.write_packet(b"", 0x0800, outbound(IPV4_PACKET[:20], b""))
    assert ep.dispatch_available() == 0
    assert ep.stats.tx_closed.value == 1


def test_close_can_leave_the_fd_open() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        ep = FdEndpoint(a.fileno(), 1500, ethernet=False, close_fd=False)
        ep.close()
        b.send(b"still open")
        assert a.recv(100) == b"still open"


# --- the gevent hub drives reading --------------------------------------------------------------

def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.001)


def test_hub_watcher_reads_as_frames_arrive(link: Link) -> None:
    link.ep.attach(link.rec)
    for _ in range(150):   # more than one batch
        link.peer.send(IPV4_PACKET)
    wait_until(lambda: len(link.rec.packets) == 150)
    link.peer.send(IPV6_PACKET)
    wait_until(lambda: len(link.rec.packets) == 151)
    assert link.rec.packets[-1][2] == 0x86DD


def test_hub_watcher_stops_on_detach(link: Link) -> None:
    link.ep.attach(link.rec)
    link.peer.send(IPV4_PACKET)
    wait_until(lambda: len(link.rec.packets) == 1)
    link.ep.attach(None)
    link.peer.send(IPV4_PACKET)
    gevent.sleep(0.05)
    assert len(link.rec.packets) == 1
    link.ep.attach(link.rec)
    wait_until(lambda: len(link.rec.packets) == 2)


def test_dispatcher_may_close_the_link_from_the_hub(link: Link) -> None:
    delivered: list[bytes] = []

    class Closer:
        def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
            delivered.append(bytes(pkt.data))
            link.ep.close()

    link.ep.attach(Closer())
    link.peer.send(IPV4_PACKET)
    link.peer.send(IPV6_PACKET)
    wait_until(lambda: delivered)
    gevent.sleep(0.05)
    assert delivered == [IPV4_PACKET]
    # Both frames came off the fd in one batch; the one after the close is dropped, and counted.
    assert link.ep.stats.rx_packets.value == 2
    assert link.ep.stats.rx_not_attached.value == 1
