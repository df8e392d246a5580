"""The udp_echo sample on a TUN device, against the kernel's own ping, UDP sockets and raw packets."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from integration.conftest import ECHO_PORT, KERNEL_ADDRESS, NETSOCK_ADDRESS
from integration.nsutil import EchoSample, NetNS, peer_argv, ping, read_pcap, run_peer

ECHO = f"{NETSOCK_ADDRESS}:{ECHO_PORT}"
CLOSED_PORT = 9
DROP_WORDS = ("malformed", "checksum", "invalid", "error", "unknown", "dropped", "failure")


def flatten(stats: dict[str, Any], prefix: str = "") -> dict[str, int]:
    """{"ip": {"checksum_errors": 1}} -> {"ip.checksum_errors": 1}."""
    flat: dict[str, int] = {}
    for key, value in stats.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def drops(stats: dict[str, Any]) -> dict[str, int]:
    """Every non-zero counter that records a dropped or rejected packet."""
    return {name: value for name, value in flatten(stats).items()
            if value and any(word in name.rsplit(".", 1)[-1] for word in DROP_WORDS)}


def test_kernel_ping_gets_every_reply(netns: NetNS, start_echo: Callable[..., EchoSample]) -> None:
    sample = start_echo()
    assert ping(netns, NETSOCK_ADDRESS, 5) == 5
    stats = sample.stop()
    assert stats["icmp"]["v4_packets_received"]["echo"] == 5
    assert stats["icmp"]["v4_packets_sent"]["echo_reply"] == 5


def test_10000_random_datagrams_come_back_intact(netns: NetNS, start_echo: Callable[..., EchoSample]) -> None:
    sample = start_echo()
    result = run_peer(netns, "udp-exchange", ECHO, "--count", "10000", "--seed", "1127", "--max-size", "1472")
    assert result["completed"] == 10000 and result["corrupt"] == 0, result
    stats = sample.stop()
    # Every datagram the kernel sent (retries included) was received and echoed exactly once.
    assert stats["udp"]["packets_received"] == stats["udp"]["packets_sent"] == result["sent"], stats["udp"]
    assert drops(stats) == {}


# Malformed packets, each class sent a distinct power-of-two number of times: whatever counters they
# land in, each counter's value names exactly the classes it counted.

def _ipv4(**fields: Any) -> IP:
    return IP(src=KERNEL_ADDRESS, dst=NETSOCK_ADDRESS, **fields)


def _udp_packet(ip: IP | None = None, **udp_fields: Any) -> bytes:
    """A datagram to the echo port; scapy fills in every field not given (lengths, checksums)."""
    return bytes((ip or _ipv4()) / UDP(sport=40000, dport=ECHO_PORT, **udp_fields) / Raw(b"malformed"))


def malformed_packets() -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """Each malformed class -> (the packet, the counters its drop must increment)."""
    good = _udp_packet()
    bad_ip_checksum = bytearray(good)
    bad_ip_checksum[10] ^= 0xFF
    udp_checksum = IP(good)[UDP].chksum
    ip_malformed, udp_malformed = ("ip.malformed_packets_received",), ("udp.malformed_packets_received",)
    return {
        "IP header checksum wrong": (bytes(bad_ip_checksum), ip_malformed + ("ip.checksum_errors",)),
        "IP header truncated": (good[:12], ip_malformed),
        "IP total length beyond packet": (_udp_packet(_ipv4(len=len(good) + 100)), ip_malformed),
        "IHL below 5": (_udp_packet(_ipv4(ihl=4)), ip_malformed),
        "IHL beyond packet": (_udp_packet(_ipv4(ihl=15)), ip_malformed),  # a 60-byte header in 37 bytes
        "UDP checksum wrong": (_udp_packet(chksum=udp_checksum % 0xFFFF + 1), ("udp.checksum_errors",)),
        "UDP header truncated": (bytes(_ipv4(proto=17) / Raw(good[20:24])), udp_malformed),
        "UDP length beyond datagram": (_udp_packet(len=8 + len(b"malformed") + 10), udp_malformed),
    }


def test_malformed_packets_are_counted_drops_during_echo(
        netns: NetNS, start_echo: Callable[..., EchoSample], tmp_path: Path) -> None:
    classes = malformed_packets()
    copies = {name: 1 << i for i, name in enumerate(classes)}
    frames = tmp_path / "malformed.hex"
    frames.write_text("".join(f"{packet.hex()}\n" * copies[name] for name, (packet, _) in classes.items()))
    sample = start_echo()

    exchange = netns.popen(peer_argv("udp-exchange", ECHO, "--duration", "3", "--seed", "7"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_peer(netns, "inject", "tun0", str(frames))
    assert exchange.poll() is None, "the echo exchange ended before the injection: no concurrency tested"
    out, err = exchange.communicate(timeout=90)
    assert exchange.returncode == 0, f"echo exchange failed:\n{out}{err}"

    stats = sample.stop()
    expected: dict[str, int] = {}
    for name, (_, counters) in classes.items():
        for counter in counters:
            expected[counter] = expected.get(counter, 0) + copies[name]
    observed = drops(stats)
    decoded = {counter: [name for name in classes if value & copies[name]] for counter, value in observed.items()}
    assert observed == expected, f"drop counters differ; each counter counted these classes: {decoded}"
    # Nothing was lost on the way: the kernel handed netsock every packet, and netsock saw each one.
    tun = netns.link_stats("tun0")["tx"]
    assert tun["dropped"] == 0
    assert stats["ip"]["packets_received"] == tun["packets"]


def test_pcap_holds_exactly_the_exchanged_packets(netns: NetNS, start_echo: Callable[..., EchoSample]) -> None:
    sample = start_echo(pcap=True)
    assert ping(netns, NETSOCK_ADDRESS, 3) == 3
    echo = run_peer(netns, "udp-exchange", ECHO, "--count", "5", "--window", "1", "--max-size", "64")
    refused = run_peer(netns, "udp-refused", f"{NETSOCK_ADDRESS}:{CLOSED_PORT}")
    sample.stop()
    assert echo["sent"] == 5

    fields = ["frame.protocols", "ip.src", "ip.dst", "icmp.type", "icmp.code", "udp.srcport", "udp.dstport"]
    rows = read_pcap(sample.pcap_path, fields)

    def describe(row: dict[str, str]) -> tuple[str, str, str]:
        what = f"icmp {row['icmp.type']}/{row['icmp.code']}" if row["icmp.type"] else \
            f"udp {row['udp.srcport']}>{row['udp.dstport']}"
        return row["ip.src"], row["ip.dst"], what

    kernel, netsock = KERNEL_ADDRESS, NETSOCK_ADDRESS
    port, closed_from = echo["local_port"], refused["local_port"]
    expected = (
        [(kernel, netsock, "icmp 8/0"), (netsock, kernel, "icmp 0/0")] * 3
        + [(kernel, netsock, f"udp {port}>{ECHO_PORT}"), (netsock, kernel, f"udp {ECHO_PORT}>{port}")] * 5
        + [(kernel, netsock, f"udp {closed_from}>{CLOSED_PORT}"), (netsock, kernel, "icmp 3/3")]
    )
    assert [describe(row) for row in rows] == expected
    assert all(row["frame.protocols"].startswith("raw:ip:") for row in rows), "expected LINKTYPE_RAW frames"


def test_closed_port_refuses_a_connected_kernel_socket(netns: NetNS, start_echo: Callable[..., EchoSample]) -> None:
    sample = start_echo()
    assert run_peer(netns, "udp-refused", f"{NETSOCK_ADDRESS}:{CLOSED_PORT}")["outcome"] == "ECONNREFUSED"
    stats = sample.stop()
    assert stats["udp"]["unknown_port_errors"] == 1
    assert stats["icmp"]["v4_packets_sent"]["dst_unreachable"] == 1
