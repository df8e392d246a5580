"""What the samples share: opening the device, building the stack, stopping on a signal, reporting."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from typing import Iterable, NamedTuple, TextIO

import gevent
from gevent.event import Event

from ..link.fault import FaultConfig, FaultEndpoint
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


class Fault(NamedTuple):
    """Faults to inject in both directions of the link, and the seed of their random decisions."""

    config: FaultConfig
    seed: int


_FAULT_FIELDS = {f.name: f.type for f in dataclasses.fields(FaultConfig) if f.type in ("float", "int")}


def parse_fault(text: str) -> Fault:
    """'loss=0.05,delay=0.05,jitter=0.01,reorder=0.02,duplicate=0.01,corrupt=0.01,seed=7' -> Fault.

    Keys are FaultConfig's numeric fields (times in seconds, ``rate`` in bits/s) plus ``seed``.
    An argparse ``type``: a bad spec is reported as a usage error.
    """
    values: dict[str, float | int] = {}
    seed = 0
    try:
        for item in filter(None, text.split(",")):
            key, _, value = item.partition("=")
            key = key.strip()
            if key == "seed":
                seed = int(value)
            elif key in _FAULT_FIELDS:
                values[key] = int(value) if _FAULT_FIELDS[key] == "int" else float(value)
            else:
                raise ValueError(f"unknown fault {key!r} (known: seed, {', '.join(_FAULT_FIELDS)})")
        return Fault(FaultConfig(**values), seed)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad fault spec {text!r}: {e}") from None


def build_stack(device: str, address: AddressWithPrefix, transports: Iterable[type[TransportProtocol]],
                tap: bool = False, pcap: str | None = None, fault: Fault | None = None) -> Stack:
    """A stack on an existing TUN (or TAP) device with one address and a default route out of it.

    With ``fault``, a FaultEndpoint sits between the NIC and the device (the pcap, if any, records
    the device side: what the kernel sent and received).
    """
    from ..link.fdbased import FdEndpoint
    from ..link.tun import mac_for

    link = FdEndpoint.open_tap(device, mac_for(address.address)) if tap else FdEndpoint.open_tun(device)
    if pcap:
        from ..link.sniffer import SnifferEndpoint
        link = SnifferEndpoint(link, pcap)
    networks = [IPv4Protocol, ARPProtocol] if tap else [IPv4Protocol]
    stack = Stack(networks, list(transports))
    if fault is not None:
        link = FaultEndpoint(link, stack.clock, fault.seed, outbound=fault.config, inbound=fault.config)
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


def report(stack: Stack, stats_json: str | None, out: TextIO | None = None) -> None:
    """Print the non-zero counters (to ``out``, default stdout) and, if asked, write all of them as JSON."""
    out = out or sys.stdout
    counters = stack.stats().as_dict()
    counters["nic"] = {nic.name: nic.stats.as_dict() for nic in stack.nics.values()}
    faults = {nic.name: nic.link.stats for nic in stack.nics.values() if isinstance(nic.link, FaultEndpoint)}
    if faults:
        counters["fault"] = {name: stats.as_dict() for name, stats in faults.items()}
    if stats_json:
        with open(stats_json, "w") as f:
            json.dump(counters, f, indent=1, sort_keys=True)
    print("netsock counters (non-zero):", file=out)
    for name, value in sorted(stack.stats().nonzero().items()):
        print(f"  {name:48} {value}", file=out)
    for nic_name, stats in faults.items():
        print(f"fault link on {nic_name} (non-zero):", file=out)
        for name, value in sorted(stats.nonzero().items()):
            print(f"  {name:48} {value}", file=out)
    out.flush()



def close(stack: Stack) -> None:
    """Remove the NICs and close their links (flushing any pcap)."""
    links = [nic.link for nic in stack.nics.values()]
    stack.close()
    for link in links:
        link.close()
