"""NetsockSocket's AF_PACKET sockets, with the values Linux's give (CPython's sockaddr_ll tuples:
(ifname, proto, pkttype, hatype, addr)), on an Ethernet channel NIC "eth0" beside the adapter's
loopback: frames the test puts on the wire are read, frames sockets send are taken off it (the tests
never block, so the stack's timers send nothing meanwhile)."""

from __future__ import annotations

import ast
import errno
import inspect
import os
import select
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from netsock.adapter import NetsockSocket
from netsock.link.channel import ChannelEndpoint
from netsock.stack import Stack

ETH_P_ALL, LLDP = 3, 0x88CC
OWN, PEER = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
PACKET_HOST, PACKET_OUTGOING, ARPHRD_ETHER, ARPHRD_LOOPBACK = 0, 4, 1, 772


@pytest.fixture
def link(stack: Stack) -> Iterator[ChannelEndpoint]:
    channel = ChannelEndpoint(link_address=OWN, ethernet=True)
    stack.create_nic(7, channel, name="eth0")
    channel.drain()             # the stack's own first words (IPv6's MLD reports): not the tests'
    yield channel


@pytest.fixture
def sockets() -> Iterator[list[NetsockSocket]]:
    made: list[NetsockSocket] = []
    yield made
    for sock in made:
        sock.close()


def packet_socket(made: list[NetsockSocket], kind: int = socket.SOCK_RAW, proto: int = ETH_P_ALL) -> NetsockSocket:
    sock = NetsockSocket(socket.AF_PACKET, kind, socket.htons(proto))
    sock.settimeout(0)
    made.append(sock)
    return sock


def lldp(dst: bytes = OWN, src: bytes = PEER, payload: bytes = b"chassis") -> bytes:
    return bytes(Ether(dst=dst, src=src, type=LLDP) / Raw(payload))


