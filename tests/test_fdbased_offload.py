"""TUN offloads without a TUN: the virtio-net header codec, FdEndpoint reading and writing it over a
socket pair (the peer plays the kernel), software GSO on a plain fd, TCP between two stacks through
either, the fallback to a plain device, and the C batch reader with its buffer pool.

Every endpoint test runs with both implementations: the C extension's batch read and software GSO
(when it was built) and pure Python.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
from collections.abc import Iterator

import gevent
import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from netsock.header.checksum import combine, complete_checksum, pseudo_header_checksum
from netsock.header.gso import segment_tcp, segment_udp
from netsock.link import fdbased, tun
from netsock.link.fdbased import OFFLOADS, UDP_OFFLOADS, FdEndpoint
from netsock.link.gso import (F_DATA_VALID, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, NO_OFFLOAD,
                              VIRTIO_NET_HDR, VIRTIO_NET_HDR_SIZE, gso_header)
from netsock.network.ipv4 import IPv4Protocol
from netsock.scheduler import blocking, wait_for
from netsock.stack import ManualClock, Stack
from netsock.stack.interfaces import LinkCapabilities
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip import (ErrClosedForSend, ErrConnectStarted, ErrMessageTooLong, ErrNoBufferSpace, ErrWouldBlock,
                           FullAddress, Route, ShutdownFlags)
from netsock.transport.tcp import TCPProtocol
from netsock.waiter import EventMask, WaiterQueue

from conftest import checksums_valid, gso_pair

GSO_UDP = 3         # UFO: an offload we never offer
OUR_MAC = b"\x02\x00\xc0\x00\x02\x02"
PEER_MAC = b"\x02\x00\xc0\x00\x02\x01"
MSS = 1448
LAYERS = [pytest.param(IP(src="192.0.2.1", dst="192.0.2.2"), id="v4"),
          pytest.param(IPv6(src="2001:db8::1", dst="2001:db8::2"), id="v6")]
IMPLEMENTATIONS = ["python"] + (["native"] if fdbased._native is not None else [])


def tcp_packet(layer, payload: bytes, **fields: object) -> bytes:
    """A TCP packet with a 32-byte header (timestamps), its checksum computed by scapy."""
    return bytes(layer / TCP(sport=40000, dport=5001, seq=1000, ack=1, flags="A",
                             options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))], **fields)
                 / Raw(payload))


def ip_header_length(packet: bytes) -> int:
    return (packet[0] & 0x0F) * 4 if packet[0] >> 4 == 4 else 40


def addresses(packet: bytes) -> tuple[bytes, bytes]:
    return (packet[12:16], packet[16:20]) if packet[0] >> 4 == 4 else (packet[8:24], packet[24:40])


def partial(packet: bytes, protocol: int = 6, field: int = 16) -> bytearray:
    """``packet`` as the kernel hands it with the checksum left to us: the transport checksum field
    holds the folded pseudo-header sum (over the transport length)."""
    out = bytearray(packet)
    start = ip_header_length(packet)
    src, dst = addresses(packet)
    pseudo = pseudo_header_checksum(protocol, src, dst, len(packet) - start)
    out[start + field:start + field + 2] = pseudo.to_bytes(2, "big")
    return out


def outbound_super_segment(packet: bytes, gso_size: int) -> PacketBuffer:
    """A PacketBuffer as TCP hands a super-segment down: headers prepended, payload by reference,
    the checksum partial."""
    headers_length = ip_header_length(packet) + (packet[ip_header_length(packet) + 12] >> 4) * 4
    headers = partial(packet)[:headers_length]
    pkt = PacketBuffer(headers_length, packet[headers_length:])
    pkt.prepend(headers_length)[:] = headers
    pkt.gso_size = gso_size
    return pkt


def vnet(flags: int = 0, gso_type: int = GSO_NONE, hdr_len: int = 0, gso_size: int = 0, csum_start: int = 0,
         csum_offset: int = 0) -> bytes:
    return VIRTIO_NET_HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


# --- the virtio-net header codec ------------------------------------------------------------------

@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("link_header", [0, 14], ids=["tun", "tap"])
def test_gso_header_describes_the_super_segment(layer, link_header: int) -> None:
    packet = tcp_packet(layer, bytes(20000))
    ip_len = ip_header_length(packet)
    headers = memoryview(bytes(link_header) + packet[:ip_len + 32])
    assert VIRTIO_NET_HDR.unpack(gso_header(headers, link_header, MSS)) == (
        F_NEEDS_CSUM, GSO_TCPV4 if ip_len == 20 else GSO_TCPV6, link_header + ip_len + 32, MSS,
        link_header + ip_len, 16)


def test_the_header_is_the_kernels_legacy_ten_bytes() -> None:
    assert VIRTIO_NET_HDR_SIZE == 10
    assert NO_OFFLOAD == bytes(10)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_partial_checksum_is_completed_as_the_device_would(layer) -> None:
    for packet, protocol, field in ((tcp_packet(layer, os.urandom(1001)), 6, 16),
                                    (bytes(layer / UDP(sport=53, dport=9) / Raw(os.urandom(77))), 17, 6)):
        frame = partial(packet, protocol, field)
        assert frame != packet
        assert complete_checksum(memoryview(frame), ip_header_length(packet), field)
        assert frame == packet      # scapy's checksum, byte for byte


def test_a_completed_checksum_of_zero_is_stored_as_all_ones() -> None:
    """For UDP a zero checksum means "none"; its one's-complement twin verifies the same."""
    datagram = bytearray(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2) / Raw(bytes(2))))
    frame = partial(bytes(datagram), 17, 6)
    # Choose the last two payload bytes so that the sum over the datagram comes to 0xffff.
    total = pseudo_header_checksum(17, bytes(datagram[12:16]), bytes(datagram[16:20]), len(datagram) - 20)
    for i in range(20, len(datagram) - 2, 2):
        if i != 26:
            total = combine(total, int.from_bytes(frame[i:i + 2], "big"))
    frame[-2:] = (0xFFFF - total).to_bytes(2, "big")
    assert complete_checksum(memoryview(frame), 20, 6)
    assert frame[26:28] == b"\xff\xff"
    assert checksums_valid(bytes(frame))


