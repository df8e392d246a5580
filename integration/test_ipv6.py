"""The samples over IPv6 (and dual-stack) against the Linux kernel: ping and neighbour discovery
both ways, TCP both ways, UDP datagrams fragmented in both directions, duplicate address detection,
and multicast from the kernel to a netsock group member with its IGMP and MLD reports."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from integration.conftest import ECHO_PORT, KERNEL_CIDR, NETSOCK_ADDRESS
from integration.nsutil import (ConnectSample, EchoSample, NetNS, PeerProcess, file_sha256, peer_argv, ping, read_pcap,
                                run_peer, write_seeded)

NETNS_IPV6 = True                       # conftest's netns fixture leaves IPv6 on in these tests' namespaces

KERNEL6 = "2001:db8::1"
KERNEL6_CIDR = f"{KERNEL6}/64"
NETSOCK6 = "2001:db8::2"
GROUP4 = "239.1.2.3"
GROUP6 = "ff15::1234"                   # transient, site-local scope: MLD reports it
NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT, MLDV2_REPORT = "135", "136", "143"
IGMPV3_REPORT = "0x22"
CHANGE_TO_INCLUDE, CHANGE_TO_EXCLUDE = "3", "4"     # group records of a leave and a join (RFC 3376 §4.2.12)
TCP_BYTES = 10 * 1024 * 1024
CONNECT_BYTES = 1024 * 1024
BIG_DATAGRAM = 30000                    # 21 IPv6 fragments, 21 IPv4 fragments at MTU 1500


def add_device(netns: NetNS, device: str, tap: bool, kernel_ipv6: str = KERNEL6_CIDR) -> None:
    """The device with the kernel side at 192.0.2.1/24 and ``kernel_ipv6`` (nodad: usable at once)."""
    (netns.add_tap if tap else netns.add_tun)(device, KERNEL_CIDR)
    netns.ip("-6", "addr", "add", kernel_ipv6, "dev", device, "nodad")


def start(netns: NetNS, tmp_path: Path, device: str = "tun0", *, tap: bool = False, pcap: bool = False,
          sample: str = "udp_echo", options: Sequence[str] = ()) -> EchoSample:
    """A dual-stack sample: 2001:db8::2 (the positional address) and 192.0.2.2, port 7."""
    sample_proc = EchoSample(netns, tmp_path, device=device, address=NETSOCK6, port=ECHO_PORT, tap=tap, pcap=pcap,
                             sample=sample, options=["--address", NETSOCK_ADDRESS, *options])
    sample_proc.wait_ready()
    return sample_proc


def kernel_reassembled(netns: NetNS, v6: bool) -> int:
    """How many datagrams the namespace's kernel has reassembled (/proc/net/snmp, /proc/net/snmp6)."""
    if not v6:
        return netns.snmp("Ip")["ReasmOKs"]
    counters = dict(line.split() for line in netns.run(["cat", "/proc/net/snmp6"]).stdout.splitlines())
    return int(counters["Ip6ReasmOKs"])


def test_kernel_ping6_over_tun(netns: NetNS, tmp_path: Path) -> None:
    add_device(netns, "tun0", tap=False)
    sample = start(netns, tmp_path)
    assert ping(netns, NETSOCK6, 5) == 5
    assert ping(netns, NETSOCK_ADDRESS, 2) == 2   # and IPv4 still, on the same stack
    stats = sample.stop()
    assert stats["icmp"]["v6_packets_received"]["echo_request"] == 5
    assert stats["icmp"]["v6_packets_sent"]["echo_reply"] == 5
    assert stats["icmp"]["v4_packets_sent"]["echo_reply"] == 2
    # A TUN link has no neighbours: no NDP at all.
    sent = stats["icmp"]["v6_packets_sent"]
    assert sent["neighbor_solicit"] == sent["neighbor_advert"] == 0


