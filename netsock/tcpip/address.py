"""Addresses, subnets and routes (netstack's ``tcpip`` value types).

An ``Address`` is the raw network-order bytes of an address (4 for IPv4, 16 for IPv6), exactly as it
appears on the wire, so that addresses sliced out of a packet compare and hash equal to configured
ones without any conversion on the data path. Plain ``bytes`` are accepted wherever an ``Address``
is; the subclass only adds parsing and printing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import NamedTuple

NICID = int
NetworkProtocolNumber = int
TransportProtocolNumber = int

IPV4_PROTOCOL_NUMBER: NetworkProtocolNumber = 0x0800
ARP_PROTOCOL_NUMBER: NetworkProtocolNumber = 0x0806
IPV6_PROTOCOL_NUMBER: NetworkProtocolNumber = 0x86DD

ICMPV4_PROTOCOL_NUMBER: TransportProtocolNumber = 1
TCP_PROTOCOL_NUMBER: TransportProtocolNumber = 6
UDP_PROTOCOL_NUMBER: TransportProtocolNumber = 17
ICMPV6_PROTOCOL_NUMBER: TransportProtocolNumber = 58


class Address(bytes):
    """A network address in wire (network byte order) form."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse dotted IPv4 or textual IPv6; raises ValueError on anything else."""
        return cls(ipaddress.ip_address(text).packed)

    @classmethod
    def of(cls, value: str | bytes) -> Address:
        """An Address from text or raw bytes (4 or 16 long)."""
        if isinstance(value, str):
            return cls.parse(value)
        if len(value) not in (0, 4, 16):
            raise ValueError(f"an address is 4 or 16 bytes, not {len(value)}")
        return value if type(value) is cls else cls(value)

    @property
    def version(self) -> int:
        return 4 if len(self) == 4 else 6

    def is_unspecified(self) -> bool:
        return not any(self)

    def __str__(self) -> str:
        if len(self) in (4, 16):
            return str(ipaddress.ip_address(bytes(self)))
        return self.hex()

    def __repr__(self) -> str:
        return f"Address({str(self)!r})"


def address_str(addr: bytes) -> str:
    """Text form of raw address bytes (plain bytes or Address)."""
    return str(Address(addr)) if type(addr) is not Address else str(addr)


IPV4_ANY = Address(bytes(4))
IPV4_BROADCAST = Address(b"\xff" * 4)
IPV6_ANY = Address(bytes(16))


class AddressMask(bytes):
    """A bit mask over an address, as bytes of the same length."""

    __slots__ = ()

    @classmethod
    def from_prefix(cls, prefix_len: int, length: int) -> AddressMask:
        if not 0 <= prefix_len <= length * 8:
            raise ValueError(f"prefix length {prefix_len} out of range for a {length}-byte address")
        bits = ((1 << prefix_len) - 1) << (length * 8 - prefix_len)
        return cls(bits.to_bytes(length, "big"))

    def prefix(self) -> int:
        """Number of one bits before the first zero bit."""
        value = int.from_bytes(self, "big")
        total = len(self) * 8
        inverted = ~value & ((1 << total) - 1)
        return total - inverted.bit_length()

    def __str__(self) -> str:
        return str(Address(bytes(self)))