def test_a_checksum_position_outside_the_frame_is_refused() -> None:
    frame = bytearray(tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), b"x"))
    original = bytes(frame)
    assert not complete_checksum(memoryview(frame), len(frame) - 1, 0)
    assert not complete_checksum(memoryview(frame), 20, len(frame))
    assert frame == original


@pytest.mark.parametrize("layer", LAYERS)
def test_our_partial_checksum_completes_to_a_valid_one(layer) -> None:
    """What TCP leaves in a super-segment is exactly what the kernel expects: completed over the
    whole super-segment (local delivery uncut) it verifies, and so does each piece once cut."""
    packet = tcp_packet(layer, os.urandom(10000))
    pkt = outbound_super_segment(packet, MSS)
    frame = bytearray(pkt.to_bytes())
    assert frame != packet
    assert complete_checksum(memoryview(frame), ip_header_length(packet), 16)
    assert frame == packet


# --- FdEndpoint with a virtio-net header over a socket pair ---------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.packets: list[PacketBuffer] = []

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.packets.append(pkt)


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(fdbased, "_native", None)
    return request.param


class Link:
    """A FdEndpoint (``ep``) on one end of a SOCK_SEQPACKET pair; ``peer`` plays the kernel."""

    def __init__(self, vnet_header: bool = True, ethernet: bool = False, **kwargs: object) -> None:
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for sock in (ours, self.peer):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.ep = FdEndpoint(ours.detach(), 1500, ethernet, OUR_MAC if ethernet else b"", vnet_header=vnet_header,
                             **kwargs)
        self.rec = Recorder()
        self.ep.attach(self.rec)

    def received(self) -> list[bytes]:
        """The frames waiting at the peer."""
        self.peer.setblocking(False)
        frames = []
        while True:
            try:
                frames.append(self.peer.recv(1 << 17))
            except BlockingIOError:
                return frames

    def close(self) -> None:
        self.ep.close()
        self.peer.close()


@pytest.fixture
def link(implementation: str) -> Iterator[Link]:
    lk = Link()
    yield lk
    lk.close()


def test_every_fd_link_takes_super_segments() -> None:
    """The kernel cuts them where there is a virtio-net header, the link itself where there is not."""
    with_header, without = Link(), Link(vnet_header=False)
    try:
        assert with_header.ep.vnet_header and with_header.ep.capabilities() & LinkCapabilities.HARDWARE_GSO
        assert not without.ep.vnet_header and without.ep.capabilities() & LinkCapabilities.HARDWARE_GSO
        assert with_header.ep.max_header_length() == 0     # the header travels beside the packet
    finally:
        with_header.close()
        without.close()


@pytest.mark.parametrize("layer", LAYERS)
def test_an_inbound_super_segment_goes_up_whole(link: Link, layer) -> None:
    packet = tcp_packet(layer, os.urandom(60000))
    frame = partial(packet)
    gso_type = GSO_TCPV4 if packet[0] >> 4 == 4 else GSO_TCPV6
    link.peer.send(vnet(F_NEEDS_CSUM, gso_type, ip_header_length(packet) + 32, MSS, ip_header_length(packet), 16)
                   + frame)
    assert link.ep.dispatch_available() == 1
    (pkt,) = link.rec.packets
    assert bytes(pkt.data) == frame                 # partial checksum and all: TCP does not verify it
    assert pkt.gso_size == MSS
    stats = link.ep.stats
    assert (stats.rx_super_segments.value, stats.rx_packets.value, stats.rx_bytes.value) == (
        1, 1, VIRTIO_NET_HDR_SIZE + len(frame))


def test_an_inbound_partial_checksum_stays_partial_until_something_needs_it_whole(link: Link) -> None:
    """As Linux keeps CHECKSUM_PARTIAL: the kernel summed nothing and nothing here needs the sum
    (the transport takes it as checked; forwarding completes it: test_forwarding)."""
    packet = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), b"ack me")
    link.peer.send(vnet(F_NEEDS_CSUM, csum_start=20, csum_offset=16) + partial(packet))
    link.peer.send(vnet() + packet)                  # checksum complete: passed as it is
    assert link.ep.dispatch_available() == 2
    left, whole = link.rec.packets
    assert (bytes(left.data), left.csum_offset) == (bytes(partial(packet)), 16)
    assert (bytes(whole.data), whole.csum_offset) == (packet, 0)
    assert complete_checksum(left.data, 20, left.csum_offset) and bytes(left.data) == packet
    assert [pkt.gso_size for pkt in link.rec.packets] == [0, 0]


def test_a_partial_checksum_anywhere_but_behind_the_ip_header_is_completed_at_once(link: Link) -> None:
    """``csum_offset`` says where the field is in the transport header behind the IP header; a sum
    starting anywhere else is done here, as the device would have done it."""
    packet = bytes(IP(src="192.0.2.1", dst="192.0.2.2", options=[IPOption_RR()]) / TCP(sport=1, dport=2)
                   / Raw(b"with options"))
    frame = partial(packet)
    link.peer.send(vnet(F_NEEDS_CSUM, csum_start=24, csum_offset=16) + frame)     # behind the 24-byte header
    link.peer.send(vnet(F_NEEDS_CSUM, csum_start=22, csum_offset=18) + frame)     # the same field, summed from 22
    assert link.ep.dispatch_available() == 2
    behind, elsewhere = link.rec.packets
    assert (bytes(behind.data), behind.csum_offset) == (bytes(frame), 16)
    assert elsewhere.csum_offset == 0 and elsewhere.checksum_verified and bytes(elsewhere.data) != bytes(frame)


