"""TUN/TAP devices: create, open, configure the kernel side, delete.

A TUN device carries raw IP packets, a TAP device Ethernet frames; either way every read or write on
its file descriptor is exactly one packet, which is what ``fdbased.FdEndpoint`` needs. The stack
runs on the userspace side of the device; "host side" below means the kernel's own interface, which
the kernel treats like any other NIC (addresses, routes, ARP).

With a virtio-net header (``open_device(..., vnet_header=True)``, then ``set_offloads``) the kernel
may hand over TCP super-segments and packets with their checksum left to the reader, and takes the
same from it: the offloads ``fdbased.FdEndpoint`` uses (see there).

Everything here acts in the calling thread's network namespace. These are setup calls: failures
raise ``OSError`` (with the device name in the message), not stack errors.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import _socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyroute2 import IPRoute

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000
TUN_F_CSUM = 0x01       # we take packets whose checksum is left partial
TUN_F_TSO4 = 0x02       # ... and TCP super-segments, IPv4
TUN_F_TSO6 = 0x04       # ... IPv6
TUN_F_USO4 = 0x20       # ... and UDP super-datagrams (UDP_SEGMENT), IPv4 (Linux 6.2)
TUN_F_USO6 = 0x40       # ... IPv6
# <linux/sockios.h>, <linux/if_arp.h>, <linux/if_addr.h>
SIOCGIFHWADDR = 0x8927
SIOCGIFMTU = 0x8921
ARPHRD_ETHER = 1
IFA_F_NODAD = 0x02

IFNAMSIZ = 16
# rtnetlink, spoken directly where pyroute2 lacks the attributes (BIG TCP's) or is too slow (a
# route lookup per new destination): struct nlmsghdr, rtmsg, ifinfomsg, rtattr.
_NETLINK_ROUTE = 0
_RTM_NEWLINK, _RTM_NEWROUTE, _RTM_GETROUTE, _NLMSG_ERROR = 16, 24, 26, 2
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_RTA_DST = 1
_RTN_LOCAL = 2
_IFLA_GSO_MAX_SIZE, _IFLA_GRO_MAX_SIZE, _IFLA_GSO_IPV4_MAX_SIZE, _IFLA_GRO_IPV4_MAX_SIZE = 41, 58, 63, 64
_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")     # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_IFINFOMSG = struct.Struct("=BxHiII")    # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")
_MAX_ANSWERS = 1024
_IFREQ = struct.Struct("16sH22x")      # struct ifreq: name, then a 24-byte union (here: flags)
_IFREQ_INT = struct.Struct("16si20x")  # ... (here: an int such as ifr_mtu)


def open_device(name: str, tap: bool | None = None, vnet_header: bool = False) -> tuple[int, bool]:
    """Attach a new non-blocking fd to device ``name`` (created, transient, if it does not exist).

    Frames carry no packet-information prefix (IFF_NO_PI). ``tap=None`` opens an existing device as
    whatever it is — its hardware type says: Ethernet for TAP, none for TUN — and a new one as TUN.
    (The type is asked of the kernel with an ioctl rather than read from /sys/class/net, because
    sysfs shows the namespace it was mounted in, not necessarily the caller's.)

    ``vnet_header``: every frame, both ways, is preceded by a virtio-net header (IFF_VNET_HDR); then
    ``set_offloads`` says what the kernel may put in it. Without, the device's offloads are cleared:
    a persistent device keeps those a previous owner enabled, and the kernel would hand us
    super-segments and partial checksums with nothing to tell them apart.
    Returns ``(fd, is_tap)``; the caller owns the fd.
    """
    if tap is None:
        tap = _hardware_type(name) == ARPHRD_ETHER
    flags = (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI
    fd = _attach(name, (flags | IFF_VNET_HDR) if vnet_header else flags)
    if not vnet_header:
        try:
            set_offloads(fd, 0)
        except OSError as e:
            os.close(fd)
            raise OSError(e.errno, f"{name}: {e.strerror}") from None
    return fd, tap


def set_offloads(fd: int, offloads: int, vnet_header_size: int | None = None) -> None:
    """Tell the kernel which offloads (TUN_F_*) the reader of ``fd`` handles, and the size of the
    virtio-net header it reads and writes (the kernel's default is 10, the legacy header).

    The kernel refuses (EINVAL) offloads it does not know; TUN_F_TSO* need TUN_F_CSUM.
    """
    try:
        if vnet_header_size is not None:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", vnet_header_size))
        fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)
    except OSError as e:
        raise OSError(e.errno, f"offloads on fd {fd}: {e.strerror}") from None


def kernel_has_big_tcp_ipv4(release: str | None = None) -> bool:
    """Whether the kernel (``release`` as uname gives it; None: this one) takes IPv4 TCP GSO packets
    longer than 64 KB, their total length field 0 (BIG TCP for IPv4, Linux 6.3). An older kernel
    drops them as malformed, so the answer must err on no."""
    release = os.uname().release if release is None else release
    try:
        major, minor = (int(part) for part in release.split(".", 2)[:2])
    except ValueError:
        return False
    return (major, minor) >= (6, 3)


def _rtnetlink(sock: _socket.socket, msg_type: int, flags: int, body: bytes) -> bytes:
    """One request on a NETLINK_ROUTE socket and the kernel's reply (which it queues within the send)."""
    sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, _NLM_F_REQUEST | flags, 1, 0) + body)
    return sock.recv(65536)


