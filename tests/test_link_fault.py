"""FaultEndpoint: every fault alone on large samples, their timing under a manual clock, determinism."""

from __future__ import annotations

import struct
import time
from typing import Any

import gevent
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, in4_chksum
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP
from scapy.utils import checksum as scapy_checksum

from netsock.link.channel import ChannelEndpoint, PacketInfo
from netsock.link.fault import FaultConfig, FaultDirectionStats, FaultEndpoint, GilbertElliott
from netsock.network.ipv4 import IPv4Protocol
from netsock.scheduler import GeventClock
from netsock.stack import LinkCapabilities, ManualClock, PacketBuffer, Stack
from netsock.tcpip import IPV4_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, FullAddress, Route
from netsock.tcpip.errors import ErrClosedForSend
from netsock.transport.udp import UDPProtocol

IPV4 = 0x0800
IPV6 = 0x86DD
ARP_TYPE = 0x0806
MAC = b"\x02\x00\xc0\x00\x02\x02"
_IP_UDP = struct.Struct("!BBHHHBBH4s4sHHHHI")


def ip_packet(number: int, size: int = 64) -> bytes:
    """An IPv4/UDP packet carrying ``number`` (checksums left zero: only the corruption tests parse)."""
    return _IP_UDP.pack(0x45, 0, size, 0, 0, 64, 17, 0, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]),
                        1000, 7, size - 20, 0, number) + bytes(size - _IP_UDP.size)


def number_of(packet: bytes) -> int:
    return struct.unpack_from("!I", packet, 28)[0]


def outbound(packet: bytes, header_length: int = 20) -> PacketBuffer:
    """The packet as the network layer hands it down: its header prepended in front of the payload."""
    pkt = PacketBuffer(reserve=header_length + 14, data=packet[header_length:])
    pkt.prepend(header_length)[:] = packet[:header_length]
    return pkt


def transport_checksum_valid(raw: bytes) -> bool:
    """Does the TCP, UDP or ICMP checksum of the IPv4 packet ``raw`` verify (summed by scapy)?"""
    packet = IP(raw)
    body = raw[packet.ihl * 4:packet.len]
    if packet.proto == 1:
        return scapy_checksum(body) == 0
    return in4_chksum(packet.proto, packet, body) == 0


def differing_bits(a: bytes, b: bytes) -> list[int]:
    assert len(a) == len(b)
    return [i * 8 + bit for i, (x, y) in enumerate(zip(a, b)) for bit in range(8) if (x ^ y) >> bit & 1]