def test_only_checksums_the_link_completed_or_the_kernel_checked_are_marked_verified(link: Link) -> None:
    """A partial checksum is the kernel's own work and F_DATA_VALID its word: TCP and UDP need not sum
    those packets. A plain frame and a super-segment are not marked."""
    packet = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), b"ack me")
    link.peer.send(vnet(F_NEEDS_CSUM, csum_start=20, csum_offset=16) + partial(packet))
    link.peer.send(vnet(F_DATA_VALID) + packet)
    link.peer.send(vnet() + packet)
    link.peer.send(vnet(F_NEEDS_CSUM, GSO_TCPV4, 52, MSS, 20, 16) + partial(packet))
    assert link.ep.dispatch_available() == 4
    assert [pkt.checksum_verified for pkt in link.rec.packets] == [True, True, False, False]


def test_headers_asking_for_what_we_did_not_offer_are_counted_drops(link: Link) -> None:
    packet = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), bytes(3000))
    link.peer.send(vnet(F_NEEDS_CSUM, GSO_UDP, 28, MSS, 20, 6) + packet)           # UFO
    link.peer.send(vnet(F_NEEDS_CSUM, GSO_TCPV4, 52, 0, 20, 16) + packet)           # no segment size
    link.peer.send(vnet(F_NEEDS_CSUM, csum_start=20, csum_offset=len(packet)) + packet)   # outside the frame
    link.peer.send(b"\x01" * (VIRTIO_NET_HDR_SIZE - 1))                             # not even a header
    assert link.ep.dispatch_available() == 4
    assert link.rec.packets == []
    assert (link.ep.stats.rx_bad_vnet_header.value, link.ep.stats.rx_malformed.value) == (3, 1)


@pytest.mark.parametrize("layer", LAYERS)
def test_an_inbound_udp_super_datagram_is_cut_into_its_datagrams(implementation: str, layer) -> None:
    """The kernel's UDP GSO (UDP_SEGMENT), handed over whole where we offered USO: the stack's UDP
    takes datagrams, so the link cuts it, each datagram with a full checksum of its own and its place in
    the super-datagram (for a UDP_GRO socket to join them again)."""
    link = Link(udp_gso=True)
    try:
        payload = os.urandom(5000)
        packet = bytes(layer / UDP(sport=4000, dport=5000) / Raw(payload))
        start = ip_header_length(packet)
        link.peer.send(vnet(F_NEEDS_CSUM, GSO_UDP_L4, start + 8, 1200, start, 6) + partial(packet, 17, 6))
        assert link.ep.dispatch_available() == 1
        datagrams = [bytes(pkt.data) for pkt in link.rec.packets]
        assert datagrams == segment_udp(packet, 1200) and len(datagrams) == 5
        assert all(pkt.checksum_verified for pkt in link.rec.packets)
        keys = {pkt.gro[0] for pkt in link.rec.packets}
        assert len(keys) == 1 and [pkt.gro[1:] for pkt in link.rec.packets] == [(1200, i) for i in range(5)]
        stats = link.ep.stats
        assert (stats.rx_super_datagrams.value, stats.rx_packets.value) == (1, 1)
    finally:
        link.close()


def test_a_udp_super_datagram_where_we_offered_no_uso_is_a_counted_drop(link: Link) -> None:
    packet = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4000, dport=5000) / Raw(bytes(3000)))
    link.peer.send(vnet(F_NEEDS_CSUM, GSO_UDP_L4, 28, 1200, 20, 6) + partial(packet, 17, 6))
    assert link.ep.dispatch_available() == 1
    assert link.rec.packets == [] and link.ep.stats.rx_bad_vnet_header.value == 1


@pytest.mark.parametrize("layer", LAYERS)
def test_an_outbound_udp_super_datagram_asks_the_kernel_to_cut_it(implementation: str, layer) -> None:
    link = Link(udp_gso=True)
    try:
        assert link.ep.capabilities() & LinkCapabilities.HARDWARE_GSO_UDP
        packet = bytes(layer / UDP(sport=4000, dport=5000) / Raw(os.urandom(6000)))
        start = ip_header_length(packet)
        pkt = PacketBuffer(start + 8, packet[start + 8:])
        pkt.prepend(start + 8)[:] = partial(packet, 17, 6)[:start + 8]
        pkt.gso_size = 1200
        link.ep.write_packet(b"", 0x0800 if layer.version == 4 else 0x86DD, pkt)
        frame = link.peer.recv(1 << 17)
        assert VIRTIO_NET_HDR.unpack(frame[:VIRTIO_NET_HDR_SIZE]) == (F_NEEDS_CSUM, GSO_UDP_L4, start + 8, 1200,
                                                                      start, 6)
        assert frame[VIRTIO_NET_HDR_SIZE:] == bytes(partial(packet, 17, 6))
        stats = link.ep.stats
        assert (stats.tx_super_datagrams.value, stats.tx_super_segments.value, stats.tx_packets.value) == (1, 0, 1)
    finally:
        link.close()


def test_an_inbound_frame_over_64k_is_too_long(link: Link) -> None:
    link.peer.send(vnet() + bytes([0x60]) + bytes(40 + 65535))      # one byte past the largest
    link.peer.send(vnet() + tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), b"fine"))
    assert link.ep.dispatch_available() == 2
    assert link.ep.stats.rx_too_long.value == 1
    assert len(link.rec.packets) == 1


