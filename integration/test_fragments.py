"""Hostile IPv4 and IPv6 fragments from the kernel side of a TUN device: overlaps, tiny fragments,
too many fragments, bad lengths and a flood of datagrams that never complete. The reassembler must
drop what it must (counted), keep its memory bounded, and the stack must keep answering meanwhile."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.packet import Raw
from scapy.utils import checksum

from integration.conftest import ECHO_PORT, KERNEL_CIDR, NETSOCK_ADDRESS
from integration.nsutil import EchoSample, NetNS, PeerProcess, ping, run_peer
from netsock.scheduler import blocking
from netsock.stack import Stack
from netsock.tcpip import UDP_PROTOCOL_NUMBER, FullAddress, SockOpt
from netsock.waiter import EventMask, WaiterQueue

NETNS_IPV6 = True                       # conftest's netns fixture leaves IPv6 on in these tests' namespaces

KERNEL6 = "2001:db8::1"
NETSOCK6 = "2001:db8::2"
# The hostile fragments come from other hosts on the link, so that no datagram of the kernel's own
# traffic (its IPv4 identifications are sequential) ever shares a reassembly key with them.
HOSTILE4 = "192.0.2.3"
HOSTILE6 = "2001:db8::3"
OVERLAPPING = 20                        # datagrams per family and kind of overlap
FLOOD = 20000                           # never-completed datagrams per family
FLOOD_FRAGMENT = 1400                   # payload bytes of each: a 1.4 KB receive buffer held per datagram
# The reassembler holds at most 4 MB per protocol (high_threshold), its bookkeeping included; left
# unbounded the flood would hold FLOOD * 2 * ~1.5 KB = ~60 MB. The bound allows for the allocator.
RSS_GROWTH_LIMIT_KB = 24 * 1024


@pytest.fixture
def echo(netns: NetNS, tmp_path: Path) -> Iterator[EchoSample]:
    """udp_echo on tun0 at 192.0.2.2 and 2001:db8::2 (port 7); the kernel side is .1 of each."""
    netns.add_tun("tun0", KERNEL_CIDR)
    netns.ip("-6", "addr", "add", f"{KERNEL6}/64", "dev", "tun0", "nodad")
    sample = EchoSample(netns, tmp_path, address=NETSOCK6, options=["--address", NETSOCK_ADDRESS])
    sample.wait_ready()
    yield sample


def rss_kb(pid: int) -> int:
    """Resident set size of process pid, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def udp_datagram(v6: bool, payload: bytes, sport: int = 6000) -> bytes:
    """A UDP datagram to netsock's echo port, checksum included: the bytes to fragment."""
    ip = IPv6(src=HOSTILE6, dst=NETSOCK6) if v6 else IP(src=HOSTILE4, dst=NETSOCK_ADDRESS)
    return bytes((ip / UDP(sport=sport, dport=ECHO_PORT) / Raw(payload))[UDP])