class Recorder:
    """A dispatcher recording what it was handed, and when."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.packets: list[tuple[float, bytes, PacketBuffer]] = []

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.packets.append((self.clock.now(), bytes(pkt.data), pkt))

    def numbers(self) -> list[int]:
        return [number_of(data) for _, data, _ in self.packets]


class Rig:
    """A FaultEndpoint over a ChannelEndpoint: the test writes as the NIC and injects as the wire."""

    def __init__(self, seed: int = 0, outbound: FaultConfig | None = None, inbound: FaultConfig | None = None,
                 ethernet: bool = False, queue: int = 1 << 30) -> None:
        self.clock = ManualClock()
        self.lower = ChannelEndpoint(size=queue, link_address=MAC if ethernet else b"", ethernet=ethernet)
        self.fault = FaultEndpoint(self.lower, self.clock, seed, outbound, inbound)
        self.up = Recorder(self.clock)
        self.fault.attach(self.up)
        self.wire: list[tuple[float, bytes]] = []
        self.lower.on_outbound = lambda info: self.wire.append((self.clock.now(), info.data))

    def send(self, number: int, size: int = 64) -> None:
        self.fault.write_packet(b"", IPV4, outbound(ip_packet(number, size)))

    def receive(self, number: int, size: int = 64) -> None:
        self.lower.inject(IPV4, ip_packet(number, size))

    def sent_numbers(self) -> list[int]:
        return [number_of(data) for _, data in self.wire]

    @property
    def out(self) -> FaultDirectionStats:
        return self.fault.stats.outbound

    @property
    def inb(self) -> FaultDirectionStats:
        return self.fault.stats.inbound


def loss_runs(delivered: list[int], total: int) -> list[int]:
    """Lengths of the runs of consecutive packets missing from ``delivered``."""
    present = set(delivered)
    runs, run = [], 0
    for n in range(total):
        if n in present:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    return runs + ([run] if run else [])


# --- pass-through ----------------------------------------------------------------------------------


def test_without_faults_packets_pass_through_synchronously_and_untouched() -> None:
    rig = Rig()
    pkt = outbound(ip_packet(1))
    rig.fault.write_packet(b"", IPV4, pkt)
    assert rig.wire == [(rig.clock.now(), ip_packet(1))]
    inbound = PacketBuffer.inbound(ip_packet(2))
    rig.lower.inject(IPV4, inbound)
    assert rig.up.packets == [(rig.clock.now(), ip_packet(2), inbound)]   # the very buffer
    assert rig.fault.write_packets(b"", IPV4, [outbound(ip_packet(3)), outbound(ip_packet(4))]) == 2
    assert rig.sent_numbers() == [1, 3, 4]
    assert rig.out.as_dict() == {**dict.fromkeys(rig.out.as_dict(), 0), "packets": 3, "bytes": 3 * 64}
    assert rig.inb.nonzero() == {"packets": 1, "bytes": 64}


def test_the_wrapper_presents_the_lower_link() -> None:
    lower = ChannelEndpoint(mtu=1400, link_address=MAC, ethernet=True)
    fault = FaultEndpoint(lower, ManualClock())
    assert (fault.mtu(), fault.max_header_length(), fault.link_address(), fault.capabilities()) == \
        (1400, 14, MAC, lower.capabilities())
    recorder = Recorder(ManualClock())
    fault.attach(recorder)
    assert fault.is_attached() and lower.dispatcher is fault
    fault.attach(None)
    assert not fault.is_attached() and not lower.is_attached()


# --- loss ------------------------------------------------------------------------------------------


def test_random_loss_drops_its_share_of_a_large_sample() -> None:
    rig = Rig(outbound=FaultConfig(loss=0.1))
    for n in range(20_000):
        rig.send(n)
        rig.receive(n)
    dropped = rig.out.dropped_loss.value
    assert 1800 <= dropped <= 2200          # 10% +- ~5 standard deviations (42)
    assert len(rig.wire) == 20_000 - dropped
    assert rig.sent_numbers() == sorted(rig.sent_numbers())
    assert len(rig.up.packets) == 20_000    # the other direction is untouched
    assert max(loss_runs(rig.sent_numbers(), 20_000)) < 8


def test_gilbert_elliott_losses_come_in_longer_runs_than_random_loss_at_the_same_rate() -> None:
    burst = GilbertElliott(p_good_to_bad=0.01, p_bad_to_good=0.1)   # bad spells of 10 packets on average
    assert burst.mean_loss == pytest.approx(1 / 11)
    bursty = Rig(outbound=FaultConfig(burst=burst))
    random_ = Rig(outbound=FaultConfig(loss=burst.mean_loss))
    total = 20_000
    for n in range(total):
        bursty.send(n)
        random_.send(n)
    assert bursty.out.dropped_loss.value == 0 and random_.out.dropped_burst.value == 0
    for rig, counter in ((bursty, bursty.out.dropped_burst), (random_, random_.out.dropped_loss)):
        assert 0.06 <= counter.value / total <= 0.12
        assert len(rig.wire) == total - counter.value
    bursty_runs = loss_runs(bursty.sent_numbers(), total)
    random_runs = loss_runs(random_.sent_numbers(), total)
    assert sum(bursty_runs) / len(bursty_runs) > 6        # expected 10
    assert sum(random_runs) / len(random_runs) < 1.3      # expected 1.1


def test_gilbert_elliott_loss_in_the_good_state_and_partial_loss_in_the_bad_state() -> None:
    burst = GilbertElliott(p_good_to_bad=0.05, p_bad_to_good=0.2, loss_bad=0.5, loss_good=0.02)
    rig = Rig(inbound=FaultConfig(burst=burst))
    for n in range(20_000):
        rig.receive(n)
    assert burst.mean_loss == pytest.approx(0.8 * 0.02 + 0.2 * 0.5)
    assert abs(rig.inb.dropped_burst.value / 20_000 - burst.mean_loss) < 0.02


def test_blackhole_drops_everything_in_its_direction_only() -> None:
    rig = Rig(outbound=FaultConfig(blackhole=True))
    for n in range(100):
        rig.send(n)
        rig.receive(n)
    assert rig.wire == []
    assert rig.out.dropped_blackhole.value == 100
    assert rig.up.numbers() == list(range(100))
    rig.fault.configure("outbound", blackhole=False)
    rig.send(100)
    assert rig.sent_numbers() == [100]


def test_a_blackhole_lets_packets_already_in_flight_arrive() -> None:
    rig = Rig(inbound=FaultConfig(delay=0.01))
    rig.receive(1)
    rig.fault.configure("inbound", blackhole=True)
    rig.receive(2)
    rig.clock.advance(1)
    assert rig.up.numbers() == [1]
    assert rig.inb.dropped_blackhole.value == 1


# --- duplication -----------------------------------------------------------------------------------


def test_duplicates_follow_their_original_as_separate_buffers() -> None:
    rig = Rig(inbound=FaultConfig(duplicate=0.2))
    for n in range(10_000):
        rig.receive(n)
    duplicated = rig.inb.duplicated.value
    assert 1800 <= duplicated <= 2200
    order = rig.up.numbers()
    assert len(order) == 10_000 + duplicated
    assert order == sorted(order) and set(order) == set(range(10_000))
    repeats = [i for i in range(1, len(order)) if order[i] == order[i - 1]]
    assert len(repeats) == duplicated
    assert all(rig.up.packets[i][2] is not rig.up.packets[i - 1][2] for i in repeats)


def test_outbound_duplicates_each_get_one_link_header() -> None:
    rig = Rig(outbound=FaultConfig(duplicate=1.0), ethernet=True)
    for n in range(3):
        rig.send(n)
    frames = [data for _, data in rig.wire]
    assert len(frames) == 6 and rig.out.duplicated.value == 3
    assert all(len(frame) == 14 + 64 for frame in frames)
    assert frames[0::2] == frames[1::2]
    assert [number_of(frame[14:]) for frame in frames] == [0, 0, 1, 1, 2, 2]


def test_a_duplicate_is_delayed_with_its_original() -> None:
    rig = Rig(outbound=FaultConfig(duplicate=1.0, delay=0.02))
    start = rig.clock.now()
    rig.send(7)
    assert rig.wire == []
    rig.clock.advance(0.05)
    assert rig.wire == [(start + 0.02, ip_packet(7))] * 2


# --- corruption ------------------------------------------------------------------------------------


def scapy_packets(count: int) -> list[bytes]:
    """Valid IPv4 packets (checksums computed by scapy) of assorted transports and sizes."""
    packets = []
    for n in range(count):
        transport = (UDP(sport=1000 + n, dport=7), TCP(sport=1000 + n, dport=80, flags="PA", seq=n),
                     ICMP(type=8, id=n))[n % 3]
        packets.append(bytes(IP(src="192.0.2.1", dst="192.0.2.2", id=n) / transport / (b"x" * (n % 50))))
    return packets


def test_corruption_flips_exactly_one_bit_after_the_network_header_so_checksums_fail() -> None:
    rig = Rig(outbound=FaultConfig(corrupt=1.0))
    originals = scapy_packets(300)
    buffers = [outbound(packet) for packet in originals]
    for pkt in buffers:
        rig.fault.write_packet(b"", IPV4, pkt)
    assert rig.out.corrupted.value == 300
    for original, pkt, (_, corrupted) in zip(originals, buffers, rig.wire):
        bits = differing_bits(original, corrupted)
        assert len(bits) == 1 and bits[0] >= 20 * 8
        assert transport_checksum_valid(original) and not transport_checksum_valid(corrupted)
        assert pkt.to_bytes() == original           # the caller's buffer is untouched
    flipped_bytes = {differing_bits(o, c)[0] // 8 for o, (_, c) in zip(originals, rig.wire)}
    assert min(flipped_bytes) == 20 and max(flipped_bytes) > 60   # anywhere in the transport part


def test_inbound_corruption_copies_the_frame_it_flips() -> None:
    rig = Rig(inbound=FaultConfig(corrupt=1.0))
    original = scapy_packets(1)[0]
    frame = bytearray(original)
    rig.lower.inject(IPV4, frame)
    assert bytes(frame) == original
    (_, delivered, _), = rig.up.packets
    assert len(differing_bits(original, delivered)) == 1


def test_a_corrupted_packet_is_no_longer_vouched_for() -> None:
    """A link that verified (or completed) the checksum saw the bytes before the flip: the transport
    must check the corrupted copy itself."""
    rig = Rig(inbound=FaultConfig(corrupt=1.0))
    pkt = PacketBuffer.inbound(bytearray(scapy_packets(1)[0]))
    pkt.checksum_verified = True
    rig.lower.inject(IPV4, pkt)
    (_, _, delivered), = rig.up.packets
    assert not delivered.checksum_verified


def test_corruption_spares_packets_no_transport_checksum_covers() -> None:
    rig = Rig(outbound=FaultConfig(corrupt=1.0))
    arp = bytes(ARP(op=1, psrc="192.0.2.1", pdst="192.0.2.2"))
    bare = bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=253))
    rig.fault.write_packet(b"", ARP_TYPE, PacketBuffer(data=arp))
    rig.fault.write_packet(b"", IPV4, outbound(bare))
    assert [data for _, data in rig.wire] == [arp, bare]
    assert rig.out.corrupted.value == 0


def test_ipv6_corruption_skips_the_extension_headers() -> None:
    rig = Rig(inbound=FaultConfig(corrupt=1.0))
    packet = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2)
                   / (b"y" * 40))
    for _ in range(500):
        rig.lower.inject(IPV6, packet)
    flipped = [differing_bits(packet, data) for _, data, _ in rig.up.packets]
    assert all(len(bits) == 1 for bits in flipped)
    assert min(bits[0] for bits in flipped) // 8 == 48   # after the 40-byte header and the 8-byte option


def test_the_stack_counts_corrupted_datagrams_as_checksum_errors() -> None:
    clock = ManualClock()
    stack = Stack((IPv4Protocol,), (UDPProtocol,), clock=clock)
    channel = ChannelEndpoint()
    fault = FaultEndpoint(channel, clock, inbound=FaultConfig(corrupt=1.0))
    stack.create_nic(1, fault)
    stack.add_address(1, IPV4_PROTOCOL_NUMBER, "192.0.2.2/24")
    stack.set_route_table([Route.parse("192.0.2.0/24", 1)])
    endpoint = stack.new_endpoint(UDP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER)
    endpoint.bind(FullAddress(0, b"", 7))
    for n in range(50):
        channel.inject(IPV4, bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1000, dport=7)
                                   / struct.pack("!I", n) / (b"z" * 60)))
    udp = stack.stats().udp
    assert udp.packets_received.value == 0
    assert udp.checksum_errors.value + udp.malformed_packets_received.value + udp.unknown_port_errors.value == 50
    assert udp.checksum_errors.value >= 40


# --- delay, jitter, reordering ---------------------------------------------------------------------


def test_delay_is_exact_in_each_direction() -> None:
    rig = Rig(outbound=FaultConfig(delay=0.05), inbound=FaultConfig(delay=0.02))
    start = rig.clock.now()
    rig.send(1)
    rig.receive(2)
    assert rig.wire == [] and rig.up.packets == []
    rig.clock.advance(0.0199)
    assert rig.up.packets == []
    rig.clock.advance(0.0002)
    assert [(t, number_of(data)) for t, data, _ in rig.up.packets] == [(start + 0.02, 2)]
    rig.clock.advance(0.0298)
    assert rig.wire == []
    rig.clock.advance(0.0002)
    assert rig.wire == [(start + 0.05, ip_packet(1))]
    assert rig.out.delayed.value == rig.inb.delayed.value == 1


def test_a_held_packet_goes_out_as_written_whatever_its_writer_does_with_its_buffer_after() -> None:
    """A delayed packet whose payload is a view of its writer's bytearray (a UDP send's buffer) keeps the bytes
    it was written with: the writer may reuse its buffer once the write returns, as a send's."""
    rig = Rig(outbound=FaultConfig(delay=0.01))
    packet = ip_packet(1)
    payload = bytearray(packet[20:])
    pkt = PacketBuffer(reserve=34, data=payload)
    pkt.prepend(20)[:] = packet[:20]
    rig.fault.write_packet(b"", IPV4, pkt)
    payload[:] = bytes(len(payload))
    rig.clock.advance(0.02)
    assert [data for _, data in rig.wire] == [packet]