def test_large_frames_keep_their_buffers_as_reading_goes_on(link: Link) -> None:
    """The C reader hands a large frame up in its ring block and puts a fresh one in its place:
    frames held by the stack must never be overwritten by later reads, however many."""
    payloads = [bytes([i]) * 30000 for i in range(40)]          # more than the ring holds
    for payload in payloads:
        link.peer.send(vnet() + tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), payload))
        assert link.ep.dispatch_available() == 1
    assert [bytes(pkt.data[-30000:]) for pkt in link.rec.packets] == payloads


def test_small_frames_are_copies_sized_to_the_frame(link: Link) -> None:
    packet = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), b"small")
    link.peer.send(vnet() + packet)
    link.peer.send(vnet() + packet)
    assert link.ep.dispatch_available() == 2
    first, second = (pkt.data for pkt in link.rec.packets)
    assert first.obj is not second.obj
    assert len(first.obj) == VIRTIO_NET_HDR_SIZE + len(packet)


@pytest.mark.parametrize("layer", LAYERS)
def test_an_outbound_super_segment_asks_the_kernel_to_cut_it(link: Link, layer) -> None:
    packet = tcp_packet(layer, os.urandom(20000))
    pkt = outbound_super_segment(packet, MSS)
    expected_header = gso_header(pkt.headers(), 0, MSS)
    link.ep.write_packet(b"", 0x0800 if layer.version == 4 else 0x86DD, pkt)
    frame = link.peer.recv(1 << 17)
    assert frame[:VIRTIO_NET_HDR_SIZE] == expected_header
    assert frame[VIRTIO_NET_HDR_SIZE:] == bytes(partial(packet))
    stats = link.ep.stats
    assert (stats.tx_super_segments.value, stats.tx_packets.value, stats.tx_bytes.value) == (1, 1, len(frame))


def test_an_outbound_packet_needs_nothing_of_the_kernel(link: Link) -> None:
    packet = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), b"hello")
    pkt = PacketBuffer(52, packet[52:])
    pkt.prepend(52)[:] = packet[:52]
    link.ep.write_packet(b"", 0x0800, pkt)
    assert link.peer.recv(2000) == NO_OFFLOAD + packet
    assert link.ep.stats.tx_super_segments.value == 0


def test_only_super_segments_may_exceed_the_mtu(link: Link) -> None:
    with pytest.raises(ErrMessageTooLong):
        link.ep.write_packet(b"", 0x0800, PacketBuffer(0, bytes([0x45]) + bytes(1500)))
    assert link.ep.stats.tx_too_long.value == 1


# --- software GSO: a plain fd cuts super-segments itself ------------------------------------------

@pytest.fixture
def plain(implementation: str) -> Iterator[Link]:
    lk = Link(vnet_header=False)
    yield lk
    lk.close()


def mss(packet: bytes) -> int:
    """The segment size TCP would use for ``packet``'s headers at MTU 1500."""
    return 1500 - ip_header_length(packet) - (packet[ip_header_length(packet) + 12] >> 4) * 4


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("ethernet", [False, True], ids=["tun", "tap"])
def test_a_plain_fd_writes_a_super_segment_as_its_wire_segments(implementation: str, layer, ethernet: bool) -> None:
    lk = Link(vnet_header=False, ethernet=ethernet)
    try:
        packet = tcp_packet(layer, os.urandom(20001))
        protocol = 0x0800 if layer.version == 4 else 0x86DD
        lk.ep.write_packet(PEER_MAC, protocol, outbound_super_segment(packet, mss(packet)))
        frames = lk.received()
    finally:
        lk.close()
    link_header = PEER_MAC + OUR_MAC + protocol.to_bytes(2, "big") if ethernet else b""
    assert frames == [link_header + piece for piece in segment_tcp(packet, mss(packet))]
    assert len(frames) == -(-20001 // mss(packet))
    assert all(len(frame) == len(link_header) + 1500 for frame in frames[:-1])
    if layer.version == 4:
        assert all(checksums_valid(frame[len(link_header):]) for frame in frames)
    stats = lk.ep.stats
    assert (stats.tx_segmented.value, stats.tx_packets.value, stats.tx_bytes.value, stats.tx_super_segments.value) \
        == (1, len(frames), sum(map(len, frames)), 0)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_plain_fd_coalesces_what_it_reads_at_once(plain: Link, layer) -> None:
    """GRO: the wire segments a batch brings go up as the super-segment they were cut from."""
    packet = tcp_packet(layer, os.urandom(20001))
    pieces = segment_tcp(packet, mss(packet))
    for piece in pieces:
        plain.peer.send(piece)
    assert plain.ep.dispatch_available() == len(pieces)
    (pkt,) = plain.rec.packets
    assert pkt.gso_size == mss(packet) and segment_tcp(bytes(pkt.data), pkt.gso_size) == pieces
    assert plain.ep.stats.rx_packets.value == len(pieces)


def test_a_super_segment_held_in_one_buffer_is_cut_the_same(plain: Link) -> None:
    """Headers need not be prepended apart from the payload: the cut finds them wherever they are."""
    packet = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), os.urandom(5000))
    pkt = PacketBuffer.inbound(partial(packet))
    pkt.gso_size = MSS
    plain.ep.write_packet(b"", 0x0800, pkt)
    assert plain.received() == segment_tcp(packet, MSS)


def test_a_super_segment_that_is_not_one_is_a_counted_drop(plain: Link) -> None:
    tcp = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), bytes(5000))
    udp = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=53, dport=9) / Raw(bytes(5000)))
    for packet, gso_size in ((udp, MSS), (b"\x50" + tcp[1:], MSS), (tcp[:30], MSS), (tcp, -MSS)):
        pkt = PacketBuffer.inbound(packet)
        pkt.gso_size = gso_size
        plain.ep.write_packet(b"", 0x0800, pkt)         # no exception: a drop, as on a wire
    stats = plain.ep.stats
    assert (stats.tx_malformed.value, stats.tx_packets.value, stats.tx_segmented.value) == (4, 0, 0)
    assert plain.received() == []


