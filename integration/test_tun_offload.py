"""TCP between netsock and the kernel over a TUN device with virtio-net header offloads, both ways at
once, every byte checked, and the link's counters showing the 64 KB super-segments really crossed;
UDP GSO (UDP_SEGMENT) both ways, the kernel's super-datagrams cut by the link and netsock's cut by
the kernel.

netsock runs in the test process on the gevent hub; the test thread enters the namespace only to open
the device. The kernel's end is ``peers.py tcp-serve``: it sends a seeded stream while reading ours to
EOF, and reports the SHA-256 of both.
"""

from __future__ import annotations

import errno
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from integration.conftest import KERNEL_ADDRESS, KERNEL_CIDR, NETSOCK_ADDRESS
from integration.nsutil import NetNS, PeerProcess
from integration.peers import seeded_stream
from netsock.link import tun
from netsock.link.fdbased import BIG_TCP_GSO_MAX_SIZE, FdEndpoint
from netsock.link.netns import inside
from netsock.network.ipv4 import IPv4Protocol
from netsock.scheduler import blocking, wait_for
from netsock.stack import Stack
from netsock.stack.interfaces import LinkCapabilities
from netsock.tcpip import (UDP_PROTOCOL_NUMBER, Address, ErrConnectStarted, ErrWouldBlock, FullAddress, ReadResult,
                           Route, ShutdownFlags, SockOpt, WriteOptions)
from netsock.transport.tcp import TCPEndpoint, TCPProtocol
from netsock.transport.udp import UDPProtocol
from netsock.waiter import EventMask, WaiterQueue

pytestmark = pytest.mark.integration

PORT = 5001
MIB = 1024 * 1024


class Netsock:
    """A netsock stack at 192.0.2.2 on tun0 of ``ns``, opened with or without the offloads."""

    def __init__(self, ns: NetNS, offload: bool) -> None:
        with inside(ns.name):
            self.link = FdEndpoint.open_tun("tun0", offload=offload)
        self.stack = Stack([IPv4Protocol], [TCPProtocol, UDPProtocol])
        self.stack.create_nic(1, self.link)
        self.stack.add_address(1, 0x0800, f"{NETSOCK_ADDRESS}/24")
        self.stack.set_route_table([Route.parse("0.0.0.0/0", 1)])

    def close(self) -> None:
        self.stack.close()
        self.link.close()


@pytest.fixture
def tun0(netns: NetNS) -> NetNS:
    netns.add_tun("tun0", KERNEL_CIDR)
    return netns


@pytest.fixture
def offloaded(tun0: NetNS) -> Iterator[Netsock]:
    side = Netsock(tun0, offload=True)
    yield side
    side.close()


def connect(stack: Stack) -> tuple[TCPEndpoint, WaiterQueue]:
    queue = WaiterQueue()
    endpoint = stack.new_endpoint(TCPProtocol.number, 0x0800, queue)
    try:
        endpoint.connect(FullAddress(0, bytes(map(int, KERNEL_ADDRESS.split("."))), PORT))
    except ErrConnectStarted:
        assert wait_for(queue, EventMask.OUT, lambda: bool(endpoint.readiness(EventMask.OUT)), timeout=20), \
            "no connection within 20 s"
    error = endpoint.get_sock_opt(SockOpt.ERROR)
    if error is not None:
        raise error
    return endpoint, queue


def send_stream(endpoint: TCPEndpoint, queue: WaiterQueue, seed: int, size: int) -> str:
    """Write the seeded stream, then FIN; the SHA-256 of what was written."""
    digest = hashlib.sha256()
    for block in seeded_stream(seed, size):
        digest.update(block)
        view = memoryview(block)
        while view:
            wait_for(queue, EventMask.OUT, lambda: bool(endpoint.readiness(EventMask.OUT)))
            try:
                view = view[endpoint.write(view):]
            except ErrWouldBlock:
                pass
    endpoint.shutdown(ShutdownFlags.WRITE)
    return digest.hexdigest()


def receive_stream(endpoint: TCPEndpoint, queue: WaiterQueue) -> tuple[int, str]:
    """Read to EOF: (bytes, SHA-256)."""
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    received = 0
    while count := blocking(endpoint, queue, EventMask.IN, lambda: endpoint.read_into(buffer)):
        digest.update(memoryview(buffer)[:count])
        received += count
    return received, digest.hexdigest()


def exchange(ns: NetNS, side: Netsock, size: int) -> None:
    """``size`` bytes each way at once between the kernel and netsock, both streams checked."""
    kernel = PeerProcess(ns, "tcp-serve", f"{KERNEL_ADDRESS}:{PORT}", "--send", str(size), "--seed", "1")
    kernel.wait_line("listening")
    endpoint, queue = connect(side.stack)
    with gevent.Timeout(120, AssertionError("the exchange did not finish within 120 s")):
        sending = gevent.spawn(send_stream, endpoint, queue, 2, size)
        received, received_sha256 = receive_stream(endpoint, queue)
        sent_sha256 = sending.get()
    endpoint.close()
    report = kernel.result(timeout=120)
    assert (received, received_sha256) == (size, report["sent_sha256"])
    assert (report["received"], report["received_sha256"]) == (size, sent_sha256)


