"""What the samples share: opening the device, building the stack, stopping on a signal, reporting."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from typing import Any, Iterable, NamedTuple, TextIO

import gevent
from gevent.event import Event

from ..link.fault import FaultConfig, FaultEndpoint
from ..network.arp import ARPProtocol
from ..network.ipv4 import IPv4Protocol
from ..network.ipv6 import IPv6Protocol
from ..stack import Stack
from ..stack.registration import TransportProtocol
from ..tcpip import IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, Address, AddressWithPrefix, Route

NIC_ID = 1          # the one NIC build_stack creates
DAD_TIMEOUT = 10.0  # seconds to wait for duplicate address detection (it takes one retransmit timer, 1 s)
LINK_UP_TIMEOUT = 2.0   # seconds to wait for the kernel to start its side of the device
_IFF_UP = 0x1           # <linux/if.h>


def parse_address(text: str) -> AddressWithPrefix:
    """'192.0.2.2' or '2001:db8::2' (a host address, reached through the default route as netstack's
    samples do), or with a prefix: '192.0.2.2/24', '2001:db8::2/64'."""
    try:
        if "/" not in text:
            text = f"{text}/{len(Address.parse(text)) * 8}"
        return AddressWithPrefix.parse(text)
    except ValueError:
        raise SystemExit(f"not an IPv4 or IPv6 address: {text!r}") from None


def add_address_option(parser: argparse.ArgumentParser) -> None:
    """``--address ADDR[/PREFIX]`` (repeatable): addresses besides the positional one, e.g. the
    IPv6 address of a dual-stack host. ``local_addresses`` collects them all."""
    parser.add_argument("--address", dest="more_addresses", action="append", default=[], metavar="ADDR[/PREFIX]",
                        help="another address of this stack, IPv4 or IPv6 (repeatable)")


def local_addresses(args: argparse.Namespace) -> list[AddressWithPrefix]:
    """The positional ``address`` and every ``--address``, parsed."""
    return [parse_address(text) for text in (args.address, *args.more_addresses)]


def host_port(address: bytes, port: int) -> str:
    """'192.0.2.2:7', '[2001:db8::2]:7'."""
    return f"{Address(address)}:{port}" if len(address) == 4 else f"[{Address(address)}]:{port}"


def network_protocol(address: bytes) -> int:
    """The network protocol number an address (4 or 16 bytes) belongs to."""
    return IPV4_PROTOCOL_NUMBER if len(address) == 4 else IPV6_PROTOCOL_NUMBER


def network_protocols(addresses: Iterable[bytes]) -> list[int]:
    """The network protocols of ``addresses``, each once, in order of first appearance: what a
    server listens on."""
    return list(dict.fromkeys(network_protocol(a) for a in addresses))


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


def build_stack(device: str, address: AddressWithPrefix | Iterable[AddressWithPrefix],
                transports: Iterable[type[TransportProtocol]], tap: bool = False, pcap: str | None = None,
                fault: Fault | None = None) -> Stack:
    """A dual-stack (IPv4 and IPv6) stack on an existing TUN (or TAP) device with the given
    addresses, IPv4 or IPv6, and default routes for both out of it.

    With ``fault``, a FaultEndpoint sits between the NIC and the device (the pcap, if any, records
    the device side: what the kernel sent and received). On a TAP the stack's MAC is derived from
    its first IPv4 address, else from the last 4 bytes of its first IPv6 address (``tun.mac_for``).
    IPv6 addresses on a TAP stay tentative until duplicate address detection is done: see
    ``wait_for_unique_addresses``.
    """
    from ..link.fdbased import FdEndpoint
    from ..link.tun import mac_for

    addresses = [address] if isinstance(address, AddressWithPrefix) else list(address)
    if tap:
        station = min(addresses, key=lambda a: len(a.address)).address
        link = FdEndpoint.open_tap(device, mac_for(station[-4:]))
    else:
        link = FdEndpoint.open_tun(device)
    wait_for_kernel_side(device)
    if pcap:
        from ..link.sniffer import SnifferEndpoint
        link = SnifferEndpoint(link, pcap)
    networks = [IPv4Protocol, IPv6Protocol, ARPProtocol] if tap else [IPv4Protocol, IPv6Protocol]
    stack = Stack(networks, list(transports))
    if fault is not None:
        link = FaultEndpoint(link, stack.clock, fault.seed, outbound=fault.config, inbound=fault.config)
    stack.create_nic(NIC_ID, link, name=device)
    for a in addresses:
        stack.add_address(NIC_ID, network_protocol(a.address), a)
    stack.set_route_table([Route.parse("0.0.0.0/0", NIC_ID), Route.parse("::/0", NIC_ID)])
    return stack


def wait_for_kernel_side(device: str, timeout: float = LINK_UP_TIMEOUT) -> None:
    """Wait until the kernel has started its side of ``device``, which we have just attached to.

    The kernel turns a TUN/TAP's carrier on as a reader attaches, but starts the device's transmit
    queue later, asynchronously (linkwatch, which needs the RTNL lock, and namespaces being torn
    down elsewhere can hold that for long); until then it drops whatever it sends on the device,
    such as its answer to our first duplicate address detection probe. The operational state
    leaves DOWN together with that start. A device that is administratively down is not waited for.
    """
    from pyroute2 import IPRoute

    deadline = time.monotonic() + timeout
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=device)
        while time.monotonic() < deadline:
            (link,) = ipr.get_links(index)
            if not link["flags"] & _IFF_UP or link.get_attr("IFLA_OPERSTATE") != "DOWN":
                return
            time.sleep(0.005)


def wait_for_unique_addresses(stack: Stack, prog: str, timeout: float = DAD_TIMEOUT,
                              out: TextIO | None = None) -> list[Address]:
    """Wait until duplicate address detection has finished for every tentative address; warn (on
    ``out``, default stderr) about each address another node turned out to hold, which the stack
    has dropped, and return them. Until then a tentative address can neither send nor receive."""
    deadline = time.monotonic() + timeout
    while any(nic.tentative for nic in stack.nics.values()) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    duplicates = []
    for nic in stack.nics.values():
        ipv6 = nic.network_endpoints.get(IPV6_PROTOCOL_NUMBER)
        for addr in ipv6.ndp.duplicates if ipv6 is not None else ():  # type: ignore[attr-defined]
            duplicates.append(Address(addr))
            print(f"{prog}: WARNING: duplicate address {Address(addr)} on {nic.name}: another node already "
                  f"uses it (duplicate address detection), so this stack does not", file=out or sys.stderr,
                  flush=True)
    return duplicates


def wait_for_stop_signal() -> None:
    """Block this greenlet until SIGTERM or SIGINT."""
    stop = Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    try:
        stop.wait()
    finally:
        for h in handlers:
            h.cancel()


def all_counters(stack: Stack) -> dict[str, Any]:
    """Every counter of ``stack`` as plain data: the stack's, each NIC's, its addresses, fault links'."""
    counters = stack.stats().as_dict()
    counters["nic"] = {nic.name: nic.stats.as_dict() for nic in stack.nics.values()}
    counters["addresses"] = {nic.name: [str(a) for addrs in nic.addresses.values() for a in addrs]
                             for nic in stack.nics.values()}
    faults = {nic.name: nic.link.stats for nic in stack.nics.values() if isinstance(nic.link, FaultEndpoint)}
    if faults:
        counters["fault"] = {name: stats.as_dict() for name, stats in faults.items()}
    return counters


def report(stack: Stack, stats_json: str | None, out: TextIO | None = None) -> None:
    """Print the non-zero counters (to ``out``, default stdout) and, if asked, write all of them as JSON."""
    out = out or sys.stdout
    counters = all_counters(stack)
    faults = {nic.name: nic.link.stats for nic in stack.nics.values() if isinstance(nic.link, FaultEndpoint)}
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