def test_segments_over_the_mtu_are_refused(plain: Link) -> None:
    packet = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), bytes(5000))
    with pytest.raises(ErrMessageTooLong):
        plain.ep.write_packet(b"", 0x0800, outbound_super_segment(packet, mss(packet) + 1))
    assert (plain.ep.stats.tx_too_long.value, plain.ep.stats.tx_packets.value) == (1, 0)
    assert plain.received() == []


def test_a_full_fd_drops_the_rest_of_a_super_segment_counting_each(plain: Link) -> None:
    """What went out went out: the pieces a full fd refused are counted, and the error raised only
    when none went out, as for a batch (``write_packets``)."""
    ours = socket.socket(fileno=plain.ep.fileno())
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)     # room for a few frames
    ours.detach()
    packet = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), os.urandom(60000))
    pieces = segment_tcp(packet, MSS)
    plain.ep.write_packet(b"", 0x0800, outbound_super_segment(packet, MSS))
    stats = plain.ep.stats
    sent = stats.tx_packets.value
    assert 0 < sent < len(pieces)
    assert stats.tx_queue_full.value == len(pieces) - sent
    with pytest.raises(ErrNoBufferSpace):                          # still full: nothing goes out
        plain.ep.write_packet(b"", 0x0800, outbound_super_segment(packet, MSS))
    assert (stats.tx_packets.value, stats.tx_queue_full.value) == (sent, 2 * len(pieces) - sent)
    assert plain.received() == pieces[:sent]
    assert stats.tx_segmented.value == 2


def test_a_gone_peer_fails_every_piece(plain: Link) -> None:
    plain.peer.close()
    packet = tcp_packet(IP(src="192.0.2.1", dst="192.0.2.2"), bytes(5000))
    with pytest.raises(ErrClosedForSend):
        plain.ep.write_packet(b"", 0x0800, outbound_super_segment(packet, MSS))
    assert (plain.ep.stats.tx_errors.value, plain.ep.stats.tx_packets.value) == (len(segment_tcp(packet, MSS)), 0)


# --- both readers, plain fd -----------------------------------------------------------------------

def test_reader_batches_drains_and_counts(implementation: str) -> None:
    lk = Link(vnet_header=False, read_batch=8)
    try:
        for i in range(20):
            lk.peer.send(bytes([0x45]) + bytes([i]) * 99)
        lk.peer.send(bytes([0x45]) + bytes(1500))        # one byte more than the MTU
        assert [lk.ep.dispatch_available() for _ in range(4)] == [8, 8, 5, 0]
        assert [pkt.data[1] for pkt in lk.rec.packets] == list(range(20))
        stats = lk.ep.stats
        assert (stats.rx_packets.value, stats.rx_bytes.value, stats.rx_too_long.value) == (21, 2000 + 1501, 1)
    finally:
        lk.close()


def test_reader_stops_at_end_of_file(implementation: str, caplog: pytest.LogCaptureFixture) -> None:
    lk = Link(vnet_header=False)
    try:
        lk.peer.send(bytes([0x45]) + bytes(19))
        lk.peer.close()
        with caplog.at_level(logging.WARNING, logger="netsock.link.fdbased"):
            assert lk.ep.dispatch_available() == 1
        assert "end of file" in caplog.text
        assert len(lk.rec.packets) == 1
    finally:
        lk.ep.close()


# --- TCP between two stacks through virtio-net headers or software GSO ----------------------------

