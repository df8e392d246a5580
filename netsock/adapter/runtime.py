"""The stack that sockets use.

A process has one default stack, built on first use from a ``StackConfig`` (``configure``, or the
``NETSOCK_*`` environment variables): a loopback NIC, always, and optionally a TUN/TAP device with
its addresses, gateways and MTU. ``use_stack`` makes another stack current for the calling greenlet
and the greenlets it spawns, so a test or a private network can run beside the default one.
"""

from __future__ import annotations

import atexit
import contextvars
import ipaddress
import os
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import gevent
from gevent import getcurrent

from ..link.loopback import LoopbackEndpoint
from ..network.arp import ARPProtocol
from ..network.ipv4 import IPv4Protocol
from ..network.ipv6 import IPv6Protocol
from ..resolver import Resolver
from ..stack import LinkEndpoint, Stack
from ..tcpip import IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, AddressWithPrefix, Route
from ..transport.icmp import ICMPv4Protocol, ICMPv6Protocol
from ..transport.tcp import TCPEndpoint, TCPProtocol, TCPState
from ..transport.udp import UDPProtocol
from ..transport.udplite import UDPLiteProtocol

__all__ = ["DEVICE_NIC_ID", "LOOPBACK_NIC_ID", "StackConfig", "build_stack", "configure", "current_stack",
           "default_stack", "default_stack_if_built", "finish_connections", "resolver", "stack_config", "use_stack"]

LOOPBACK_NIC_ID = 1
DEVICE_NIC_ID = 2
EXIT_LINGER = 10.0      # seconds a process stays at exit for its connections to deliver what they owe ...
EXIT_STALL = 2.0        # ... unless none of them has had anything acknowledged for this long (a peer gone)
_OWING = frozenset((TCPState.FIN_WAIT1, TCPState.CLOSING, TCPState.LAST_ACK))   # our FIN not yet acknowledged