def jittered_delays(spacing: float, count: int) -> list[float]:
    """Delays of ``count`` packets received ``spacing`` apart through 10 ms +- 8 ms; asserts their order."""
    rig = Rig(inbound=FaultConfig(delay=0.010, jitter=0.008))
    sent_at = []
    for n in range(count):
        sent_at.append(rig.clock.now())
        rig.receive(n)
        rig.clock.advance(spacing)
    rig.clock.advance(0.1)
    assert rig.up.numbers() == list(range(count))
    assert rig.inb.delayed.value == count
    delays = [t - sent_at[n] for n, (t, _, _) in enumerate(rig.up.packets)]
    assert 0.002 - 1e-9 <= min(delays) and max(delays) <= 0.018 + 1e-9
    return delays


def test_jitter_spreads_the_delay_uniformly() -> None:
    delays = jittered_delays(0.02, 2000)                  # spaced wider than the jitter: no interplay
    assert min(delays) < 0.0021 and max(delays) > 0.0179
    assert abs(sum(delays) / len(delays) - 0.010) < 0.0005
    assert sum(d < 0.006 for d in delays) == pytest.approx(500, abs=90)   # a quarter of the range


def test_jitter_never_reorders_a_dense_stream() -> None:
    delays = jittered_delays(0.001, 5000)                 # 16 packets within one jitter range
    assert len({round(d, 7) for d in delays}) > 1000


