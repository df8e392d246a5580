"""SnifferEndpoint and PcapWriter: captures read back by scapy, byte for byte."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP
from scapy.utils import RawPcapReader, rdpcap

from netsock.header import ethernet
from netsock.link.channel import ChannelEndpoint
from netsock.link.loopback import LoopbackEndpoint
from netsock.link.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter
from netsock.link.sniffer import SnifferEndpoint
from netsock.stack.packet_buffer import PacketBuffer

OUR_MAC = b"\x02\x00\xc0\x00\x02\x02"
PEER_MAC = b"\x02\x00\xc0\x00\x02\x01"
UDP_PACKET = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1000, dport=7) / b"hello")
TCP_PACKET = bytes(IP(src="192.0.2.2", dst="192.0.2.1") / TCP(sport=7, dport=1000, flags="SA"))
ICMP_PACKET = bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(type=0) / b"ping")
IPV6_PACKET = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2) / b"six")
ARP_REQUEST = bytes(ARP(op=1, hwsrc="02:00:c0:00:02:01", psrc="192.0.2.1", pdst="192.0.2.2"))


class Recorder:
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, bytes, int, bytes]] = []

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.packets.append((remote, local, protocol, bytes(pkt.data)))


def outbound(packet: bytes, header_length: int = 20) -> PacketBuffer:
    """The packet as the network layer hands it down: headers prepended in front of the payload."""
    pkt = PacketBuffer(reserve=header_length + 14, data=packet[header_length:])
    pkt.prepend(header_length)[:] = packet[:header_length]
    return pkt


def frame(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    hdr = bytearray(14)
    ethernet.build(hdr, dst, src, ethertype)
    return bytes(hdr) + payload


def pcap_linktype(path: Path) -> int:
    return struct.unpack_from("<I", path.read_bytes(), 20)[0]


def test_raw_capture_records_both_directions(tmp_path: Path) -> None:
    lower = ChannelEndpoint()
    path = tmp_path / "raw.pcap"
    sniffer = SnifferEndpoint(lower, str(path))
    rec = Recorder()
    sniffer.attach(rec)
    assert lower.is_attached()
    lower.inject(0x0800, UDP_PACKET)
    sniffer.write_packet(b"", 0x0800, outbound(TCP_PACKET))
    lower.inject(0x86DD, IPV6_PACKET)
    sniffer.write_packets(b"", 0x0800, [outbound(ICMP_PACKET), outbound(UDP_PACKET)])
    sniffer.close()

    assert pcap_linktype(path) == LINKTYPE_RAW
    captured = rdpcap(str(path))
    assert [bytes(p) for p in captured] == [UDP_PACKET, TCP_PACKET, IPV6_PACKET, ICMP_PACKET, UDP_PACKET]
    assert [p[2] for p in rec.packets] == [0x0800, 0x86DD]                    # passed up unchanged
    assert [info.data for info in lower.drain()] == [TCP_PACKET, ICMP_PACKET, UDP_PACKET]  # and down
    assert sniffer.stats.packets_recorded.value == 5


def test_ethernet_capture_has_the_link_headers(tmp_path: Path) -> None:
    lower = ChannelEndpoint(link_address=OUR_MAC, ethernet=True)
    path = tmp_path / "eth.pcap"
    sniffer = SnifferEndpoint(lower, path)
    assert sniffer.max_header_length() == 14
    assert sniffer.link_address() == OUR_MAC
    sniffer.attach(Recorder())
    arp_frame = frame(ethernet.BROADCAST, PEER_MAC, 0x0806, ARP_REQUEST)
    udp_frame = frame(OUR_MAC, PEER_MAC, 0x0800, UDP_PACKET)
    lower.inject(0, arp_frame)
    lower.inject(0, udp_frame)
    sniffer.write_packet(PEER_MAC, 0x0800, outbound(TCP_PACKET))
    sniffer.close()

    assert pcap_linktype(path) == LINKTYPE_ETHERNET
    captured = [bytes(p) for p in rdpcap(str(path))]
    (written,) = lower.drain()
    assert captured == [arp_frame, udp_frame, written.data]   # the synthesised header is the real one
    assert written.data == frame(PEER_MAC, OUR_MAC, 0x0800, TCP_PACKET)


def test_raw_linktype_on_ethernet_records_network_packets(tmp_path: Path) -> None:
    lower = ChannelEndpoint(link_address=OUR_MAC, ethernet=True)
    path = tmp_path / "ip.pcap"
    sniffer = SnifferEndpoint(lower, path, linktype=LINKTYPE_RAW)
    sniffer.attach(Recorder())
    lower.inject(0, frame(OUR_MAC, PEER_MAC, 0x0800, UDP_PACKET))
    sniffer.write_packet(PEER_MAC, 0x0800, outbound(TCP_PACKET))
    sniffer.close()
    assert [bytes(p) for p in rdpcap(str(path))] == [UDP_PACKET, TCP_PACKET]


def test_ethernet_linktype_needs_an_ethernet_link() -> None:
    with pytest.raises(ValueError):
        SnifferEndpoint(ChannelEndpoint(), io.BytesIO(), linktype=LINKTYPE_ETHERNET)


def test_loopback_capture_is_in_causal_order(tmp_path: Path) -> None:
    path = tmp_path / "lo.pcap"
    sniffer = SnifferEndpoint(LoopbackEndpoint(), path)
    rec = Recorder()
    sniffer.attach(rec)
    sniffer.write_packet(b"", 0x0800, outbound(UDP_PACKET))
    sniffer.close()
    assert [bytes(p) for p in rdpcap(str(path))] == [UDP_PACKET, UDP_PACKET]   # send, then its receipt
    assert [p[3] for p in rec.packets] == [UDP_PACKET]


def test_log_summarises_each_packet() -> None:
    lines: list[str] = []
    lower = ChannelEndpoint(link_address=OUR_MAC, ethernet=True)
    sniffer = SnifferEndpoint(lower, io.BytesIO(), log=lines.append)
    sniffer.attach(Recorder())
    lower.inject(0, frame(ethernet.BROADCAST, PEER_MAC, 0x0806, ARP_REQUEST))
    lower.inject(0, frame(OUR_MAC, PEER_MAC, 0x0800, UDP_PACKET))
    sniffer.write_packet(PEER_MAC, 0x0800, outbound(TCP_PACKET, header_length=40))
    sniffer.write_packet(PEER_MAC, 0x0800, outbound(ICMP_PACKET))
    lower.inject(0, frame(OUR_MAC, PEER_MAC, 0x86DD, IPV6_PACKET))
    lower.inject(0, frame(OUR_MAC, PEER_MAC, 0x88CC, b"lldp"))
    assert lines[0] == "recv ARP who-has 192.0.2.2 tell 192.0.2.1 (02:00:c0:00:02:01)"
    assert lines[1].startswith("recv 192.0.2.1 > 192.0.2.2 udp 1000 > 7 ")
    assert lines[2].startswith("send 192.0.2.2 > 192.0.2.1 tcp 7 > 1000 [SA] ")
    assert lines[3].startswith("send 192.0.2.2 > 192.0.2.1 icmp type 0 code 0 ")
    assert lines[4].startswith("recv 2001:db8::1 > 2001:db8::2 udp 1 > 2 ")
    assert lines[5] == "recv ethertype 0x88cc len 18"
    assert len(lines) == 6


def test_shared_writer_is_flushed_not_closed() -> None:
    buf = io.BytesIO()
    writer = PcapWriter(buf, LINKTYPE_RAW, autoflush=False)
    first = SnifferEndpoint(ChannelEndpoint(), writer)
    second = SnifferEndpoint(LoopbackEndpoint(), writer)
    first.write_packet(b"", 0x0800, outbound(UDP_PACKET))
    first.close()
    second.write_packet(b"", 0x0800, outbound(TCP_PACKET))   # detached loopback: recorded, then dropped
    second.close()
    assert not buf.closed
    assert [data for data, _ in RawPcapReader(io.BytesIO(buf.getvalue()))] == [UDP_PACKET, TCP_PACKET]


def test_capture_failure_does_not_stop_traffic() -> None:
    buf = io.BytesIO()
    lower = ChannelEndpoint()
    sniffer = SnifferEndpoint(lower, buf)
    buf.close()
    sniffer.write_packet(b"", 0x0800, outbound(UDP_PACKET))
    sniffer.write_packet(b"", 0x0800, outbound(UDP_PACKET))
    assert len(lower) == 2
    assert sniffer.stats.record_errors.value == 2


def test_pcap_writer_truncates_to_snaplen_and_keeps_the_original_length(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcap"
    with PcapWriter(path, LINKTYPE_RAW, snaplen=24) as writer:
        writer.write(UDP_PACKET[:20], UDP_PACKET[20:], timestamp_ns=1_700_000_000_123_456_789)
        writer.write(UDP_PACKET[:10])
    records = list(RawPcapReader(str(path)))
    assert [data for data, _ in records] == [UDP_PACKET[:24], UDP_PACKET[:10]]
    assert [(meta.caplen, meta.wirelen) for _, meta in records] == [(24, len(UDP_PACKET)), (10, 10)]
    assert (records[0][1].sec, records[0][1].usec) == (1_700_000_000, 123_456)


def test_pcap_writer_buffers_until_flushed(tmp_path: Path) -> None:
    path = tmp_path / "buffered.pcap"
    writer = PcapWriter(path, LINKTYPE_RAW, autoflush=False)
    writer.write(UDP_PACKET)
    assert path.stat().st_size == 0
    writer.flush()
    assert path.stat().st_size == 24 + 16 + len(UDP_PACKET)
    writer.close()
    writer.close()