def _attribute(kind: int, value: bytes) -> bytes:
    return _RTATTR.pack(_RTATTR.size + len(value), kind) + value


def set_big_tcp(name: str, size: int) -> None:
    """Let device ``name`` (in the current namespace) build and take TCP packets of up to ``size``
    bytes, IPv6 and IPv4 (BIG TCP: gso/gro_max_size and Linux 6.3's gso/gro_ipv4_max_size, which
    older iproute2 and pyroute2 cannot set)."""
    value = struct.pack("=I", size)
    body = _IFINFOMSG.pack(_socket.AF_UNSPEC, 0, _socket.if_nametoindex(name), 0, 0) + b"".join(
        _attribute(kind, value)
        for kind in (_IFLA_GSO_MAX_SIZE, _IFLA_GRO_MAX_SIZE, _IFLA_GSO_IPV4_MAX_SIZE, _IFLA_GRO_IPV4_MAX_SIZE))
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
    try:
        reply = _rtnetlink(sock, _RTM_NEWLINK, _NLM_F_ACK, body)
    finally:
        sock.close()
    error = struct.unpack_from("=i", reply, _NLMSGHDR.size)[0] if _NLMSGHDR.unpack_from(reply)[1] == _NLMSG_ERROR else 0
    if error:
        raise OSError(-error, f"{name}: BIG TCP up to {size} bytes: {os.strerror(-error)}")


class KernelDestinations:
    """Which addresses the kernel behind a TUN device delivers to itself, rather than forwards: asked
    of its route table (RTM_GETROUTE, as ``ip route get`` does; no packet is sent) over a netlink
    socket opened in the device's namespace, where it stays. A BIG TCP super-segment is only worth
    writing to the kernel for itself: one it forwards to a device that takes no such packets is cut
    in software on the way out, hundreds of segments at once, more than a TUN's queue holds.
    Answers are kept for ``ttl`` seconds (routes change rarely; a stale answer costs speed only)."""

    def __init__(self, ttl: float = 10.0) -> None:
        self._sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
        self._ttl = ttl
        self._answers: dict[bytes, tuple[bool, float]] = {}

    def is_local(self, address: bytes) -> bool:
        """Whether the kernel delivers packets to ``address`` (4 or 16 bytes) itself; False if its
        route table cannot say."""
        now = time.monotonic()
        known = self._answers.get(address)
        if known is not None and known[1] > now:
            return known[0]
        local = self._route_type(address) == _RTN_LOCAL
        if len(self._answers) >= _MAX_ANSWERS:
            self._answers.clear()
        self._answers[bytes(address)] = (local, now + self._ttl)
        return local

    def _route_type(self, address: bytes) -> int | None:
        family = _socket.AF_INET if len(address) == 4 else _socket.AF_INET6
        body = _RTMSG.pack(family, len(address) * 8, 0, 0, 0, 0, 0, 0, 0) + _attribute(_RTA_DST, bytes(address))
        try:
            reply = _rtnetlink(self._sock, _RTM_GETROUTE, 0, body)
        except OSError:
            return None
        if len(reply) < _NLMSGHDR.size + _RTMSG.size or _NLMSGHDR.unpack_from(reply)[1] != _RTM_NEWROUTE:
            return None                         # NLMSG_ERROR: no route at all
        return _RTMSG.unpack_from(reply, _NLMSGHDR.size)[7]

    def close(self) -> None:
        self._sock.close()