def test_reordered_packets_are_overtaken_by_those_sent_during_the_hold() -> None:
    rig = Rig(outbound=FaultConfig(reorder=0.1, reorder_hold=0.0045))
    total = 10_000
    for n in range(total):
        rig.send(n)
        rig.clock.advance(0.001)
    rig.clock.advance(0.01)
    order = rig.sent_numbers()
    assert sorted(order) == list(range(total))            # nothing lost, nothing duplicated
    reordered = rig.out.reordered.value
    assert 800 <= reordered <= 1200
    late, highest = [], -1
    for n in order:
        if n < highest:
            late.append(n)
        highest = max(highest, n)
    # Every held packet is overtaken unless the four behind it were all held too (p = 1e-4).
    assert reordered * 0.99 <= len(late) <= reordered
    position = {n: i for i, n in enumerate(order)}
    for n in late:
        overtakers = {k for k in order[:position[n]] if k > n}
        assert overtakers and max(overtakers) <= n + 4    # sent within the 4.5 ms hold


def test_reordering_adds_its_hold_to_the_delay() -> None:
    rig = Rig(inbound=FaultConfig(delay=0.01, reorder=1.0, reorder_hold=0.005))
    start = rig.clock.now()
    rig.receive(1)
    rig.fault.configure("inbound", reorder=0.0)
    rig.receive(2)
    rig.clock.advance(1)
    assert [(t, number_of(data)) for t, data, _ in rig.up.packets] == [(start + 0.01, 2), (start + 0.015, 1)]


