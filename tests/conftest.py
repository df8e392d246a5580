"""Shared fixtures: a stack on an in-memory link, driven by a manual clock, with scapy on the wire.

The test plays the network: it injects packets built with scapy (an independent implementation of
the wire formats) and parses what the stack wrote with scapy too, so a test never checks the
stack's encoding with the stack's own decoder. Time moves only when a test advances the clock.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # before scapy's import: no route warnings

from scapy.layers.inet import IP, UDP, in4_chksum  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Packet  # noqa: E402
from scapy.utils import checksum as scapy_checksum  # noqa: E402

from netsock.link.channel import ChannelEndpoint  # noqa: E402
from netsock.network.arp import ARPProtocol  # noqa: E402
from netsock.network.ipv4 import IPv4Protocol  # noqa: E402
from netsock.stack import ManualClock, Stack  # noqa: E402
from netsock.stack.interfaces import LinkCapabilities  # noqa: E402
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, Address, ErrWouldBlock,  # noqa: E402
                           FullAddress, Route, WriteOptions)
from netsock.transport.icmp import ICMPv4Protocol  # noqa: E402
from netsock.transport.tcp import TCPProtocol  # noqa: E402
from netsock.transport.udp import UDPProtocol  # noqa: E402

LOCAL = "192.0.2.2"          # the stack under test
PEER = "192.0.2.1"           # on-link neighbour, also the default gateway
OTHER_PEER = "192.0.2.3"
REMOTE = "198.51.100.1"      # off-link: reached through the gateway
SUBNET_BROADCAST = "192.0.2.255"
LIMITED_BROADCAST = "255.255.255.255"
NIC_ID = 1

LOCAL_MAC = "02:00:00:00:00:02"
PEER_MAC = "02:00:00:00:00:01"
OTHER_MAC = "02:00:00:00:00:03"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def addr(text: str) -> bytes:
    """Wire form of a dotted address."""
    return bytes(Address.parse(text))


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def to(host: str, port: int) -> WriteOptions:
    """Write options sending to ``host:port`` (sendto)."""
    return WriteOptions(to=FullAddress(0, addr(host), port))


def outcome(call: Callable[[], Any]) -> Any:
    """What a socket call returns, or the name of the errno it fails with: for comparing a netsock socket's answers
    with a kernel socket's, call by call."""
    try:
        return call()
    except OSError as error:
        return errno.errorcode.get(error.errno, error.errno)


def received(ep: Any) -> list[bytes]:
    """Every datagram queued on the datagram endpoint ``ep``, read in order."""
    out = []
    while True:
        try:
            out.append(ep.read().data)
        except ErrWouldBlock:
            return out


def checksums_valid(raw: bytes) -> bool:
    """Do the IPv4 header checksum and the UDP, TCP or ICMP checksum of the packet ``raw`` verify?

    Summed by scapy's own checksum code over the bytes as sent (never a re-serialisation).
    """
    packet = IP(raw)
    hlen = packet.ihl * 4
    body = raw[hlen:packet.len]
    if scapy_checksum(raw[:hlen]) != 0:
        return False
    if packet.proto == 17:   # the stack always computes one: zero ("none") does not count as valid
        return packet[UDP].chksum != 0 and in4_chksum(17, packet, body) == 0
    if packet.proto == 6:
        return in4_chksum(6, packet, body) == 0
    if packet.proto == 1:
        return scapy_checksum(body) == 0
    return False   # a protocol this helper cannot check is not "valid"