def two_stacks(vnet_header: bool) -> tuple[list[Stack], list[FdEndpoint]]:
    """Two stacks, 192.0.2.1 and .2, each on a FdEndpoint, joined by a socket pair. With the header,
    what one writes (super-segments with a GSO header) the other reads as the kernel would hand it;
    without, one writes the wire segments it cut and the other reads them."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stacks, links = [], []
    for host, sock in ((1, a), (2, b)):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        link = FdEndpoint(sock.detach(), 1500, False, vnet_header=vnet_header)
        stack = Stack([IPv4Protocol], [TCPProtocol])
        stack.create_nic(1, link)
        stack.add_address(1, 0x0800, f"192.0.2.{host}/24")
        stack.set_route_table([Route.parse("0.0.0.0/0", 1)])
        stacks.append(stack)
        links.append(link)
    return stacks, links


@pytest.mark.parametrize("vnet_header", [True, False], ids=["virtio-net header", "software GSO"])
def test_tcp_through_fd_links_delivers_every_byte(implementation: str, vnet_header: bool) -> None:
    stacks, links = two_stacks(vnet_header)
    data = os.urandom(4 << 20)
    try:
        queue = WaiterQueue()
        listener = stacks[0].new_endpoint(TCPProtocol.number, 0x0800, queue)
        listener.bind(FullAddress(0, b"", 5001))
        listener.listen(1)

        def receive() -> bytes:
            wait_for(queue, EventMask.IN, lambda: bool(listener.readiness(EventMask.IN)))
            ep, ep_queue = listener.accept()
            chunks = []
            while chunk := blocking(ep, ep_queue, EventMask.IN, lambda: ep.read(1 << 20)):
                chunks.append(bytes(chunk))
            ep.close()
            return b"".join(chunks)

        receiving = gevent.spawn(receive)
        sender_queue = WaiterQueue()
        sender = stacks[1].new_endpoint(TCPProtocol.number, 0x0800, sender_queue)
        try:
            sender.connect(FullAddress(0, bytes([192, 0, 2, 1]), 5001))
        except ErrConnectStarted:
            wait_for(sender_queue, EventMask.OUT, lambda: bool(sender.readiness(EventMask.OUT)))
        view = memoryview(data)
        while view:
            wait_for(sender_queue, EventMask.OUT, lambda: bool(sender.readiness(EventMask.OUT)))
            try:
                view = view[sender.write(view[:65536]):]
            except ErrWouldBlock:
                pass
        sender.shutdown(ShutdownFlags.WRITE)
        received = receiving.get(timeout=60)
        sender.close()
    finally:
        for stack in stacks:
            stack.close()
        for link in links:
            link.close()
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
    sender_stats, receiver_stats = links[1].stats, links[0].stats
    if vnet_header:
        assert sender_stats.tx_super_segments.value > 0
        # What the reading link merged (GRO, native only) came up as fewer, larger super-segments.
        assert receiver_stats.rx_super_segments.value + receiver_stats.rx_merged_super_segments.value == \
            sender_stats.tx_super_segments.value
        assert (receiver_stats.rx_merged_super_segments.value > 0) == (implementation == "native")
    else:
        assert sender_stats.tx_segmented.value > 0
        assert sender_stats.tx_packets.value > 3 * sender_stats.tx_segmented.value
        assert receiver_stats.rx_super_segments.value == sender_stats.tx_malformed.value == 0
    assert stacks[0].stats().tcp.checksum_errors.value == 0


def test_tcp_leaves_the_pseudo_header_sum_in_a_super_segment() -> None:
    """A GSO link gets super-segments whose checksum field is the folded pseudo-header sum over
    the super-segment's TCP length (Linux's CHECKSUM_PARTIAL), and single segments checksummed."""
    clock = ManualClock()
    stacks, links = gso_pair(clock)
    written = []
    write = links[0].write_packet
    links[0].write_packet = lambda remote, protocol, pkt: (written.append((pkt.gso_size, pkt.to_bytes())),
                                                           write(remote, protocol, pkt))

    def pump() -> None:
        for _ in range(1000):
            moved = False
            for src, dst in ((links[0], links[1]), (links[1], links[0])):
                while (info := src.read()) is not None:
                    dst.inject(info.protocol, info.data)
                    moved = True
            clock.advance(0.001)
            if not moved:
                return

    listener = stacks[1].new_endpoint(TCPProtocol.number, 0x0800, WaiterQueue())
    listener.bind(FullAddress(0, b"", 5001))
    listener.listen(1)
    client = stacks[0].new_endpoint(TCPProtocol.number, 0x0800, WaiterQueue())
    try:
        client.connect(FullAddress(0, bytes([192, 0, 2, 2]), 5001))
    except ErrConnectStarted:
        pass
    pump()
    client.write(os.urandom(200_000))
    pump()
    super_segments = [raw for size, raw in written if size]
    assert super_segments
    for raw in super_segments:
        tcp_length = len(raw) - 20
        expected = pseudo_header_checksum(6, raw[12:16], raw[16:20], tcp_length)
        assert int.from_bytes(raw[36:38], "big") == expected
    assert all(checksums_valid(raw) for size, raw in written if not size)


# --- opening a TUN: offloads by default, a plain device when refused or declined -----------------

class FakeTun:
    """tun's setup calls, recorded; each open hands out one end of a fresh socket pair."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, refuse_header: int = 0, refuse_offloads: int = 0,
                 refuse_only: int = 0) -> None:
        self.opened: list[tuple[int, bool]] = []
        self.offloads: list[tuple[int, int, int | None]] = []
        self.peers: list[socket.socket] = []
        self.refuse_header = refuse_header
        self.refuse_offloads = refuse_offloads
        self.refuse_only = refuse_only      # refuse only offload sets with one of these bits (0: any)
        monkeypatch.setattr(tun, "open_device", self.open_device)
        monkeypatch.setattr(tun, "set_offloads", self.set_offloads)
        monkeypatch.setattr(tun, "device_mtu", lambda name: 1500)

    def open_device(self, name: str, tap: bool | None = None, vnet_header: bool = False) -> tuple[int, bool]:
        if vnet_header and self.refuse_header:
            raise OSError(self.refuse_header, os.strerror(self.refuse_header))
        ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.peers.append(peer)
        fd = ours.detach()
        self.opened.append((fd, vnet_header))
        return fd, False

    def set_offloads(self, fd: int, offloads: int, vnet_header_size: int | None = None) -> None:
        self.offloads.append((fd, offloads, vnet_header_size))
        if self.refuse_offloads and (not self.refuse_only or offloads & self.refuse_only):
            raise OSError(self.refuse_offloads, os.strerror(self.refuse_offloads))

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


def test_open_tun_turns_the_offloads_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETSOCK_OFFLOAD", raising=False)
    fake = FakeTun(monkeypatch)
    ep = FdEndpoint.open_tun("tun0")
    try:
        ((fd, with_header),) = fake.opened
        assert with_header and ep.fileno() == fd
        assert fake.offloads == [(fd, OFFLOADS | UDP_OFFLOADS, VIRTIO_NET_HDR_SIZE)]
        assert OFFLOADS == tun.TUN_F_CSUM | tun.TUN_F_TSO4 | tun.TUN_F_TSO6
        assert UDP_OFFLOADS == tun.TUN_F_USO4 | tun.TUN_F_USO6
        assert ep.vnet_header and ep.capabilities() & LinkCapabilities.HARDWARE_GSO
        assert ep.capabilities() & LinkCapabilities.HARDWARE_GSO_UDP
    finally:
        ep.close()
        fake.close()