# --- rate limiting ---------------------------------------------------------------------------------


def test_the_rate_limit_spaces_packets_by_their_serialisation_time() -> None:
    rig = Rig(outbound=FaultConfig(rate=1_000_000))
    start = rig.clock.now()
    sizes = [1000, 500, 1500, 100]
    for n, size in enumerate(sizes):
        rig.send(n, size)
    assert rig.wire == []
    rig.clock.advance(1)
    departures = [t - start for t, _ in rig.wire]
    expected, at = [], 0.0
    for size in sizes:
        at += size * 8 / 1_000_000
        expected.append(at)
    assert departures == pytest.approx(expected)
    assert rig.sent_numbers() == [0, 1, 2, 3]
    rig.send(9, 1000)                                     # an idle link again
    rig.clock.advance(1)
    assert rig.wire[-1][0] - (start + 1) == pytest.approx(0.008)


def test_the_rate_limiter_tail_drops_beyond_its_queue() -> None:
    rig = Rig(inbound=FaultConfig(rate=1_000_000, queue_limit=3000))
    for n in range(5):
        rig.receive(n, 1000)
    assert rig.inb.dropped_queue.value == 2
    rig.clock.advance(0.008)                              # the first one is out: room for one more
    assert rig.up.numbers() == [0]
    rig.receive(5, 1000)
    rig.receive(6, 1000)
    assert rig.inb.dropped_queue.value == 3
    rig.clock.advance(1)
    assert rig.up.numbers() == [0, 1, 2, 5]
    assert [t for t, _, _ in rig.up.packets] == pytest.approx([1000.008, 1000.016, 1000.024, 1000.032])