def fragment(v6: bool, ident: int, offset: int, more: bool, data: bytes) -> bytes:
    """One fragment of UDP datagram ``ident`` carrying ``data`` at byte ``offset``."""
    if v6:
        return bytes(IPv6(src=HOSTILE6, dst=NETSOCK6)
                     / IPv6ExtHdrFragment(nh=17, offset=offset // 8, m=int(more), id=ident) / Raw(data))
    return bytes(IP(src=HOSTILE4, dst=NETSOCK_ADDRESS, proto=17, id=ident, flags="MF" if more else 0,
                    frag=offset // 8) / Raw(data))


def hostile_fragments(v6: bool) -> list[bytes]:
    """Each kind of fragment a reassembler must refuse, and tiny ones it must accept, for one family."""
    frames = []
    body = udp_datagram(v6, bytes(range(88)))                   # 96 bytes
    for i in range(OVERLAPPING):
        # The second fragment overlaps the first (RFC 5722): the datagram is abandoned, and its
        # last fragment, arriving after that, is discarded.
        frames += [fragment(v6, 0x1000 + i, 0, True, body[:48]), fragment(v6, 0x1000 + i, 40, True, body[40:64]),
                   fragment(v6, 0x1000 + i, 64, False, body[64:])]
        # A fragment inside another (as in "teardrop"): the same.
        frames += [fragment(v6, 0x2000 + i, 0, True, body[:64]), fragment(v6, 0x2000 + i, 16, True, body[16:24]),
                   fragment(v6, 0x2000 + i, 64, False, body[64:])]
    # Tiny fragments (8 bytes each, the UDP header alone in the first) make a valid datagram: echoed.
    frames += [fragment(v6, 0x3000, offset, offset + 8 < len(body), body[offset:offset + 8])
               for offset in range(0, len(body), 8)]
    # More fragments than any datagram needs (IPv4 allows 128, IPv6 64): abandoned.
    many = udp_datagram(v6, bytes(200 * 8 - 8))
    frames += [fragment(v6, 0x4000, offset, offset + 8 < len(many), many[offset:offset + 8])
               for offset in range(0, len(many), 8)]
    # A fragment that is not the last but not a multiple of 8 bytes long: malformed on its own.
    frames.append(fragment(v6, 0x5000, 0, True, body[:12]))
    return frames


def flood(v6: bool) -> Iterator[bytes]:
    """FLOOD first fragments whose datagrams never complete: one scapy-built fragment, its
    identification rewritten (and the IPv4 header checksum with it) for each datagram."""
    template = bytearray(fragment(v6, 0, 0, True, bytes(FLOOD_FRAGMENT)))
    for ident in range(0x8000, 0x8000 + FLOOD):                # clear of hostile_fragments' ones
        if v6:
            struct.pack_into("!I", template, 44, ident)         # the fragment header's identification
        else:
            struct.pack_into("!H", template, 4, ident)
            struct.pack_into("!H", template, 10, 0)
            struct.pack_into("!H", template, 10, checksum(bytes(template[:20])))
        yield bytes(template)


def test_hostile_fragments_are_dropped_with_bounded_memory(netns: NetNS, echo: EchoSample, tmp_path: Path) -> None:
    # Warm up (a few fragmented datagrams each way) before measuring the resident set.
    for server in (f"{NETSOCK_ADDRESS}:{ECHO_PORT}", f"[{NETSOCK6}]:{ECHO_PORT}"):
        run_peer(netns, "udp-exchange", server, "--count", "20", "--max-size", "4000", "--seed", "1")
    pid = echo.proc.pid
    assert b"netsock.samples.udp_echo" in Path(f"/proc/{pid}/cmdline").read_bytes()   # ip netns exec execs it
    rss_before = rss_kb(pid)

    # Paced so that the device queue never overflows: every one of these reaches netsock.
    hostile = tmp_path / "hostile.hex"
    hostile.write_text("".join(frame.hex() + "\n" for v6 in (False, True) for frame in hostile_fragments(v6)))
    run_peer(netns, "inject", "tun0", str(hostile), "--gap", "0.0002")
    assert netns.link_stats("tun0")["tx"]["dropped"] == 0

    # As fast as the kernel takes them (the device queue may overflow); meanwhile the kernel pings
    # netsock and echoes datagrams through it.
    flood_frames = tmp_path / "flood.hex"
    flood_frames.write_text("".join(frame.hex() + "\n" for v6 in (False, True) for frame in flood(v6)))
    pings = [netns.popen(["ping", "-n", "-c", "25", "-i", "0.1", "-W", "2", address], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True) for address in (NETSOCK_ADDRESS, NETSOCK6)]
    exchange = PeerProcess(netns, "udp-exchange", f"[{NETSOCK6}]:{ECHO_PORT}", "--duration", "2", "--window", "4",
                           "--max-size", "3000", "--seed", "2")
    run_peer(netns, "inject", "tun0", str(flood_frames), "--gap", "0", timeout=120)
    rss_after_flood = rss_kb(pid)
    during = exchange.result(timeout=60)
    assert during["completed"] == during["datagrams"] > 0 and during["corrupt"] == 0, during
    for proc in pings:
        out, _ = proc.communicate(timeout=30)
        # A request may be dropped with the flood at the device's full queue, before netsock sees it (the
        # stats below check that every request that reached netsock was answered); nearly all get through.
        received = re.search(r"(\d+) received", out)
        assert received and int(received.group(1)) >= 20, out

    # After: fragmented datagrams of both families still reassemble and come back whole.
    for server in (f"{NETSOCK_ADDRESS}:{ECHO_PORT}", f"[{NETSOCK6}]:{ECHO_PORT}"):
        after = run_peer(netns, "udp-exchange", server, "--count", "200", "--min-size", "2000", "--max-size", "6000",
                         "--seed", "3")
        assert after["completed"] == 200 and after["corrupt"] == 0, after
    assert ping(netns, NETSOCK6, 2) == 2
    rss_after = rss_kb(pid)
    flooded = 2 * FLOOD - netns.link_stats("tun0")["tx"]["dropped"]   # what reached netsock
    stats = echo.stop()

    reassembly = stats["ip"]["reassembly"]
    assert stats["ip"]["fragments_received"] >= flooded + len(hostile.read_text().split())
    assert reassembly["overlaps"] == 2 * 2 * OVERLAPPING
    # The last fragment after each overlap, and those after the one too many (IPv4's 129th, IPv6's 65th).
    assert reassembly["discarded"] == 2 * 2 * OVERLAPPING + (200 - 129) + (200 - 65)
    assert reassembly["too_many_fragments"] == 2
    assert stats["ip"]["malformed_fragments_received"] == 2
    assert reassembly["evicted"] >= flooded - 2 * 4 * 1024 * 1024 // FLOOD_FRAGMENT   # all but what fits in 4 MB
    assert reassembly["completed"] >= 2 + 400                         # the tiny ones, the exchanges after
    assert stats["icmp"]["v6_packets_sent"]["param_problem"] == 1      # for the IPv6 fragment of a bad length
    icmp = stats["icmp"]
    assert icmp["v4_packets_sent"]["echo_reply"] == icmp["v4_packets_received"]["echo"] > 0
    assert icmp["v6_packets_sent"]["echo_reply"] == icmp["v6_packets_received"]["echo_request"] > 0
    growth = rss_after - rss_before
    assert growth < RSS_GROWTH_LIMIT_KB, (rss_before, rss_after_flood, rss_after)


# The kernel's own answer to the same question: a 3,000-byte datagram over its loopback at MTU 1,500.
KERNEL_FRAGSIZE = """
import socket
receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver.bind(("127.0.0.1", 0))
receiver.setsockopt(socket.IPPROTO_IP, 25, 1)       # IP_RECVFRAGSIZE
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(bytes(3000), receiver.getsockname())
[(level, kind, data)] = receiver.recvmsg(4000, 64)[1]
print(int.from_bytes(data, "little"))
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(bytes(3000), ("%s", 6000))
"""


def test_a_reassembled_datagram_tells_its_largest_fragment_as_the_kernels(netns: NetNS, tun_stack: Stack) -> None:
    """IP_RECVFRAGSIZE: the kernel cuts a 3,000-byte datagram to netsock at tun0's MTU of 1,500; what
    netsock's reader is told of the largest fragment is what the kernel tells its own over a loopback of
    the same MTU."""
    queue = WaiterQueue()
    endpoint = tun_stack.new_endpoint(UDP_PROTOCOL_NUMBER, 0x0800, queue)
    endpoint.set_sock_opt(SockOpt.RECEIVE_FRAGMENT_SIZE, True)
    endpoint.bind(FullAddress(0, b"", 6000))
    netns.ip("link", "set", "lo", "mtu", "1500")
    kernel = int(netns.run([sys.executable, "-c", KERNEL_FRAGSIZE % NETSOCK_ADDRESS]).stdout)
    with gevent.Timeout(10):
        result = blocking(endpoint, queue, EventMask.IN, endpoint.read)
    assert (len(result.data), result.control.fragment_size) == (3000, kernel) and kernel == 1500
    endpoint.close()