def test_tap_neighbour_discovery_both_ways_and_ping6(netns: NetNS, tmp_path: Path) -> None:
    add_device(netns, "tap0", tap=True)
    sample = start(netns, tmp_path, "tap0", tap=True, pcap=True)
    kernel_mac = netns.link_address("tap0")

    # netsock resolves the kernel: a datagram put straight onto the link (so the kernel sends no
    # neighbour solicitation of its own first) can only be echoed once netsock has asked for 2001:db8::1.
    payload = b"echo me once you have solicited me"
    frame = (Ether(src=kernel_mac, dst="ff:ff:ff:ff:ff:ff") / IPv6(src=KERNEL6, dst=NETSOCK6)
             / UDP(sport=5555, dport=ECHO_PORT) / Raw(payload))
    frames = tmp_path / "frame.hex"
    frames.write_text(bytes(frame).hex() + "\n")
    receiver = netns.popen(peer_argv("udp-receive", f"[{KERNEL6}]:5555", "--expect", payload.hex()),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert receiver.stdout and receiver.stdout.readline().strip() == "bound"
    run_peer(netns, "inject", "tap0", str(frames))
    out, _ = receiver.communicate(timeout=30)
    assert receiver.returncode == 0, f"the kernel never got the echo: {out}"

    # The kernel resolves netsock: with its neighbour table emptied, ping -6 starts with a solicitation.
    netns.ip("-6", "neigh", "flush", "dev", "tap0")
    assert ping(netns, NETSOCK6, 5) == 5
    neighbours = {entry["dst"]: entry for entry in netns.neighbours("tap0")}  # before the link goes down
    stats = sample.stop()

    ndp = read_pcap(sample.pcap_path, ["icmpv6.type", "eth.src", "ipv6.src", "icmpv6.nd.ns.target_address",
                                       "icmpv6.nd.na.target_address", "icmpv6.opt.linkaddr"])
    netsock_adverts = [row for row in ndp if row["icmpv6.type"] == NEIGHBOR_ADVERT
                       and row["icmpv6.nd.na.target_address"] == NETSOCK6]
    assert netsock_adverts, "netsock never answered the kernel's neighbour solicitation"
    netsock_mac = netsock_adverts[0]["eth.src"]
    assert netsock_adverts[0]["icmpv6.opt.linkaddr"] == netsock_mac
    conversation = {(row["icmpv6.type"], row["eth.src"],
                     row["icmpv6.nd.ns.target_address"] or row["icmpv6.nd.na.target_address"])
                    for row in ndp if row["icmpv6.type"] in (NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT)}
    assert conversation >= {
        (NEIGHBOR_SOLICIT, netsock_mac, NETSOCK6),    # netsock's duplicate address detection ...
        (NEIGHBOR_SOLICIT, netsock_mac, KERNEL6),     # ... netsock asks for the kernel
        (NEIGHBOR_ADVERT, kernel_mac, KERNEL6),
        (NEIGHBOR_SOLICIT, kernel_mac, NETSOCK6),     # the kernel asks for netsock
        (NEIGHBOR_ADVERT, netsock_mac, NETSOCK6),
    }, conversation
    dad = [row for row in ndp if row["icmpv6.type"] == NEIGHBOR_SOLICIT and row["ipv6.src"] == "::"]
    assert {row["icmpv6.nd.ns.target_address"] for row in dad} >= {NETSOCK6}, dad
    assert neighbours.get(NETSOCK6, {}).get("lladdr") == netsock_mac, neighbours

    sent, received = stats["icmp"]["v6_packets_sent"], stats["icmp"]["v6_packets_received"]
    assert sent["neighbor_solicit"] >= 2 and received["neighbor_advert"] >= 1   # DAD + resolving the kernel
    assert received["neighbor_solicit"] >= 1 and sent["neighbor_advert"] >= 1
    assert sent["echo_reply"] == 5 and stats["udp"]["packets_sent"] == 1
    assert stats["ip"]["duplicate_addresses_detected"] == 0


def test_tcp_echo_returns_10mb_over_ipv6(netns: NetNS, tmp_path: Path) -> None:
    add_device(netns, "tun0", tap=False)
    sample = start(netns, tmp_path, sample="tun_tcp_echo")
    result = run_peer(netns, "tcp-echo", f"[{NETSOCK6}]:{ECHO_PORT}", "--bytes", str(TCP_BYTES), "--seed", "6",
                      timeout=120)
    assert result["ok"] == 1, result
    stats = sample.stop()
    assert stats["tcp"]["passive_connection_openings"] == 1
    assert stats["tcp"]["checksum_errors"] == stats["tcp"]["invalid_segments_received"] == 0


def test_tcp_connect_over_ipv6_on_tap(netns: NetNS, tmp_path: Path) -> None:
    """An IPv6-only netsock client (its MAC from its IPv6 address; duplicate address detection first)
    exchanges 1 MB each way with a kernel server."""
    add_device(netns, "tap0", tap=True)
    upload = tmp_path / "upload.bin"
    upload_sha256 = write_seeded(upload, 7, CONNECT_BYTES)
    server = PeerProcess(netns, "tcp-serve", f"[{KERNEL6}]:5001", "--send", str(CONNECT_BYTES), "--seed", "8")
    server.wait_line("listening")
    pcap = tmp_path / "connect.pcap"
    client = ConnectSample(netns, tmp_path, f"{KERNEL6}:5001", stdin=upload, device="tap0", address=f"{NETSOCK6}/64",
                           options=["--tap", "--pcap", str(pcap)])
    assert client.wait(timeout=60) == 0, client.stderr()
    result = server.result(timeout=30)
    assert result["received"] == CONNECT_BYTES and result["received_sha256"] == upload_sha256, result
    assert result["peer"].startswith(f"{NETSOCK6}:")
    assert file_sha256(client.stdout_path) == result["sent_sha256"]
    assert client.stats()["tcp"]["active_connection_openings"] == 1
    sources = {row["eth.src"] for row in read_pcap(pcap, ["eth.src", "ipv6.src"]) if row["ipv6.src"] == NETSOCK6}
    assert sources == {"02:00:00:00:00:02"}, sources       # tun.mac_for of the address's last 4 bytes


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_fragmented_datagrams_echoed_whole(netns: NetNS, tmp_path: Path, v6: bool) -> None:
    """30 KB datagrams: the kernel fragments them at MTU 1500 and netsock reassembles; netsock
    fragments its echoes and the kernel reassembles them."""
    add_device(netns, "tun0", tap=False)
    sample = start(netns, tmp_path)
    before = kernel_reassembled(netns, v6)
    server = f"[{NETSOCK6}]:{ECHO_PORT}" if v6 else f"{NETSOCK_ADDRESS}:{ECHO_PORT}"
    result = run_peer(netns, "udp-exchange", server, "--count", "40", "--seed", "30", "--min-size", str(BIG_DATAGRAM),
                      "--max-size", str(BIG_DATAGRAM), "--window", "4", "--retry-after", "1")
    assert result["completed"] == 40 and result["corrupt"] == 0, result
    echoes_reassembled = kernel_reassembled(netns, v6) - before
    stats = sample.stop()
    assert stats["ip"]["reassembly"]["completed"] == stats["udp"]["packets_received"] == result["sent"]
    assert stats["udp"]["packets_sent"] == result["sent"]
    assert echoes_reassembled >= result["sent"]
    assert stats["ip"]["fragments_received"] == 21 * result["sent"]
    assert stats["ip"]["reassembly_failures"] == stats["ip"]["malformed_fragments_received"] == 0


def test_dad_detects_an_address_the_kernel_holds(netns: NetNS, tmp_path: Path) -> None:
    add_device(netns, "tap0", tap=True, kernel_ipv6=f"{NETSOCK6}/64")     # the kernel has netsock's address
    sample = start(netns, tmp_path, "tap0", tap=True, pcap=True)
    assert f"udp_echo: WARNING: duplicate address {NETSOCK6} on tap0" in sample.output()
    assert ping(netns, NETSOCK_ADDRESS, 2) == 2   # the stack works on, without the address
    stats = sample.stop()

    assert stats["ip"]["duplicate_addresses_detected"] == 1
    addresses = stats["addresses"]["tap0"]
    assert f"{NETSOCK_ADDRESS}/32" in addresses and not any(a.startswith(f"{NETSOCK6}/") for a in addresses), addresses
    assert any(a.startswith("fe80::") for a in addresses), addresses     # its link-local address was unique
    packets = read_pcap(sample.pcap_path, ["icmpv6.type", "ipv6.src", "icmpv6.nd.na.target_address", "eth.src"])
    netsock_mac = "02:00:c0:00:02:02"      # tun.mac_for(192.0.2.2)
    from_netsock = [row for row in packets if row["eth.src"] == netsock_mac]
    assert not [row for row in from_netsock if row["ipv6.src"] == NETSOCK6], "netsock used a duplicate address"
    assert not [row for row in from_netsock if row["icmpv6.nd.na.target_address"] == NETSOCK6]
    assert [row for row in packets if row["icmpv6.type"] == NEIGHBOR_ADVERT and row["eth.src"] != netsock_mac
            and row["icmpv6.nd.na.target_address"] == NETSOCK6], "the kernel never defended its address"


@pytest.mark.parametrize("tap", [False, True], ids=["tun", "tap"])
def test_kernel_multicast_reaches_a_group_member(netns: NetNS, tmp_path: Path, tap: bool) -> None:
    device = "tap0" if tap else "tun0"
    add_device(netns, device, tap=tap)
    netns.ip("route", "add", f"{GROUP4}/32", "dev", device)
    netns.ip("-6", "route", "add", f"{GROUP6}/128", "dev", device)
    sample = start(netns, tmp_path, device, tap=tap, pcap=True, options=["--join", GROUP4, "--join", GROUP6])
    for group, member in ((GROUP4, NETSOCK_ADDRESS), (f"[{GROUP6}]", NETSOCK6)):
        result = run_peer(netns, "udp-multicast", f"{group}:{ECHO_PORT}", "--device", device, "--count", "5")
        assert result["echoed"] == 5 and result["sources"] == [f"{member}:{ECHO_PORT}"], result
    stats = sample.stop()
    assert stats["udp"]["packets_received"] == stats["udp"]["packets_sent"] >= 10

    # Joining reports the group (a second, robustness, copy follows within a second: maybe after the
    # test); leaving on exit reports that at once.
    igmp = [row for row in read_pcap(sample.pcap_path, ["igmp.type", "ip.src", "ip.dst", "igmp.maddr",
                                                         "igmp.record_type"])
            if row["igmp.type"] == IGMPV3_REPORT and row["igmp.maddr"] == GROUP4]
    assert igmp and all(row["ip.src"] == NETSOCK_ADDRESS and row["ip.dst"] == "224.0.0.22" for row in igmp), igmp
    assert [row["igmp.record_type"] for row in igmp] in (
        [CHANGE_TO_EXCLUDE, CHANGE_TO_INCLUDE], [CHANGE_TO_EXCLUDE, CHANGE_TO_EXCLUDE, CHANGE_TO_INCLUDE]), igmp
    mld = [row for row in read_pcap(sample.pcap_path, ["icmpv6.type", "ipv6.src", "ipv6.dst",
                                                       "icmpv6.mldr.mar.multicast_address",
                                                       "icmpv6.mldr.mar.record_type"])
           if row["icmpv6.type"] == MLDV2_REPORT and row["icmpv6.mldr.mar.multicast_address"] == GROUP6]
    if tap:     # (MLD runs with neighbour discovery: on links that need address resolution)
        # From netsock's link-local address (RFC 3810 §5.2.13) to all MLDv2 routers.
        assert mld and all(row["ipv6.src"].startswith("fe80::") and row["ipv6.dst"] == "ff02::16" for row in mld), mld
        assert [row["icmpv6.mldr.mar.record_type"] for row in mld] in (
            [CHANGE_TO_EXCLUDE, CHANGE_TO_INCLUDE], [CHANGE_TO_EXCLUDE, CHANGE_TO_EXCLUDE, CHANGE_TO_INCLUDE]), mld