def test_a_sustained_overload_is_cut_down_to_the_rate() -> None:
    rig = Rig(outbound=FaultConfig(rate=800_000, queue_limit=10_000))   # 100 packets of 1000 B per second
    for n in range(2000):                                                # offered: 1000 per second
        rig.send(n, 1000)
        rig.clock.advance(0.001)
    rig.clock.advance(1)
    assert 200 <= len(rig.wire) <= 212                   # 2 s of wire time, plus the queue drained after
    assert rig.out.dropped_queue.value == 2000 - len(rig.wire)
    gaps = [b[0] - a[0] for a, b in zip(rig.wire, rig.wire[1:])]
    assert min(gaps) == pytest.approx(0.01)


# --- run time, directions, determinism -------------------------------------------------------------


def test_reconfiguring_at_run_time_never_lets_a_packet_overtake_a_delayed_one() -> None:
    rig = Rig(outbound=FaultConfig(delay=0.05))
    rig.send(1)
    rig.fault.configure("outbound", delay=0.0)
    assert not rig.fault.config("outbound").active
    rig.send(2)                                           # would be due now: waits behind packet 1
    assert rig.wire == []
    rig.clock.advance(0.05)
    assert rig.sent_numbers() == [1, 2]
    rig.send(3)                                           # nothing held any more: synchronous again
    assert rig.sent_numbers() == [1, 2, 3]


def test_configure_changes_named_fields_and_validates_before_applying() -> None:
    rig = Rig()
    rig.fault.configure("both", loss=1.0, delay=0.5)
    assert rig.fault.config("inbound") == rig.fault.config("outbound") == FaultConfig(loss=1.0, delay=0.5)
    rig.fault.configure("inbound", FaultConfig(), duplicate=0.5)
    assert rig.fault.config("inbound") == FaultConfig(duplicate=0.5)
    with pytest.raises(ValueError):
        rig.fault.configure("both", jitter=-1.0)
    with pytest.raises(TypeError):
        rig.fault.configure("outbound", lose=0.1)
    with pytest.raises(ValueError):
        rig.fault.configure("sideways", loss=0.1)  # type: ignore[arg-type]
    assert rig.fault.config("outbound") == FaultConfig(loss=1.0, delay=0.5)
    rig.fault.configure("outbound", FaultConfig())
    rig.send(1)
    assert rig.sent_numbers() == [1]


@pytest.mark.parametrize("bad", [{"loss": 1.5}, {"duplicate": -0.1}, {"reorder": float("nan")}, {"rate": -1.0},
                                 {"delay": float("inf")}, {"queue_limit": -1}, {"burst": (0.1, 0.1, 1.0)}])
