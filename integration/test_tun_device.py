"""TUN and TAP links against the real kernel, in a network namespace of the test's own.

The test thread enters the namespace only to create, configure and open the device: a TUN/TAP fd
and a netlink socket belong to the namespace they were made in, wherever they are used from later.
The kernel's ``ping`` is the peer; the test answers it by hand (ARP and ICMP built with scapy), so
both directions of the link are exercised without any of the stack above it.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from collections.abc import Callable
from typing import NamedTuple

import gevent
import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP

from integration.nsutil import NetNS
from netsock.header import ethernet
from netsock.link import tun
from netsock.link.netns import inside
from netsock.link.fdbased import FdEndpoint
from netsock.stack.interfaces import PacketType
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip.errors import ErrClosedForSend

pytestmark = pytest.mark.integration

KERNEL = "192.0.2.1"
OURS = "192.0.2.2"
OUR_MAC = tun.mac_for(ipaddress.IPv4Address(OURS).packed)


class Received(NamedTuple):
    remote: bytes
    local: bytes
    protocol: int
    pkt_type: int
    data: bytes


class Recorder:
    def __init__(self) -> None:
        self.packets: list[Received] = []

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.packets.append(Received(remote, local, protocol, pkt.pkt_type, bytes(pkt.data)))

    def wait_for(self, match: Callable[[Received], bool], timeout: float = 10.0) -> Received:
        """The first packet matching, waiting (in the gevent hub, which reads the device) until it comes."""
        deadline = time.monotonic() + timeout
        while True:
            for p in self.packets:
                if match(p):
                    return p
            assert time.monotonic() < deadline, f"not received; got {self.packets}"
            gevent.sleep(0.005)


def is_echo_request(p: Received) -> bool:
    if p.protocol != 0x0800:
        return False
    ip = IP(p.data)
    return ip.src == KERNEL and ip.dst == OURS and ICMP in ip and ip[ICMP].type == 8


def echo_reply(request: bytes) -> bytes:
    icmp = IP(request)[ICMP]
    return bytes(IP(src=OURS, dst=KERNEL) / ICMP(type=0, id=icmp.id, seq=icmp.seq) / bytes(icmp.payload))


def start_ping(ns: NetNS) -> subprocess.Popen[bytes]:
    return ns.popen(["ping", "-n", "-c", "1", "-W", "10", OURS],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "process did not exit"
        gevent.sleep(0.01)
    return proc.returncode


def test_tun_carries_ip_both_ways(netns: NetNS) -> None:
    with inside(netns.name):
        os.close(tun.create_device("tun0"))
        fd, is_tap = tun.open_device("tun0")    # type detected from the existing device
        os.close(fd)
        assert not is_tap
        tun.configure_host_side("tun0", [f"{KERNEL}/24"], mtu=1400)
        ep = FdEndpoint.open_tun("tun0")
    try:
        assert ep.mtu() == 1400
        rec = Recorder()
        ep.attach(rec)
        ping = start_ping(netns)
        request = rec.wait_for(is_echo_request)
        assert (request.remote, request.local, request.pkt_type) == (b"", b"", PacketType.HOST)

        ep.write_packet(b"", 0x0800, PacketBuffer(0, echo_reply(request.data)))
        assert wait_exit(ping) == 0, "the kernel did not accept the echo reply"
        assert ep.stats.tx_packets.value == 1

        # The device goes away under the endpoint: reading stops (no spinning on the error),
        # writing reports the link closed.
        with inside(netns.name):
            tun.delete_device("tun0")
        assert "tun0" not in netns.ip("-br", "link")
        deadline = time.monotonic() + 5
        while not ep.stats.rx_read_errors.value:
            assert time.monotonic() < deadline, "the reader did not notice the device is gone"
            gevent.sleep(0.01)
        with pytest.raises(ErrClosedForSend):
            ep.write_packet(b"", 0x0800, PacketBuffer(0, echo_reply(request.data)))
        gevent.sleep(0.05)
        assert ep.stats.rx_read_errors.value == 1
    finally:
        ep.close()


def test_tap_carries_arp_and_ip(netns: NetNS) -> None:
    with inside(netns.name):
        os.close(tun.create_device("tap0", tap=True))
        fd, is_tap = tun.open_device("tap0")
        os.close(fd)
        assert is_tap
        tun.configure_host_side("tap0", [f"{KERNEL}/24"])
        ep = FdEndpoint.open_tap("tap0", link_address=OUR_MAC)
    kernel_mac = bytes.fromhex(netns.link_address("tap0").replace(":", ""))
    try:
        rec = Recorder()
        ep.attach(rec)
        ping = start_ping(netns)

        who_has = rec.wait_for(lambda p: p.protocol == 0x0806)
        assert (who_has.remote, who_has.local, who_has.pkt_type) == (kernel_mac, ethernet.BROADCAST,
                                                                    PacketType.BROADCAST)
        request = ARP(who_has.data)
        assert (request.op, request.psrc, request.pdst) == (1, KERNEL, OURS)
        is_at = ARP(op=2, hwsrc=OUR_MAC.hex(":"), psrc=OURS, hwdst=kernel_mac.hex(":"), pdst=KERNEL)
        ep.write_packet(kernel_mac, 0x0806, PacketBuffer(0, bytes(is_at)))

        echo = rec.wait_for(is_echo_request)
        assert (echo.remote, echo.local, echo.pkt_type) == (kernel_mac, OUR_MAC, PacketType.HOST)
        ep.write_packet(kernel_mac, 0x0800, PacketBuffer(0, echo_reply(echo.data)))
        assert wait_exit(ping) == 0, "the kernel did not accept the echo reply"
        assert OUR_MAC.hex(":") in {n.get("lladdr") for n in netns.neighbours("tap0")}
    finally:
        ep.close()