class StackHarness:
    """A Stack on a ChannelEndpoint NIC at 192.0.2.2/24, the default route via 192.0.2.1.

    With ``ethernet=True`` the link is an Ethernet segment (ARP in the stack, frames on the wire);
    otherwise it carries bare IPv4 packets, as a TUN device does.
    """

    def __init__(self, ethernet: bool = False, mtu: int = 1500,
                 capabilities: LinkCapabilities = LinkCapabilities.NONE) -> None:
        self.ethernet = ethernet
        self.clock = ManualClock()
        network = (IPv4Protocol, ARPProtocol) if ethernet else (IPv4Protocol,)
        self.stack = Stack(network, (UDPProtocol, ICMPv4Protocol), clock=self.clock)
        self.link = ChannelEndpoint(mtu=mtu, link_address=mac(LOCAL_MAC) if ethernet else b"", ethernet=ethernet,
                                    capabilities=capabilities)
        self.nic = self.stack.create_nic(NIC_ID, self.link)
        self.stack.add_address(NIC_ID, IPV4_PROTOCOL_NUMBER, f"{LOCAL}/24")
        self.stack.set_route_table([Route.parse("192.0.2.0/24", NIC_ID), Route.parse("0.0.0.0/0", NIC_ID, PEER)])

    @property
    def stats(self) -> Any:
        return self.stack.stats()

    def inject(self, pkt: Packet | bytes) -> None:
        """Put one packet (an IP packet, or an Ethernet frame on an Ethernet link) on the wire to us."""
        self.link.inject(IPV4_PROTOCOL_NUMBER, bytes(pkt))

    def sent_raw(self) -> list[bytes]:
        return [info.data for info in self.link.drain()]

    def sent(self) -> list[Packet]:
        """Everything the stack wrote since the last call, parsed by scapy."""
        decode = Ether if self.ethernet else IP
        return [decode(raw) for raw in self.sent_raw()]

    def sent_one(self) -> Packet:
        packets = self.sent()
        assert len(packets) == 1, [p.summary() for p in packets]
        return packets[0]

    def udp(self, port: int | None = None, host: str = "") -> Any:
        """A new UDP endpoint, bound to ``host:port`` unless ``port`` is None."""
        ep = self.stack.new_endpoint(UDP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER)
        if port is not None:
            ep.bind(FullAddress(0, addr(host) if host else b"", port))
        return ep

    def counters(self) -> dict[str, int]:
        """Every non-zero stack and NIC counter, flattened: for "did anything account for it" checks."""
        flat = self.stats.nonzero()
        flat.update({f"nic.{k}": v for k, v in self.nic.stats.as_dict().items() if v})
        return flat


@pytest.fixture
def harness() -> StackHarness:
    return StackHarness()


@pytest.fixture
def ether_harness() -> StackHarness:
    return StackHarness(ethernet=True)


@pytest.fixture
def stack() -> Iterator[Stack]:
    """The sockets' view: a stack as the adapter builds it (loopback NIC, gevent clock), made current
    for the test, so that NetsockSockets created without ``stack=`` land on it."""
    from netsock.adapter.runtime import build_stack, use_stack

    net = build_stack()
    with use_stack(net):
        yield net
    net.close()


CLONE_NEWNET = 0x40000000
SIOCSIFFLAGS, IFF_UP = 0x8914, 0x1


@contextmanager
def private_kernel_network() -> Iterator[None]:
    """The calling thread's kernel sockets in a network namespace of their own, its loopback up: CI runs the
    three Pythons' unit tests at once, and on the shared loopback one run's raw sockets read the others'
    packets, and fixed ports clash. Without root (no CAP_SYS_ADMIN) the sockets stay in the test's namespace,
    which serves a run alone; the thread returns home after, also on failure."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
                fcntl.ioctl(control, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP))
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), "setns back to the test's network namespace")
    finally:
        os.close(home)


@pytest.fixture
def kernel_stamping() -> Iterator[None]:
    """Linux turns receive stamping on for the whole system when the first socket asks for it, through
    deferred work (net_enable_timestamp's static key): a packet arriving meanwhile goes unstamped, so a
    kernel socket compared with netsock's could miss its first stamp. A socket that asks throughout keeps
    it on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as keeper:
        keeper.setsockopt(socket.SOL_SOCKET, 29, 1)     # SO_TIMESTAMP
        time.sleep(0.1)
        yield


def gso_pair(clock: ManualClock) -> tuple[list[Stack], list[ChannelEndpoint]]:
    """Two IPv4/TCP stacks, 192.0.2.1 and .2, each on a GSO channel link of its own (the test moves
    the packets between them)."""
    stacks, links = [], []
    for host in (1, 2):
        stack = Stack([IPv4Protocol], [TCPProtocol], clock=clock)
        link = ChannelEndpoint(size=100_000, gso=True)
        stack.create_nic(1, link)
        stack.add_address(1, IPV4_PROTOCOL_NUMBER, f"192.0.2.{host}/24")
        stack.set_route_table([Route.parse("0.0.0.0/0", 1)])
        stacks.append(stack)
        links.append(link)
    return stacks, links