def test_invalid_configurations_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        FaultConfig(**bad)


def test_gilbert_elliott_parameters_are_probabilities() -> None:
    with pytest.raises(ValueError):
        GilbertElliott(p_good_to_bad=0.1, p_bad_to_good=1.2)


def test_directions_are_independent() -> None:
    rig = Rig(outbound=FaultConfig(loss=0.5), inbound=FaultConfig(loss=0.5))
    for n in range(1000):
        rig.send(n)
        rig.receive(n)
    assert rig.sent_numbers() != rig.up.numbers()         # the same seed, separate streams
    rig.fault.configure("inbound", FaultConfig(delay=0.01))
    assert rig.fault.config("outbound") == FaultConfig(loss=0.5)
    before = rig.out.as_dict()
    rig.receive(1000)
    rig.clock.advance(0.01)
    assert rig.up.numbers()[-1] == 1000
    assert rig.out.as_dict() == before


def faulty_run(seed: int) -> tuple[list[int], list[tuple[float, bytes]], dict]:
    config = FaultConfig(loss=0.1, burst=GilbertElliott(0.02, 0.3), duplicate=0.05, corrupt=0.05,
                         delay=0.002, jitter=0.001, reorder=0.05, reorder_hold=0.003)
    rig = Rig(seed=seed, outbound=config)
    for n in range(3000):
        rig.send(n)
        rig.clock.advance(0.0005)
    rig.clock.advance(1)
    return rig.sent_numbers(), rig.wire, rig.out.as_dict()


def test_the_same_seed_makes_the_same_decisions_and_another_seed_others() -> None:
    first, again, other = faulty_run(1), faulty_run(1), faulty_run(2)
    assert first == again
    assert loss_runs(first[0], 3000) != loss_runs(other[0], 3000)
    assert first[0] != other[0]


def test_enabling_one_fault_leaves_the_others_decisions_alone() -> None:
    plain = Rig(seed=5, outbound=FaultConfig(loss=0.2))
    busy = Rig(seed=5, outbound=FaultConfig(loss=0.2, duplicate=0.3, jitter=0.001, reorder=0.2))
    for n in range(2000):
        plain.send(n)
        busy.send(n)
    busy.clock.advance(1)
    assert busy.out.duplicated.value and busy.out.reordered.value
    assert sorted(set(busy.sent_numbers())) == plain.sent_numbers()


# --- failures and closing --------------------------------------------------------------------------


def test_a_deferred_write_the_lower_link_refuses_is_counted_not_raised() -> None:
    rig = Rig(outbound=FaultConfig(delay=0.01), queue=1)
    rig.send(1)
    rig.send(2)
    rig.clock.advance(0.01)                               # the channel holds one: the second is refused
    assert rig.sent_numbers() == [1]
    assert rig.out.dropped_error.value == 1
    assert rig.lower.stats.tx_queue_full.value == 1


def test_a_dispatcher_failing_on_a_deferred_packet_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(inbound=FaultConfig(delay=0.01))

    class Failing(Recorder):
        def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
            super().deliver_network_packet(remote, local, protocol, pkt)
            if len(self.packets) == 1:
                raise RuntimeError("bug above the link")

    rig.up = Failing(rig.clock)
    rig.fault.attach(rig.up)
    rig.receive(1)
    rig.receive(2)
    rig.clock.advance(0.01)
    assert rig.up.numbers() == [1, 2]                     # the failure did not stop the release
    assert rig.inb.dropped_error.value == 1
    assert "bug above the link" in caplog.text


def test_packets_held_after_detaching_are_counted() -> None:
    rig = Rig(inbound=FaultConfig(delay=0.01))
    rig.receive(1)
    rig.fault.attach(None)
    rig.clock.advance(0.01)
    assert rig.inb.dropped_detached.value == 1 and rig.up.packets == []