def test_50_mib_each_way_in_super_segments(offloaded: Netsock, tun0: NetNS) -> None:
    assert offloaded.link.vnet_header, "the kernel refused the TUN offloads"
    exchange(tun0, offloaded, 50 * MIB)
    stats = offloaded.link.stats
    # Most of each stream crossed in super-segments: far fewer frames than 1448-byte segments would be.
    assert stats.rx_super_segments.value > 0 and stats.tx_super_segments.value > 0
    # The kernel's consecutive super-segments read at once came up merged (native/gro.c ns_read_gro).
    assert stats.rx_merged_super_segments.value > 0
    assert stats.rx_packets.value < 50 * MIB // 1448 // 4
    assert stats.tx_packets.value < 50 * MIB // 1448 // 4
    assert stats.rx_bad_vnet_header.value == stats.rx_malformed.value == 0
    assert offloaded.stack.stats().tcp.checksum_errors.value == 0


def test_ipv4_super_segments_beyond_64_kb_to_a_kernel_with_big_tcp(offloaded: Netsock, tun0: NetNS) -> None:
    """This kernel (6.3 or later) takes IPv4 super-segments longer than 64 KB, their total length
    field 0 (BIG TCP): netsock writes them, and the kernel receives every byte."""
    assert tun.kernel_has_big_tcp_ipv4()
    assert offloaded.link.gso_max_size(0x0800, bytes(Address.parse(KERNEL_ADDRESS))) == BIG_TCP_GSO_MAX_SIZE
    # Not to an address the kernel would forward (here: back out of tun0): it would cut them in software.
    tun0.ip("route", "add", "203.0.113.0/24", "via", NETSOCK_ADDRESS)
    assert offloaded.link.gso_max_size(0x0800, bytes(Address.parse("203.0.113.5"))) == 65536
    size = 50 * MIB
    kernel = PeerProcess(tun0, "tcp-serve", f"{KERNEL_ADDRESS}:{PORT}")
    kernel.wait_line("listening")
    endpoint, queue = connect(offloaded.stack)
    with gevent.Timeout(120, AssertionError("the transfer did not finish within 120 s")):
        sent_sha256 = send_stream(endpoint, queue, 2, size)
        assert blocking(endpoint, queue, EventMask.IN, lambda: endpoint.read(1)) == b""
    endpoint.close()
    report = kernel.result(timeout=120)
    assert (report["received"], report["received_sha256"]) == (size, sent_sha256)
    stats = offloaded.link.stats
    # Nearly every packet written was a data super-segment; on average they held more than 64 KB.
    assert stats.tx_bytes.value / stats.tx_super_segments.value > 65536


def test_a_plain_open_clears_the_offloads_a_previous_owner_left(tun0: NetNS) -> None:
    """tun0 outlives its fds: the offloads an earlier fd enabled must not reach a reader that has no
    virtio-net header to tell super-segments and partial checksums apart."""
    Netsock(tun0, offload=True).close()
    plain = Netsock(tun0, offload=False)
    try:
        assert not plain.link.vnet_header
        exchange(tun0, plain, 5 * MIB)
        assert plain.link.stats.rx_super_segments.value == 0
        assert plain.link.stats.rx_too_long.value == 0
        assert plain.stack.stats().tcp.checksum_errors.value == 0
    finally:
        plain.close()