def test_identity_and_addresses(link: ChannelEndpoint, sockets: list[NetsockSocket]) -> None:
    sock = packet_socket(sockets)
    assert (sock.family, sock.type, sock.proto) == (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    assert sock.getsockname() == ("", ETH_P_ALL, 0, 0, b"")
    sock.bind(("eth0", 0))                   # protocol 0: keep the socket's
    assert sock.getsockname() == ("eth0", ETH_P_ALL, 0, ARPHRD_ETHER, OWN)
    sock.bind(("eth0", LLDP))
    assert sock.getsockname() == ("eth0", LLDP, 0, ARPHRD_ETHER, OWN)


def test_argument_errors_as_cpython_and_linux(link: ChannelEndpoint, sockets: list[NetsockSocket]) -> None:
    sock = packet_socket(sockets)
    with pytest.raises(OSError) as info:
        sock.bind(("nosuch0", 0))
    assert info.value.errno == errno.ENODEV
    with pytest.raises(TypeError):
        sock.bind("eth0")
    with pytest.raises(TypeError):
        sock.bind(("eth0",))
    with pytest.raises(OverflowError):
        sock.bind(("eth0", 0x10000))
    with pytest.raises(ValueError):
        sock.sendto(b"x", ("eth0", 0, 0, 0, bytes(9)))
    assert sock.connect_ex(("eth0", 0)) == errno.EOPNOTSUPP
    with pytest.raises(OSError) as info:
        NetsockSocket(socket.AF_PACKET, socket.SOCK_STREAM, 0)
    assert info.value.errno == errno.ESOCKTNOSUPPORT


def test_raw_and_dgram_read_a_received_frame(link: ChannelEndpoint, sockets: list[NetsockSocket]) -> None:
    raw, cooked = packet_socket(sockets), packet_socket(sockets, socket.SOCK_DGRAM, LLDP)
    assert select.select([raw, cooked], [], [], 0)[0] == []
    link.inject(0, lldp())

    assert select.select([raw, cooked], [], [], 0)[0] == [raw, cooked]
    assert raw.recvfrom(2048) == (lldp(), ("eth0", LLDP, PACKET_HOST, ARPHRD_ETHER, PEER))
    assert cooked.recvfrom(2048) == (b"chassis", ("eth0", LLDP, PACKET_HOST, ARPHRD_ETHER, PEER))
    with pytest.raises(BlockingIOError):
        raw.recv(2048)


def test_sendto_writes_the_frame_and_others_read_it_as_outgoing(link: ChannelEndpoint,
                                                                sockets: list[NetsockSocket]) -> None:
    writer, watcher = packet_socket(sockets), packet_socket(sockets)
    frame = lldp(dst=PEER, src=OWN)
    assert writer.sendto(frame, ("eth0", 0)) == len(frame)

    assert [info.data for info in link.drain()] == [frame]
    assert watcher.recvfrom(2048) == (frame, ("eth0", LLDP, PACKET_OUTGOING, ARPHRD_ETHER, OWN))
    with pytest.raises(BlockingIOError):
        writer.recv(2048)


def test_dgram_builds_the_header_and_send_goes_to_the_bound_nic(link: ChannelEndpoint,
                                                               sockets: list[NetsockSocket]) -> None:
    sock = packet_socket(sockets, socket.SOCK_DGRAM, LLDP)
    sock.sendto(b"to peer", ("eth0", LLDP, 0, ARPHRD_ETHER, PEER))
    raw = packet_socket(sockets)
    raw.bind(("eth0", 0))
    raw.send(lldp(dst=PEER, src=OWN, payload=b"bound"))
    assert [info.data for info in link.drain()] == [lldp(dst=PEER, src=OWN, payload=b"to peer"),
                                                     lldp(dst=PEER, src=OWN, payload=b"bound")]


def test_bound_to_one_nic_reads_nothing_of_another(stack: Stack, link: ChannelEndpoint,
                                                   sockets: list[NetsockSocket]) -> None:
    other = ChannelEndpoint(link_address=bytes.fromhex("020000000003"), ethernet=True)
    stack.create_nic(8, other, name="eth1")
    sock = packet_socket(sockets)
    sock.bind(("eth1", 0))
    link.inject(0, lldp())
    other.inject(0, lldp(dst=bytes.fromhex("020000000003")))
    assert sock.recvfrom(2048)[1] == ("eth1", LLDP, PACKET_HOST, ARPHRD_ETHER, PEER)
    with pytest.raises(BlockingIOError):
        sock.recv(2048)


# --- against the kernel's, on a veth pair in a namespace of the test's own --------------------------------

VA, VB = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")


def loopback_scenario(make: Any) -> list[Any]:
    """A UDP datagram to 127.0.0.1, seen on lo: each read's link header (or, cooked, first byte), length
    and address (the IP header's identification and checksum are the stack's own)."""
    import socket
    tap = make(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    tap.bind(("lo", 0))
    cooked = make(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    cooked.bind(("lo", 0x0800))
    udp = make(socket.AF_INET, socket.SOCK_DGRAM, 0)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(2)
    udp.sendto(b"looped", udp.getsockname())
    udp.recv(64)
    seen = []
    for s, shown in ((tap, 14), (cooked, 1)):
        s.setblocking(False)
        try:
            while True:
                data, address = s.recvfrom(4096)
                seen.append((data[:shown], len(data), address))
        except BlockingIOError:
            pass
    for s in (tap, cooked, udp):
        s.close()
    return seen


def veth_scenario(make: Any) -> list[Any]:
    """Frames between two wired NICs "va" and "vb" (VA, VB), seen by packet sockets of each: what every
    socket reads. Self-contained (the kernel's run executes its source in a namespace)."""
    import socket
    va, vb, lldp = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b"), 0x88CC
    frame = vb + va + lldp.to_bytes(2, "big") + bytes(range(50))

    def sock(kind: int, proto: int, ifname: str) -> Any:
        s = make(socket.AF_PACKET, kind, socket.htons(proto))
        s.bind((ifname, proto))
        s.settimeout(2)
        return s

    def lldp_frames(s: Any) -> list[Any]:
        got = []
        s.setblocking(False)
        try:
            while True:
                data, address = s.recvfrom(4096)
                if address[1] == lldp:
                    got.append((data, address))
        except BlockingIOError:
            return got

    rx, cooked = sock(socket.SOCK_RAW, lldp, "vb"), sock(socket.SOCK_DGRAM, lldp, "vb")
    tx, watcher = sock(socket.SOCK_RAW, 3, "va"), sock(socket.SOCK_RAW, 3, "va")
    out = sock(socket.SOCK_DGRAM, lldp, "va")
    seen = [tx.sendto(frame, ("va", 0)), rx.recvfrom(4096), cooked.recvfrom(4096), lldp_frames(watcher),
            lldp_frames(tx), out.sendto(b"built", ("va", lldp, 0, 0, vb)), rx.recvfrom(4096)]
    tx.sendto(b"\xff" * 6 + frame[6:], ("va", 0))
    tx.sendto(b"\x02\0\0\0\0\x99" + frame[6:], ("va", 0))
    seen += [rx.recvfrom(4096)[1], rx.recvfrom(4096)[1], cooked.getsockname()]
    for s in (rx, cooked, tx, watcher, out):
        s.close()
    return seen


def wire_veth_pair(stack: Stack) -> None:
    """NICs "va" and "vb" on two Ethernet channels, each one's frames injected into the other."""
    links = {name: ChannelEndpoint(link_address=mac, ethernet=True) for name, mac in (("va", VA), ("vb", VB))}
    for nic_id, (name, link) in enumerate(links.items(), 10):
        stack.create_nic(nic_id, link, name=name)
        link.drain()
    links["va"].on_outbound = lambda info: links["vb"].inject(0, info.data)
    links["vb"].on_outbound = lambda info: links["va"].inject(0, info.data)


def test_veth_scenario_reads_as_on_linux(stack: Stack) -> None:
    """The values are Linux's (the next test checks them against the kernel where it can)."""
    wire_veth_pair(stack)
    frame = VB + VA + b"\x88\xcc" + bytes(range(50))
    built = VB + VA + b"\x88\xcc" + b"built"

    assert veth_scenario(NetsockSocket) == [
        len(frame), (frame, ("vb", LLDP, PACKET_HOST, ARPHRD_ETHER, VA)),
        (frame[14:], ("vb", LLDP, PACKET_HOST, ARPHRD_ETHER, VA)),
        [(frame, ("va", LLDP, PACKET_OUTGOING, ARPHRD_ETHER, VA))], [],
        5, (built, ("vb", LLDP, PACKET_HOST, ARPHRD_ETHER, VA)),
        ("vb", LLDP, 1, ARPHRD_ETHER, VA), ("vb", LLDP, 3, ARPHRD_ETHER, VA),
        ("vb", LLDP, 0, ARPHRD_ETHER, VB)]


def test_loopback_scenario_reads_as_on_linux(stack: Stack) -> None:
    """Leaving and arriving on lo, behind a zero Ethernet header (the next test checks against the kernel)."""
    header, length = bytes(12) + b"\x08\x00", 14 + 20 + 8 + 6
    assert loopback_scenario(NetsockSocket) == [
        (header, length, ("lo", 0x0800, PACKET_OUTGOING, ARPHRD_LOOPBACK, bytes(6))),
        (header, length, ("lo", 0x0800, PACKET_HOST, ARPHRD_LOOPBACK, bytes(6))),
        (b"E", length - 14, ("lo", 0x0800, PACKET_HOST, ARPHRD_LOOPBACK, bytes(6)))]


def in_kernel_namespace(scenario: Callable[[Any], list[Any]], *setup: list[str]) -> list[Any]:
    """What ``scenario`` sees run on the kernel's sockets, in a network namespace of its own with lo up
    and ``setup`` (``ip link`` arguments) done; the namespace is removed after, also on failure."""
    namespace = f"netsock-packet-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for args in (["set", "lo", "up"], *setup):
            subprocess.run(["ip", "-n", namespace, "link", *args], check=True)
        program = f"import socket\nfrom typing import Any\n{inspect.getsource(scenario)}\n" \
                  f"print(repr({scenario.__name__}(socket.socket)))"
        result = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", program], check=True,
                                capture_output=True, text=True, timeout=30)
        return ast.literal_eval(result.stdout)
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="a network namespace needs root and ip(8)")


@needs_root
def test_kernel_reads_the_veth_scenario_as_netsock(stack: Stack) -> None:
    kernel = in_kernel_namespace(veth_scenario, ["add", "va", "address", "02:00:00:00:00:0a", "type", "veth", "peer",
                                                 "name", "vb", "address", "02:00:00:00:00:0b"],
                                 ["set", "va", "up"], ["set", "vb", "up"])
    wire_veth_pair(stack)
    assert veth_scenario(NetsockSocket) == kernel


@needs_root
def test_kernel_reads_the_loopback_scenario_as_netsock(stack: Stack) -> None:
    assert loopback_scenario(NetsockSocket) == in_kernel_namespace(loopback_scenario)