def test_close_discards_held_packets_and_refuses_writes() -> None:
    rig = Rig(outbound=FaultConfig(delay=0.01), inbound=FaultConfig(delay=0.01))
    rig.send(1)
    rig.send(2)
    rig.receive(3)
    rig.fault.close()
    rig.clock.advance(1)
    assert rig.wire == [] and rig.up.packets == []
    assert rig.out.dropped_closed.value == 2 and rig.inb.dropped_closed.value == 1
    with pytest.raises(ErrClosedForSend):
        rig.send(4)
    rig.fault.configure("outbound", FaultConfig())
    with pytest.raises(ErrClosedForSend):
        rig.send(5)                                       # the closed channel refuses it itself


def test_write_packets_with_faults_reports_what_was_accepted() -> None:
    rig = Rig(outbound=FaultConfig(loss=0.5))
    assert rig.fault.write_packets(b"", IPV4, [outbound(ip_packet(n)) for n in range(100)]) == 100
    assert len(rig.wire) == 100 - rig.out.dropped_loss.value
    full = Rig(outbound=FaultConfig(duplicate=1.0), queue=3)
    assert full.fault.write_packets(b"", IPV4, [outbound(ip_packet(n)) for n in range(3)]) == 2
    assert full.sent_numbers() == [0, 0, 1]
    assert full.out.dropped_error.value == 1              # the refused copy is the link's, not the caller's


def test_a_reply_written_while_a_held_packet_is_released_keeps_its_place() -> None:
    """Release is not recursive: a packet written during a release joins the loop, in order."""
    clock = ManualClock()
    lower = ChannelEndpoint(size=1 << 10)
    fault = FaultEndpoint(lower, clock, outbound=FaultConfig(delay=0.01))
    order: list[int] = []

    def on_outbound(info: PacketInfo) -> None:
        number = number_of(info.data)
        order.append(number)
        if number < 3:                                    # "reply" with the next number, due now
            fault.configure("outbound", delay=0.0)
            fault.write_packet(b"", IPV4, outbound(ip_packet(number + 10)))

    lower.on_outbound = on_outbound
    fault.attach(Recorder(clock))
    for n in range(3):
        fault.write_packet(b"", IPV4, outbound(ip_packet(n)))
    clock.advance(0.01)
    assert order == [0, 1, 2, 10, 11, 12]


# --- real time ---------------------------------------------------------------------------------------


def test_delays_run_in_real_time_on_the_hub() -> None:
    clock = GeventClock()
    lower = ChannelEndpoint()
    fault = FaultEndpoint(lower, clock, outbound=FaultConfig(delay=0.03))
    arrived: list[float] = []
    lower.on_outbound = lambda info: arrived.append(time.monotonic())
    start = time.monotonic()
    fault.write_packet(b"", IPV4, outbound(ip_packet(1)))
    assert arrived == []
    gevent.sleep(0.08)
    assert len(arrived) == 1 and arrived[0] - start >= 0.03 - 0.002   # never early


def test_faults_strike_wire_sized_segments_not_super_segments() -> None:
    lower = ChannelEndpoint(gso=True)
    fault = FaultEndpoint(lower, ManualClock(), inbound=FaultConfig(loss=0.5))
    assert lower.capabilities() & LinkCapabilities.HARDWARE_GSO
    assert not fault.capabilities() & LinkCapabilities.HARDWARE_GSO   # the stack sends MSS-sized segments
    recorder = Recorder(ManualClock())
    fault.attach(recorder)
    payload = bytes(range(256)) * 40                                    # 10,240 bytes: 8 segments of 1,400
    super_segment = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=2, seq=1000, flags="A")
                          / payload)
    pkt = PacketBuffer.inbound(super_segment)
    pkt.gso_size = 1400
    fault.deliver_network_packet(b"", b"", IPV4, pkt)
    assert fault.stats.inbound.packets.value == 8
    delivered = [IP(data) for _, data, _ in recorder.packets]
    assert 0 < len(delivered) < 8 and fault.stats.inbound.dropped_loss.value == 8 - len(delivered)
    for segment in delivered:
        assert len(segment[TCP].payload) <= 1400 and transport_checksum_valid(bytes(segment))
        offset = segment[TCP].seq - 1000
        assert bytes(segment[TCP].payload) == payload[offset:offset + 1400]