def _strings(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class StackConfig:
    """What a stack is built with.

    ``addresses`` are CIDRs on the device ("192.0.2.2/24", "2001:db8::2/64"); ``gateways`` the default
    routers, at most one per IP version. Without a gateway for a version, its default route goes out
    of the device on-link (right for a TUN, which is point-to-point). ``pcap`` records the device's
    traffic, or the loopback's when there is no device. ``dns_servers`` are for the resolver.
    """

    device: str | None = None
    tap: bool = False
    addresses: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    mtu: int | None = None
    pcap: str | None = None
    dns_servers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("addresses", "gateways", "dns_servers"):
            object.__setattr__(self, name, _strings(getattr(self, name)))
        for cidr in self.addresses:
            ipaddress.ip_interface(cidr)            # ValueError on anything else
        versions = [ipaddress.ip_address(g).version for g in self.gateways]
        if len(set(versions)) != len(versions):
            raise ValueError(f"at most one gateway per IP version: {self.gateways}")
        for server in self.dns_servers:
            ipaddress.ip_address(server)
        if (self.addresses or self.gateways or self.tap or self.mtu) and not self.device:
            raise ValueError("addresses, gateways, tap and mtu configure a device: name one")
        if self.mtu is not None and not 68 <= self.mtu <= 65535:
            raise ValueError(f"MTU {self.mtu} out of range")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> StackConfig:
        """NETSOCK_DEVICE, NETSOCK_TAP (1), NETSOCK_ADDRESSES, NETSOCK_GATEWAYS, NETSOCK_DNS (lists
        separated by commas or spaces), NETSOCK_MTU, NETSOCK_PCAP."""

        def items(name: str) -> tuple[str, ...]:
            return tuple(environ.get(name, "").replace(",", " ").split())

        mtu = environ.get("NETSOCK_MTU")
        return cls(device=environ.get("NETSOCK_DEVICE") or None, tap=environ.get("NETSOCK_TAP", "") == "1",
                   addresses=items("NETSOCK_ADDRESSES"), gateways=items("NETSOCK_GATEWAYS"),
                   mtu=int(mtu) if mtu else None, pcap=environ.get("NETSOCK_PCAP") or None,
                   dns_servers=items("NETSOCK_DNS"))


_configs: weakref.WeakKeyDictionary[Stack, StackConfig] = weakref.WeakKeyDictionary()


def build_stack(config: StackConfig | None = None, link: LinkEndpoint | None = None) -> Stack:
    """A dual-stack (IPv4 and IPv6) stack on the gevent clock with TCP, UDP, UDP-Lite and ping: NIC 1 is the
    loopback ("lo", 127.0.0.1/8 and ::1), NIC 2 the configured device, if any — opened by name, or
    ``link`` (an in-memory one, say) under the device's name."""
    config = config or StackConfig()
    if link is not None and not config.device:
        raise ValueError("a link needs the name of the device it stands for (config.device)")
    stack = Stack([IPv4Protocol, IPv6Protocol, ARPProtocol],
                  [TCPProtocol, UDPProtocol, UDPLiteProtocol, ICMPv4Protocol, ICMPv6Protocol])
    loopback: LinkEndpoint = LoopbackEndpoint()
    device = link if link is not None or not config.device else _open_device(config)
    if config.pcap:
        from ..link.sniffer import SnifferEndpoint
        if device is not None:
            device = SnifferEndpoint(device, config.pcap)
        else:
            loopback = SnifferEndpoint(loopback, config.pcap)
    stack.create_nic(LOOPBACK_NIC_ID, loopback, name="lo")
    stack.add_address(LOOPBACK_NIC_ID, IPV4_PROTOCOL_NUMBER, "127.0.0.1/8")
    stack.add_address(LOOPBACK_NIC_ID, IPV6_PROTOCOL_NUMBER, "::1/128")
    routes = [Route.parse("127.0.0.0/8", LOOPBACK_NIC_ID), Route.parse("::1/128", LOOPBACK_NIC_ID)]
    if device is not None:
        stack.create_nic(DEVICE_NIC_ID, device, name=config.device)
        versions: set[int] = set()
        for cidr in config.addresses:
            address = AddressWithPrefix.parse(cidr)
            version = address.address.version
            versions.add(version)
            stack.add_address(DEVICE_NIC_ID, IPV4_PROTOCOL_NUMBER if version == 4 else IPV6_PROTOCOL_NUMBER, address)
            routes.append(Route(address.subnet(), DEVICE_NIC_ID))
        gateways: dict[int, str] = {ipaddress.ip_address(g).version: g for g in config.gateways}
        for version in sorted(versions | set(gateways)):
            routes.append(Route.parse("0.0.0.0/0" if version == 4 else "::/0", DEVICE_NIC_ID, gateways.get(version)))
    stack.set_route_table(routes)
    _configs[stack] = config
    return stack


def _open_device(config: StackConfig) -> LinkEndpoint:
    from ..link.fdbased import FdEndpoint
    from ..link.tun import mac_for

    assert config.device is not None
    if not config.tap:
        return FdEndpoint.open_tun(config.device, config.mtu)
    addresses = [AddressWithPrefix.parse(c).address for c in config.addresses]
    station = min(addresses, key=len) if addresses else bytes(4)   # the MAC follows the IPv4 address if any
    return FdEndpoint.open_tap(config.device, mac_for(station[-4:]), config.mtu)


def stack_config(stack: Stack) -> StackConfig:
    """The configuration ``stack`` was built with (an empty one for stacks built elsewhere)."""
    return _configs.get(stack) or StackConfig()


_default: Stack | None = None
_default_config: StackConfig | None = None
_current: contextvars.ContextVar[Stack | None] = contextvars.ContextVar("netsock_stack", default=None)


def configure(config: StackConfig) -> None:
    """Set the configuration of the default stack; only before it exists."""
    global _default_config
    if _default is not None:
        raise RuntimeError("the default stack exists already; configure it before the first socket")
    _default_config = config


def default_stack_if_built() -> Stack | None:
    """The process's stack if a socket has made it, else None (without building it)."""
    return _default


def default_stack() -> Stack:
    """The process's stack, built on first use (from ``configure`` or the environment); at exit, its
    connections finish (``finish_connections``)."""
    global _default
    if _default is None:
        _default = build_stack(_default_config or StackConfig.from_environ())
        atexit.register(finish_connections, _default)
    return _default


def finish_connections(stack: Stack, timeout: float = EXIT_LINGER, stall: float = EXIT_STALL) -> None:
    """What the kernel does when a process exits: close its TCP sockets (a connection sends FIN after what was
    written, a listener resets what it had not accepted) and let the connections deliver what they owe on their
    own. The kernel's go on after the process; a netsock stack lives in the process, so this waits until every
    FIN is acknowledged, and every datagram held for later (SO_TXTIME, pacing) has left: a program that writes
    and exits loses nothing. But not for a peer that takes nothing (its window shut), nor past ``stall`` seconds
    without anything acknowledged, nor ``timeout`` in all."""
    connections = [ep for ep in stack.demux.all_endpoints() if isinstance(ep, TCPEndpoint)]
    for ep in connections:
        if not ep.orphaned:
            ep.close()
    now = time.monotonic()
    deadline, last_progress, progress = now + timeout, now, None
    while now < deadline:
        owing = [(ep, ep.snd.una) for ep in connections
                 if ep.state in _OWING and ep.snd is not None and not ep.snd.persisting]
        held = stack.held_datagrams             # (each leaves at a time known, ten seconds ahead at most)
        if owing != progress:
            progress, last_progress = owing, now
        if not held and (not owing or now - last_progress >= stall):
            return
        gevent.sleep(0.005)
        now = time.monotonic()


@contextmanager
def use_stack(stack: Stack) -> Iterator[Stack]:
    """Make ``stack`` current for this greenlet, and for the greenlets it spawns meanwhile."""
    token = _current.set(stack)
    try:
        yield stack
    finally:
        _current.reset(token)


def current_stack() -> Stack:
    """The stack a new socket belongs to: this greenlet's ``use_stack``, else the nearest one of the
    greenlets that spawned it, else the default."""
    stack = _current.get()
    if stack is not None:
        return stack
    # Greenlets start with an empty context; gevent remembers who spawned each one.
    ref = getattr(getcurrent(), "spawning_greenlet", None)
    while ref is not None:
        spawner = ref()
        if spawner is None:
            break
        context = spawner.gr_context
        stack = context.get(_current) if context is not None else None
        if stack is not None:
            _current.set(stack)     # this greenlet keeps it, even after the spawner leaves its block
            return stack
        ref = getattr(spawner, "spawning_greenlet", None)
    return default_stack()


def resolver(stack: Stack | None = None) -> Resolver:
    """The name resolver of ``stack`` (default: the current one): its hosts table, then the DNS
    servers of its configuration, queried through the stack itself."""
    stack = stack or current_stack()
    found = stack.extensions.get("resolver")
    if not isinstance(found, Resolver):
        found = Resolver(stack, nameservers=stack_config(stack).dns_servers)
        stack.extensions["resolver"] = found
    return found
