"""Fixtures for the integration tests: a private network namespace per test, and the echo sample."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration.nsutil import EchoSample, NetNS, remove_stale_namespaces

KERNEL_CIDR = "192.0.2.1/24"
KERNEL_ADDRESS = "192.0.2.1"
NETSOCK_ADDRESS = "192.0.2.2"
ECHO_PORT = 7


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() == 0 and shutil.which("ip"):
        remove_stale_namespaces()


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
