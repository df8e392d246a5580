"""The udp_echo sample on a TAP device: Ethernet framing and ARP, both ways, with the kernel."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from integration.conftest import ECHO_PORT, KERNEL_ADDRESS, NETSOCK_ADDRESS
from integration.nsutil import EchoSample, NetNS, peer_argv, ping, read_pcap, run_peer

ARP_REQUEST, ARP_REPLY = "1", "2"


def test_tap_resolves_arp_both_ways_and_answers_ping(
        netns: NetNS, start_echo: Callable[..., EchoSample], tmp_path: Path) -> None:
    sample = start_echo("tap0", tap=True, pcap=True)
    kernel_mac = netns.link_address("tap0")

    # netsock resolves the kernel: a datagram put straight onto the link (so the kernel sends no ARP
    # request of its own) can only be echoed once netsock has asked for 192.0.2.1's address.
    payload = b"echo me once you know where I am"
    frame = (Ether(src=kernel_mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=KERNEL_ADDRESS, dst=NETSOCK_ADDRESS)
             / UDP(sport=5555, dport=ECHO_PORT) / Raw(payload))
    frames = tmp_path / "frame.hex"
    frames.write_text(bytes(frame).hex() + "\n")
    receiver = netns.popen(peer_argv("udp-receive", f"{KERNEL_ADDRESS}:5555", "--expect", payload.hex()),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert receiver.stdout and receiver.stdout.readline().strip() == "bound"
    run_peer(netns, "inject", "tap0", str(frames))
    out, _ = receiver.communicate(timeout=30)
    assert receiver.returncode == 0, f"the kernel never got the echo: {out}"

    # The kernel resolves netsock: with its neighbour table emptied, ping must start with an ARP request.
    netns.ip("neigh", "flush", "dev", "tap0")
    assert ping(netns, NETSOCK_ADDRESS, 5) == 5
    neighbours = {entry["dst"]: entry for entry in netns.neighbours("tap0")}  # before the link goes down
    stats = sample.stop()

    arp = read_pcap(sample.pcap_path, ["arp.opcode", "arp.src.hw_mac", "arp.src.proto_ipv4", "arp.dst.proto_ipv4"])
    netsock_replies = [row for row in arp if row["arp.opcode"] == ARP_REPLY
                       and row["arp.src.proto_ipv4"] == NETSOCK_ADDRESS]
    assert netsock_replies, "netsock never answered the kernel's ARP request"
    netsock_mac = netsock_replies[0]["arp.src.hw_mac"]
    conversation = {(row["arp.opcode"], row["arp.src.hw_mac"], row["arp.src.proto_ipv4"], row["arp.dst.proto_ipv4"])
                    for row in arp if row["arp.opcode"]}
    assert conversation >= {
        (ARP_REQUEST, netsock_mac, NETSOCK_ADDRESS, KERNEL_ADDRESS),  # netsock asks for the kernel
        (ARP_REPLY, kernel_mac, KERNEL_ADDRESS, NETSOCK_ADDRESS),
        (ARP_REQUEST, kernel_mac, KERNEL_ADDRESS, NETSOCK_ADDRESS),  # the kernel asks for netsock
        (ARP_REPLY, netsock_mac, NETSOCK_ADDRESS, KERNEL_ADDRESS),
    }, conversation

    frames_from_netsock = read_pcap(sample.pcap_path, ["eth.src", "ip.src", "arp.src.proto_ipv4"])
    assert {row["eth.src"] for row in frames_from_netsock
            if NETSOCK_ADDRESS in (row["ip.src"], row["arp.src.proto_ipv4"])} == {netsock_mac}
    assert neighbours.get(NETSOCK_ADDRESS, {}).get("lladdr") == netsock_mac, neighbours

    assert stats["arp"]["requests_sent"] >= 1 and stats["arp"]["replies_received"] >= 1
    assert stats["arp"]["requests_received"] >= 1 and stats["arp"]["replies_sent"] >= 1
    assert stats["icmp"]["v4_packets_sent"]["echo_reply"] == 5
    assert stats["udp"]["packets_sent"] == 1
