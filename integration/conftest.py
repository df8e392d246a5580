"""Fixtures for the integration tests: a private network namespace per test, and the echo sample."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration.nsutil import EchoSample, NetNS, remove_stale_namespaces
from netsock.link.fault import FaultEndpoint
from netsock.link.fdbased import FdEndpoint
from netsock.link.netns import inside
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import Stack
from netsock.tcpip import Route
from netsock.transport.tcp import TCPProtocol
from netsock.transport.udp import UDPProtocol

KERNEL_CIDR = "192.0.2.1/24"
KERNEL_ADDRESS = "192.0.2.1"
NETSOCK_ADDRESS = "192.0.2.2"
ECHO_PORT = 7


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() == 0 and shutil.which("ip"):
        remove_stale_namespaces()
    # Programs the tests start are stopped with Ctrl-C (SIGINT) as a user would; a process started with
    # SIGINT ignored (a background command of a shell without job control) passes that on to them.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def netns(request: pytest.FixtureRequest) -> Iterator[NetNS]:
    """A fresh network namespace, removed with its devices and processes however the test ends.

    IPv6 is off in it, unless the test module sets ``NETNS_IPV6 = True``.
    """
    if os.geteuid() != 0:
        pytest.fail("integration tests create network namespaces and TUN/TAP devices: run them as root "
                    "(./dev.sh test does)", pytrace=False)
    ns = NetNS.create(ipv6=getattr(request.module, "NETNS_IPV6", False))
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def start_echo(netns: NetNS, tmp_path: Path) -> Callable[..., EchoSample]:
    """Start the udp_echo sample on a device in the test's namespace and wait until it is ready.

    The sample listens on 192.0.2.2 port 7; the kernel side of the device is 192.0.2.1/24.
    """
    def start(device: str = "tun0", *, tap: bool = False, pcap: bool = False) -> EchoSample:
        (netns.add_tap if tap else netns.add_tun)(device, KERNEL_CIDR)
        sample = EchoSample(netns, tmp_path, device=device, address=NETSOCK_ADDRESS, port=ECHO_PORT,
                            tap=tap, pcap=pcap)
        sample.wait_ready()
        return sample

    return start


@pytest.fixture
def tun_stack(netns: NetNS, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """netsock in the test process, on the gevent hub: a stack with TCP and UDP on tun0 (offloads on) at
    NETSOCK_ADDRESS, the kernel at KERNEL_CIDR. A module's ``TUN_FAULTS`` (a FaultConfig), if set, is
    applied to what netsock writes."""
    netns.add_tun("tun0", KERNEL_CIDR)
    with inside(netns.name):
        link = FdEndpoint.open_tun("tun0", offload=True)
    stack = Stack([IPv4Protocol], [TCPProtocol, UDPProtocol])
    faults = getattr(request.module, "TUN_FAULTS", None)
    if faults is not None:
        link = FaultEndpoint(link, stack.clock, seed=7, outbound=faults)
    stack.create_nic(1, link)
    stack.add_address(1, 0x0800, f"{NETSOCK_ADDRESS}/24")
    stack.set_route_table([Route.parse("0.0.0.0/0", 1)])
    yield stack
    stack.close()
    link.close()
