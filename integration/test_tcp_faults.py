"""Bulk TCP between netsock and the kernel over impaired paths: every byte arrives, exactly once.

The kernel peer (198.51.100.2, namespace ``peer``) reaches netsock (192.0.2.2 on tun0) through the
test's namespace acting as a router between a veth and tun0. Random loss is dropped there, in
FORWARD: a real loss for both TCPs. (iptables OUTPUT drops in the peer's own namespace would not be:
the kernel's TCP is told its packet was refused and resends it at once, without counting a loss.)
The tbf bottleneck is on tun0's egress, so its queue and tail drops are on the path too.

Each impairment runs both ways at once: a kernel client through the echo sample (netsock receives
and sends), and the netsock client sending to and receiving from a kernel server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import ECHO_PORT, KERNEL_CIDR, NETSOCK_ADDRESS
from integration.nsutil import ConnectSample, EchoSample, NetNS, PeerProcess, file_sha256, run_peer, write_seeded

PEER_ADDRESS = "198.51.100.2"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Impairment:
    router_commands: tuple[tuple[str, ...], ...]    # run in the router namespace
    sample_options: tuple[str, ...]                 # given to the netsock samples
    echo_bytes: int                                 # each way, through the echo
    client_bytes: int                               # each way, netsock client <-> kernel server
    netsock_evidence: tuple[str, ...]               # sample counters that must be non-zero (dotted paths)
    kernel_evidence: tuple[str, ...]                # the peer kernel's Tcp counters that must grow


def _random_drop(direction: str) -> tuple[str, ...]:
    return ("iptables", "-A", "FORWARD", direction, "tun0", "-m", "statistic", "--mode", "random",
            "--probability", "0.05", "-j", "DROP")


RANDOM_LOSS = Impairment(
    router_commands=(_random_drop("-i"), _random_drop("-o"),
                     ("tc", "qdisc", "add", "dev", "tun0", "root", "tbf", "rate", "20mbit", "burst", "16kb",
                      "latency", "25ms")),
    sample_options=(),
    # 100 MiB each way through the echo takes ~100 s here; the client test is sized to ~30 s.
    echo_bytes=100 * MIB, client_bytes=25 * MIB,
    netsock_evidence=("tcp.fast_retransmit", "tcp.sack_recovery"),
    kernel_evidence=("RetransSegs",))

FAULT_LINK = Impairment(
    router_commands=(),
    sample_options=("--fault", "delay=0.05,jitter=0.01,reorder=0.02,duplicate=0.01,corrupt=0.01,seed=11"),
    # With a 100 ms round trip and 1% of segments corrupted (lost), a few hundred kB/s at best.
    echo_bytes=4 * MIB, client_bytes=4 * MIB,
    netsock_evidence=("tcp.checksum_errors",
                      *(f"fault.tun0.{direction}.{fault}" for direction in ("inbound", "outbound")
                        for fault in ("corrupted", "duplicated", "reordered", "delayed"))),
    kernel_evidence=("InCsumErrors",))

IMPAIRMENTS = [pytest.param(RANDOM_LOSS, id="loss-5pct-each-way-tbf-20mbit"),
               pytest.param(FAULT_LINK, id="fault-link-delay-reorder-duplicate-corrupt")]


@pytest.fixture
def peer(netns: NetNS) -> Iterator[NetNS]:
    """The kernel peer's namespace, routed to netsock through the test's namespace."""
    ns = NetNS.create()
    try:
        netns.add_tun("tun0", KERNEL_CIDR)
        netns.add_veth("veth0", "198.51.100.1/24", ns, "veth0", f"{PEER_ADDRESS}/24")
        netns.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        ns.ip("route", "add", "192.0.2.0/24", "via", "198.51.100.1")
        # One segment per packet (no TSO over the veth): a forwarded drop loses one segment, not 45.
        ns.ip("link", "set", "veth0", "gso_max_segs", "1")
        yield ns
    finally:
        ns.close()


def counter(stats: dict[str, Any], path: str) -> int:
    value: Any = stats
    for key in path.split("."):
        value = value[key]
    return int(value)


def check_evidence(impairment: Impairment, stats: dict[str, Any], kernel_before: dict[str, int],
                   kernel_after: dict[str, int]) -> None:
    """The impairment really happened: netsock and the kernel both had to cope with it."""
    missing = [path for path in impairment.netsock_evidence if not counter(stats, path)]
    missing += [f"kernel {name}" for name in impairment.kernel_evidence if kernel_after[name] <= kernel_before[name]]
    assert not missing, f"no sign of the impairment in {missing}"


@pytest.mark.parametrize("impairment", IMPAIRMENTS)
def test_kernel_client_through_the_echo(netns: NetNS, peer: NetNS, tmp_path: Path, impairment: Impairment) -> None:
    for command in impairment.router_commands:
        netns.run(command)
    sample = EchoSample(netns, tmp_path, sample="tun_tcp_echo", options=impairment.sample_options)
    sample.wait_ready()
    kernel_before = peer.snmp("Tcp")
    result = run_peer(peer, "tcp-echo", f"{NETSOCK_ADDRESS}:{ECHO_PORT}", "--bytes", str(impairment.echo_bytes),
                      "--seed", "21", "--timeout", "120", timeout=600)
    assert result["ok"] == 1, result
    stats = sample.stop()
    check_evidence(impairment, stats, kernel_before, peer.snmp("Tcp"))


@pytest.mark.parametrize("impairment", IMPAIRMENTS)
def test_netsock_client_both_ways(netns: NetNS, peer: NetNS, tmp_path: Path, impairment: Impairment) -> None:
    for command in impairment.router_commands:
        netns.run(command)
    size = impairment.client_bytes
    upload = tmp_path / "upload.bin"
    upload_sha256 = write_seeded(upload, 22, size)
    server = PeerProcess(peer, "tcp-serve", f"{PEER_ADDRESS}:5001", "--send", str(size), "--seed", "23")
    server.wait_line("listening")
    kernel_before = peer.snmp("Tcp")
    client = ConnectSample(netns, tmp_path, f"{PEER_ADDRESS}:5001", stdin=upload,
                           options=impairment.sample_options)
    assert client.wait(timeout=600) == 0, client.stderr()
    result = server.result(timeout=60)
    assert result["received"] == size and result["received_sha256"] == upload_sha256, result
    assert client.stdout_path.stat().st_size == size
    assert file_sha256(client.stdout_path) == result["sent_sha256"]
    check_evidence(impairment, client.stats(), kernel_before, peer.snmp("Tcp"))