def test_a_kernel_without_udp_offloads_still_gets_the_tcp_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETSOCK_OFFLOAD", raising=False)
    fake = FakeTun(monkeypatch, refuse_offloads=errno.EINVAL, refuse_only=UDP_OFFLOADS)
    ep = FdEndpoint.open_tun("tun0")
    try:
        ((fd, _),) = fake.opened
        assert fake.offloads == [(fd, OFFLOADS | UDP_OFFLOADS, VIRTIO_NET_HDR_SIZE),
                                 (fd, OFFLOADS, VIRTIO_NET_HDR_SIZE)]
        assert ep.vnet_header and not ep.capabilities() & LinkCapabilities.HARDWARE_GSO_UDP
    finally:
        ep.close()
        fake.close()


@pytest.mark.parametrize("refusal", ["header", "offloads"])
def test_open_tun_falls_back_to_a_plain_device_when_the_kernel_refuses(monkeypatch: pytest.MonkeyPatch,
                                                                       refusal: str) -> None:
    monkeypatch.delenv("NETSOCK_OFFLOAD", raising=False)
    fake = FakeTun(monkeypatch, **{f"refuse_{refusal}": errno.EINVAL})
    ep = FdEndpoint.open_tun("tun0")
    try:
        assert [header for _, header in fake.opened] == ([False] if refusal == "header" else [True, False])
        assert ep.fileno() == fake.opened[-1][0]
        if refusal == "offloads":                       # the refused fd was closed, not leaked:
            fake.peers[0].setblocking(False)
            assert fake.peers[0].recv(1) == b""         # its peer sees the end of file
        assert not ep.vnet_header and ep.capabilities() & LinkCapabilities.HARDWARE_GSO    # software GSO
    finally:
        ep.close()
        fake.close()


def test_a_busy_device_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETSOCK_OFFLOAD", raising=False)
    fake = FakeTun(monkeypatch, refuse_header=errno.EBUSY)
    with pytest.raises(OSError) as raised:
        FdEndpoint.open_tun("tun0")
    assert raised.value.errno == errno.EBUSY
    assert fake.opened == []