def test_udp_super_datagrams_both_ways(offloaded: Netsock, tun0: NetNS) -> None:
    """20 writes of 30,000 bytes each way with UDP_SEGMENT 1,200: 500 datagrams, in order, every byte
    checked; each write crossed the device whole."""
    assert offloaded.link.capabilities() & LinkCapabilities.HARDWARE_GSO_UDP, "the kernel refused the UDP offloads"
    writes, size, gso = 20, 30000, 1200
    queue = WaiterQueue()
    endpoint = offloaded.stack.new_endpoint(UDP_PROTOCOL_NUMBER, 0x0800, queue)
    endpoint.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 4 << 20)
    endpoint.bind(FullAddress(0, b"", 6000))
    # kernel -> netsock: the kernel's UDP GSO hands the device super-datagrams, which the link cuts.
    reads = kernel_super_datagrams(tun0, endpoint, queue, writes, size, gso)
    assert (len(reads), max(len(r.data) for r in reads)) == (writes * size // gso, gso)
    assert {r.control.gro_size for r in reads} == {None}
    assert offloaded.link.stats.rx_super_datagrams.value == writes
    # netsock -> kernel: one super-datagram per write, cut by the kernel.
    gather = PeerProcess(tun0, "udp-gather", f"{KERNEL_ADDRESS}:6001", "--bytes", str(writes * size))
    gather.wait_line("bound")
    endpoint.set_sock_opt(SockOpt.UDP_SEGMENT, gso)
    stream = b"".join(seeded_stream(5, writes * size))
    to = WriteOptions(to=FullAddress(0, Address.parse(KERNEL_ADDRESS), 6001))
    for offset in range(0, len(stream), size):
        assert endpoint.write(stream[offset:offset + size], to) == size
        gevent.sleep(0.002)
    report = gather.result(timeout=30)
    assert report == {"bytes": len(stream), "datagrams": writes * size // gso, "largest": gso,
                      "sha256": hashlib.sha256(stream).hexdigest()}
    assert offloaded.link.stats.tx_super_datagrams.value == writes
    endpoint.close()


def test_udp_gro_reads_the_kernels_super_datagrams_whole(offloaded: Netsock, tun0: NetNS) -> None:
    """With UDP_GRO on, each of the kernel's 20 super-datagrams is one read of 30,000 bytes, its segment
    size in the control message (Linux's udp_cmsg_recv), every byte checked."""
    assert offloaded.link.capabilities() & LinkCapabilities.HARDWARE_GSO_UDP, "the kernel refused the UDP offloads"
    writes, size, gso = 20, 30000, 1200
    queue = WaiterQueue()
    endpoint = offloaded.stack.new_endpoint(UDP_PROTOCOL_NUMBER, 0x0800, queue)
    endpoint.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 4 << 20)
    endpoint.set_sock_opt(SockOpt.UDP_GRO, True)
    endpoint.bind(FullAddress(0, b"", 6000))
    reads = kernel_super_datagrams(tun0, endpoint, queue, writes, size, gso)
    assert [(len(r.data), r.control.gro_size) for r in reads] == [(size, gso)] * writes
    assert offloaded.stack.stats().udp.packets_received.value == writes * size // gso
    endpoint.close()


def test_udp_gro_joins_the_kernels_separate_datagrams_read_in_one_batch(offloaded: Netsock, tun0: NetNS) -> None:
    """300 datagrams of 1,200 bytes, each sent alone (no UDP_SEGMENT), wait in the device while the stack is
    busy: read in batches, they come to a UDP_GRO socket joined, as Linux's GRO joins them for one, in a
    few reads."""
    writes, size = 300, 1200        # (within the device's queue of 500)
    queue = WaiterQueue()
    endpoint = offloaded.stack.new_endpoint(UDP_PROTOCOL_NUMBER, 0x0800, queue)
    endpoint.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 16 << 20)
    endpoint.set_sock_opt(SockOpt.UDP_GRO, True)
    endpoint.bind(FullAddress(0, b"", 6000))
    reads = kernel_super_datagrams(tun0, endpoint, queue, writes, size, size, gap=0, busy=1.0)
    assert all(len(r.data) % size == 0 and r.control.gro_size in (None, size) for r in reads)
    assert len(reads) <= writes // 10, f"{len(reads)} reads of {writes} datagrams"
    assert offloaded.stack.stats().udp.packets_received.value == writes
    endpoint.close()


def kernel_super_datagrams(tun0: NetNS, endpoint: Any, queue: WaiterQueue, writes: int, size: int,
                           gso: int, gap: float = 0.002, busy: float = 0.0) -> list[ReadResult]:
    """What ``endpoint`` reads of ``writes`` writes of ``size`` seeded bytes the kernel sends it with
    UDP_SEGMENT ``gso`` (``gap`` seconds apart; the stack kept from reading for ``busy`` seconds first), once
    every byte has come, their SHA-256 checked against the sender's."""
    sender = PeerProcess(tun0, "udp-gso-send", f"{NETSOCK_ADDRESS}:6000", "--writes", str(writes), "--size",
                         str(size), "--gso", str(gso), "--seed", "4", "--gap", str(gap))
    time.sleep(busy)        # (blocking the hub: what arrives meanwhile waits in the device)
    digest, reads = hashlib.sha256(), []
    with gevent.Timeout(30, AssertionError(f"{sum(len(r.data) for r in reads)} of {writes * size} bytes "
                                           "arrived within 30 s")):
        while sum(len(r.data) for r in reads) < writes * size:
            reads.append(blocking(endpoint, queue, EventMask.IN, endpoint.read))
            digest.update(reads[-1].data)
    assert digest.hexdigest() == sender.result(timeout=30)["sha256"]
    return reads


def test_big_tcp_on_a_device_as_the_benchmark_sets_it_for_the_kernels_reference(netns: NetNS) -> None:
    netns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    with inside(netns.name):
        tun.set_big_tcp("va", BIG_TCP_GSO_MAX_SIZE)
        with pytest.raises(OSError) as refused:
            tun.set_big_tcp("va", 1 << 24)              # beyond what any device takes
    assert refused.value.errno == errno.EINVAL
    shown = netns.ip("-d", "link", "show", "va")
    assert f"gso_max_size {BIG_TCP_GSO_MAX_SIZE}" in shown and f"gro_max_size {BIG_TCP_GSO_MAX_SIZE}" in shown