def create_device(name: str, tap: bool = False, persist: bool = True) -> int:
    """Create device ``name`` (failing with EBUSY if it exists) and return the fd attached to it.

    With ``persist`` the device outlives the fd (like ``ip tuntap add``): close the fd, or hand it to
    ``FdEndpoint``; ``delete_device`` removes the device. Without, it goes away with the fd.
    A non-multiqueue device takes one fd at a time: close this one before ``open_device``.
    """
    fd = _attach(name, (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI | IFF_TUN_EXCL)
    if persist:
        try:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        except OSError as e:
            os.close(fd)
            raise OSError(e.errno, f"TUNSETPERSIST {name}: {e.strerror}") from None
    return fd


def configure_host_side(name: str, cidrs: list[str], mtu: int | None = None, up: bool = True) -> None:
    """Give the kernel's side of device ``name`` its addresses (e.g. "192.0.2.1/24"), MTU and state.

    IPv6 addresses skip duplicate address detection: the only other node on the link is our stack.
    """
    with _rtnl(name) as (ipr, index):
        if mtu is not None:
            ipr.link("set", index=index, mtu=mtu)
        for cidr in cidrs:
            iface = ipaddress.ip_interface(cidr)
            flags = IFA_F_NODAD if iface.version == 6 else 0
            ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                     flags=flags)
        if up:
            ipr.link("set", index=index, state="up")


def delete_device(name: str) -> None:
    """Remove device ``name``, persistent or not (fds still attached to it start failing)."""
    with _rtnl(name) as (ipr, index):
        ipr.link("del", index=index)


def device_mtu(name: str) -> int:
    """The MTU of device ``name``, as the kernel has it now."""
    with _ioctl_socket() as sock:
        try:
            reply = fcntl.ioctl(sock, SIOCGIFMTU, _IFREQ_INT.pack(_ifname(name), 0))
        except OSError as e:
            raise OSError(e.errno, f"SIOCGIFMTU {name}: {e.strerror}") from None
    return _IFREQ_INT.unpack(reply)[1]


def mac_for(ipv4_address: bytes) -> bytes:
    """A MAC for the stack's end of a TAP link, derived from its IPv4 address: 02:00:a:b:c:d.

    Locally administered (bit 1 of the first octet) and unicast (bit 0 clear), so it cannot collide
    with a vendor-assigned address, and stable, so captures and neighbour tables read predictably.
    """
    if len(ipv4_address) != 4:
        raise ValueError(f"an IPv4 address is 4 bytes, not {len(ipv4_address)}")
    return b"\x02\x00" + bytes(ipv4_address)


@contextmanager
def _ioctl_socket() -> Iterator[_socket.socket]:
    """A kernel socket for interface ioctls: ``_socket``'s, which no patching of ``socket`` replaces."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        yield sock
    finally:
        sock.close()


def _ifname(name: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) < IFNAMSIZ or b"/" in raw or b"\0" in raw:
        raise ValueError(f"invalid interface name {name!r}")
    return raw


def _attach(name: str, flags: int) -> int:
    ifr = _IFREQ.pack(_ifname(name), flags)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as e:
        os.close(fd)
        raise OSError(e.errno, f"TUNSETIFF {name}: {e.strerror}") from None
    return fd


def _hardware_type(name: str) -> int | None:
    """ARPHRD_* type of device ``name``, None if there is no such device."""
    with _ioctl_socket() as sock:
        try:
            reply = fcntl.ioctl(sock, SIOCGIFHWADDR, _IFREQ.pack(_ifname(name), 0))
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            raise OSError(e.errno, f"SIOCGIFHWADDR {name}: {e.strerror}") from None
    return _IFREQ.unpack(reply)[1]   # sockaddr.sa_family of ifr_hwaddr


@contextmanager
def _rtnl(name: str) -> Iterator[tuple[IPRoute, int]]:
    """A netlink route socket and the index of device ``name``; netlink errors become OSError.

    pyroute2 is imported here, not with the module: it takes 150 ms, and only configuring the
    kernel's side of a device needs it (what netsock itself asks of rtnetlink it encodes below)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            indexes = ipr.link_lookup(ifname=name)
            if not indexes:
                raise OSError(errno.ENODEV, f"{name}: no such device")
            yield ipr, indexes[0]
    except NetlinkError as e:
        raise OSError(e.code, f"{name}: {os.strerror(e.code)}") from None