@pytest.mark.parametrize("how", ["parameter", "environment"])
def test_offloads_can_be_declined(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "environment":
        monkeypatch.setenv("NETSOCK_OFFLOAD", "0")
    fake = FakeTun(monkeypatch)
    ep = FdEndpoint.open_tun("tun0", offload=False) if how == "parameter" else FdEndpoint.open_tun("tun0")
    try:
        assert [header for _, header in fake.opened] == [False]
        assert fake.offloads == []
        assert not ep.vnet_header
    finally:
        ep.close()
        fake.close()


# --- the C side: buffer pool and batch read -------------------------------------------------------

if fdbased._native is not None:
    ffi, lib = fdbased._native.ffi, fdbased._native.lib

    def test_pool_reuses_returned_blocks() -> None:
        pool = lib.ns_pool_new(4096, 2)
        try:
            blocks = [lib.ns_pool_get(pool) for _ in range(3)]
            addresses = {int(ffi.cast("uintptr_t", block)) for block in blocks}
            for block in blocks:
                lib.ns_pool_put(block)           # the third is freed: only two are kept idle
            again = [lib.ns_pool_get(pool) for _ in range(2)]
            assert {int(ffi.cast("uintptr_t", block)) for block in again} <= addresses
            for block in again:
                lib.ns_pool_put(block)
        finally:
            lib.ns_pool_close(pool)

    def test_pool_outlives_its_owner_while_blocks_are_in_use() -> None:
        pool = lib.ns_pool_new(4096, 4)
        block = lib.ns_pool_get(pool)
        lib.ns_pool_close(pool)
        ffi.buffer(block, 4096)[:] = b"\xab" * 4096     # still ours to use
        lib.ns_pool_put(block)                          # the last one back frees the pool

    def test_batch_read_reports_why_it_stopped() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b:
            a.setblocking(False)
            buffers = [ffi.new("uint8_t[]", 100) for _ in range(4)]
            pointers = ffi.new("uint8_t *[]", buffers)
            lengths = ffi.new("uint32_t[]", 4)
            error = ffi.new("int *")
            for message in (b"one", b"two", b"three"):
                b.send(message)
            assert lib.ns_read_batch(a.fileno(), pointers, 2, 100, lengths, error) == 2
            assert (list(lengths[0:2]), error[0]) == ([3, 3], 0)
            assert lib.ns_read_batch(a.fileno(), pointers, 4, 100, lengths, error) == 1
            assert (lengths[0], ffi.buffer(buffers[0], 5)[:], error[0]) == (5, b"three", errno.EAGAIN)
            b.close()
            assert lib.ns_read_batch(a.fileno(), pointers, 4, 100, lengths, error) == 0
            assert error[0] == 0                        # end of file
            assert lib.ns_read_batch(-1, pointers, 4, 100, lengths, error) == 0
            assert error[0] == errno.EBADF


# --- BIG TCP --------------------------------------------------------------------------------------

@pytest.mark.parametrize("release, big", [("6.3.0", True), ("6.18.44-fc-v595", True), ("7.0.1", True),
                                          ("6.2.16-generic", False), ("5.15.0-91-generic", False),
                                          ("unknown", False)])
def test_ipv4_big_tcp_is_taken_from_linux_6_3(release: str, big: bool) -> None:
    assert tun.kernel_has_big_tcp_ipv4(release) is big


def test_super_segments_beyond_64_kb_and_in_pieces_only_with_a_vnet_header() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        with pytest.raises(ValueError, match="gso_ipv4_max_size"):
            FdEndpoint(a.fileno(), 1500, ethernet=False, close_fd=False,
                       gso_ipv4_max_size=fdbased.BIG_TCP_GSO_MAX_SIZE)
        with pytest.raises(ValueError, match="gso_ipv4_max_size"):
            FdEndpoint(a.fileno(), 1500, ethernet=False, close_fd=False, vnet_header=True, gso_ipv4_max_size=1 << 20)
        software = FdEndpoint(a.fileno(), 1500, ethernet=False, close_fd=False)
        assert not software.capabilities() & LinkCapabilities.SCATTER_GATHER
        software.close()
        plain = FdEndpoint(a.fileno(), 1500, ethernet=False, close_fd=False, vnet_header=True)
        big = FdEndpoint(b.fileno(), 1500, ethernet=False, close_fd=False, vnet_header=True,
                         gso_ipv4_max_size=fdbased.BIG_TCP_GSO_MAX_SIZE)
        try:
            # One writev takes a payload in pieces behind the virtio-net header; the software cut needs it whole.
            assert plain.capabilities() & LinkCapabilities.SCATTER_GATHER
            assert plain.gso_max_size(0x0800) == plain.gso_max_size(0x86DD) == 65536
            assert big.gso_max_size(0x0800) == fdbased.BIG_TCP_GSO_MAX_SIZE
            assert big.gso_max_size(0x86DD) == 65536          # IPv6 BIG TCP needs a jumbo option: not used
        finally:
            plain.close()
            big.close()


def test_a_big_tcp_super_segment_the_kernel_has_no_room_for_goes_as_64_kb_ones() -> None:
    """An fd that refuses a packet that large (here: a datagram socket with a small send buffer,
    EMSGSIZE; a TUN under fragmented memory says ENOBUFS) gets it as 64 KB super-segments that cut
    into the very wire segments the whole would have made."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 150_000)
    payload = os.urandom(300_000)
    headers = bytearray(bytes(IP(src="192.0.2.2", dst="192.0.2.1", len=0) / TCP(sport=1, dport=2, flags="PA")))
    headers[36:38] = pseudo_header_checksum(6, bytes([192, 0, 2, 2]), bytes([192, 0, 2, 1]), 20 + len(payload)
                                            ).to_bytes(2, "big")
    with a, b:
        link = FdEndpoint(a.fileno(), 1500, ethernet=False, close_fd=False, vnet_header=True,
                          gso_ipv4_max_size=fdbased.BIG_TCP_GSO_MAX_SIZE)
        pkt = PacketBuffer(len(headers), [payload[:100_000], payload[100_000:]])
        pkt.prepend(len(headers))[:] = headers
        pkt.network_protocol, pkt.gso_size = 0x0800, 1448
        link.write_packet(b"", 0x0800, pkt)
        link.close()
        frames = []
        b.setblocking(False)
        while True:
            try:
                frames.append(b.recv(1 << 17))
            except BlockingIOError:
                break
    assert link.stats.tx_split.value == 1 and link.stats.tx_super_segments.value == len(frames) == 5
    whole = bytes(headers) + payload
    pieces = [frame[VIRTIO_NET_HDR_SIZE:] for frame in frames]
    assert all(VIRTIO_NET_HDR.unpack_from(frame)[1] == GSO_TCPV4 and len(frame) - VIRTIO_NET_HDR_SIZE <= 65535
               for frame in frames)
    assert [wire for piece in pieces for wire in segment_tcp(piece, 1448)] == segment_tcp(whole, 1448)


def test_super_segments_beyond_64_kb_go_only_to_the_kernels_own_addresses() -> None:
    """Asked of this namespace's route table: 127.0.0.1 and ::1 are the kernel's own, a documentation
    address is not (it would be forwarded, or is unreachable)."""
    kernel = tun.KernelDestinations()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        link = FdEndpoint(a.fileno(), 1500, ethernet=False, close_fd=False, vnet_header=True,
                          gso_ipv4_max_size=fdbased.BIG_TCP_GSO_MAX_SIZE, kernel_destinations=kernel)
        try:
            assert kernel.is_local(socket.inet_pton(socket.AF_INET6, "::1"))
            assert link.gso_max_size(0x0800, bytes([127, 0, 0, 1])) == fdbased.BIG_TCP_GSO_MAX_SIZE
            assert link.gso_max_size(0x0800, bytes([192, 0, 2, 77])) == 65536
            assert link.gso_max_size(0x0800) == 65536                 # (no destination: no answer)
        finally:
            link.close()
    assert not kernel.is_local(bytes([127, 0, 0, 2]))                 # closed with the link: cannot say


@pytest.mark.parametrize("layer", LAYERS)
def test_a_batchs_datagrams_of_one_flow_are_marked_as_one_super_datagram(plain: Link, layer) -> None:
    """UDP's GRO (Linux's udp_gro_receive): of a batch read at once, consecutive datagrams of a flow as long as
    the first (a shorter last ends the run) are marked as pieces of one super-datagram; another flow, another
    size or a gap starts afresh; a datagram alone is left unmarked. Only while a UDP_GRO socket is above."""
    sizes = [(4000, 1200), (4000, 1200), (4000, 700), (4000, 1200), (4001, 1200), (4001, 1200), (4000, 1200)]
    unmarked = []
    for udp_gro in (False, True):
        plain.rec.udp_gro = udp_gro
        unmarked, plain.rec.packets = plain.rec.packets, []
        for port, size in sizes:
            plain.peer.send(bytes(layer / UDP(sport=port, dport=5000) / Raw(bytes(size))))
        assert plain.ep.dispatch_available() == len(sizes)
    assert [pkt.gro for pkt in unmarked] == [None] * len(sizes)
    marks = [pkt.gro for pkt in plain.rec.packets]
    assert [mark[1:] if mark else None for mark in marks] == [(1200, 0), (1200, 1), (1200, 2), None, (1200, 0),
                                                              (1200, 1), None]
    assert marks[0][0] is marks[2][0] is not marks[4][0]
    assert [bytes(pkt.data) for pkt in plain.rec.packets] == [
        bytes(layer / UDP(sport=port, dport=5000) / Raw(bytes(size))) for port, size in sizes]