class Subnet:
    """A subnet: an address and a mask of the same length, with host bits zero."""

    __slots__ = ("address", "mask", "_net", "_maskint", "_prefix", "_broadcast")

    def __init__(self, address: bytes, mask: bytes) -> None:
        if len(address) != len(mask):
            raise ValueError("subnet address and mask lengths differ")
        maskint = int.from_bytes(mask, "big")
        net = int.from_bytes(address, "big")
        if net & ~maskint & ((1 << (8 * len(mask))) - 1):
            raise ValueError("subnet address has bits set outside the mask")
        self.address = Address(address)
        self.mask = AddressMask(mask)
        self._net = net
        self._maskint = maskint
        self._prefix = self.mask.prefix()
        self._broadcast = net | (~maskint & ((1 << (8 * len(mask))) - 1))

    @classmethod
    def parse(cls, cidr: str) -> Subnet:
        """Parse 'a.b.c.d/n' or 'x::/n'; host bits must be zero."""
        net = ipaddress.ip_network(cidr, strict=True)
        return cls(net.network_address.packed, net.netmask.packed)

    def contains(self, addr: bytes) -> bool:
        return len(addr) == len(self.address) and int.from_bytes(addr, "big") & self._maskint == self._net

    __contains__ = contains

    def prefix(self) -> int:
        return self._prefix

    def bits(self) -> tuple[int, int]:
        """Network bits and host bits."""
        return self._prefix, len(self.mask) * 8 - self._prefix

    def broadcast(self) -> Address:
        """The subnet-directed broadcast address (all host bits set)."""
        return Address(self._broadcast.to_bytes(len(self.mask), "big"))

    def is_broadcast(self, addr: bytes) -> bool:
        """True for the directed broadcast of a subnet that has host bits to spare (not /31 or /32)."""
        size = len(self.mask)
        return (len(addr) == size and self._prefix <= size * 8 - 2
                and int.from_bytes(addr, "big") == self._broadcast)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Subnet) and self.address == other.address and self.mask == other.mask

    def __hash__(self) -> int:
        return hash((bytes(self.address), bytes(self.mask)))

    def __str__(self) -> str:
        return f"{self.address}/{self._prefix}"

    def __repr__(self) -> str:
        return f"Subnet({str(self)!r})"


@dataclass(frozen=True)
class AddressWithPrefix:
    """An address with its subnet prefix length, e.g. 192.0.2.1/24."""

    address: Address
    prefix_len: int

    def __post_init__(self) -> None:
        mask = AddressMask.from_prefix(self.prefix_len, len(self.address))
        net = bytes(a & m for a, m in zip(self.address, mask))
        # Computed once: route lookups ask for it on every unconnected send.
        object.__setattr__(self, "_subnet", Subnet(net, mask))

    @classmethod
    def parse(cls, cidr: str) -> AddressWithPrefix:
        iface = ipaddress.ip_interface(cidr)
        return cls(Address(iface.ip.packed), iface.network.prefixlen)

    def subnet(self) -> Subnet:
        return self._subnet  # type: ignore[attr-defined]

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix_len}"


@dataclass(frozen=True)
class ProtocolAddress:
    """An address together with the network protocol it belongs to."""

    protocol: NetworkProtocolNumber
    address_with_prefix: AddressWithPrefix


class FullAddress(NamedTuple):
    """A transport address: NIC (0 = any), network address (b'' = any) and port."""

    nic: NICID = 0
    addr: bytes = b""
    port: int = 0

    def __str__(self) -> str:
        host = address_str(self.addr) if self.addr else "*"
        return f"{host}:{self.port}" + (f"%{self.nic}" if self.nic else "")


class LinkAddress(bytes):
    """A link-layer (MAC) address in wire form."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> LinkAddress:
        """Parse aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff; raises ValueError otherwise."""
        parts = text.replace("-", ":").split(":")
        if len(parts) != 6 or any(len(p) != 2 for p in parts) or ("-" in text and ":" in text):
            raise ValueError(f"invalid MAC address {text!r}")
        try:
            return cls(bytes(int(p, 16) for p in parts))
        except ValueError:
            raise ValueError(f"invalid MAC address {text!r}") from None

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self)

    def __repr__(self) -> str:
        return f"LinkAddress({str(self)!r})"


@dataclass(frozen=True)
class Route:
    """A row of the route table: packets to ``destination`` go out ``nic`` (via ``gateway`` if set)."""

    destination: Subnet
    nic: NICID
    gateway: bytes = b""
    mtu: int = 0  # 0: the NIC's MTU

    @classmethod
    def parse(cls, destination: str, nic: NICID, gateway: str | None = None, mtu: int = 0) -> Route:
        return cls(Subnet.parse(destination), nic, Address.parse(gateway) if gateway else b"", mtu)

    def __str__(self) -> str:
        via = f" via {address_str(self.gateway)}" if self.gateway else ""
        return f"{self.destination}{via} nic {self.nic}"
