"""What the samples share: opening the device, building the stack, stopping on a signal, reporting."""

from __future__ import annotations

import json
import signal
import sys
from typing import Iterable

import gevent
from gevent.event import Event

from ..network.arp import ARPProtocol
from ..network.ipv4 import IPv4Protocol
from ..stack import Stack
from ..stack.registration import TransportProtocol
from ..tcpip import IPV4_PROTOCOL_NUMBER, AddressWithPrefix, Route


def parse_address(text: str) -> AddressWithPrefix:
    """'192.0.2.2' (a /32, reached through the default route as netstack's samples do) or '192.0.2.2/24'."""
    try:
        return AddressWithPrefix.parse(text if "/" in text else f"{text}/32")
    except ValueError:
        raise SystemExit(f"not an IPv4 address: {text!r}") from None


def build_stack(device: str, address: AddressWithPrefix, transports: Iterable[type[TransportProtocol]],
                tap: bool = False, pcap: str | None = None) -> Stack:
    """A stack on an existing TUN (or TAP) device with one address and a default route out of it."""
    from ..link.fdbased import FdEndpoint
    from ..link.tun import mac_for

    link = FdEndpoint.open_tap(device, mac_for(address.address)) if tap else FdEndpoint.open_tun(device)
    if pcap:
        from ..link.sniffer import SnifferEndpoint
        link = SnifferEndpoint(link, pcap)
    networks = [IPv4Protocol, ARPProtocol] if tap else [IPv4Protocol]
    stack = Stack(networks, list(transports))
    stack.create_nic(1, link, name=device)
    stack.add_address(1, IPV4_PROTOCOL_NUMBER, address)
    stack.set_route_table([Route.parse("0.0.0.0/0", 1)])
    return stack


def wait_for_stop_signal() -> None:
    """Block this greenlet until SIGTERM or SIGINT."""
    stop = Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    try:
        stop.wait()
    finally:
        for h in handlers:
            h.cancel()


def report(stack: Stack, stats_json: str | None) -> None:
    """Print the non-zero counters and, if asked, write all of them as JSON."""
    counters = stack.stats().as_dict()
    counters["nic"] = {nic.name: nic.stats.as_dict() for nic in stack.nics.values()}
    if stats_json:
        with open(stats_json, "w") as f:
            json.dump(counters, f, indent=1, sort_keys=True)
    print("netsock counters (non-zero):")
    for name, value in sorted(stack.stats().nonzero().items()):
        print(f"  {name:48} {value}")
    sys.stdout.flush()



def close(stack: Stack) -> None:
    """Remove the NICs and close their links (flushing any pcap)."""
    links = [nic.link for nic in stack.nics.values()]
    stack.close()
    for link in links:
        link.close()
