"""The socket module's name service functions, answered through a netsock stack.

``Resolver.getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``, ``gethostbyaddr`` and
``getnameinfo`` return what CPython's functions of those names return on glibc: the same tuples,
the same exceptions with the same codes and messages, for the same arguments. Names are looked up
in the resolver's hosts table (see ``hosts``) and then with DNS queries sent through the stack
(see ``stub``), so resolution works inside netsock without kernel sockets. Numeric hosts are never
looked up. IPv6 scopes name the stack's NICs, by name or by id.

glibc's argument checks, their order and their error codes are kept, and so are its socket type
and protocol table, service names from the services database (``socket.getservbyname``), numeric
hosts in all of inet_aton's forms, AI_PASSIVE, AI_CANONNAME, AI_NUMERICHOST, AI_NUMERICSERV,
AI_V4MAPPED, AI_ALL and AI_ADDRCONFIG (judged by the stack's addresses, as glibc judges the
kernel's). One thing is not: glibc sorts the addresses of a name by RFC 6724. Here a name's IPv6
addresses come first only when the stack has a global IPv6 address (neither loopback nor
link-local: a link-local one reaches no global destination), and after its IPv4 ones otherwise;
within a family they keep the order of the answer. Without a host, the order is glibc's, which is
fixed: ::1 before 127.0.0.1, and 0.0.0.0 before :: with AI_PASSIVE.
"""

from __future__ import annotations

import operator
import re
import socket
import sys
from socket import (AF_INET, AF_INET6, AF_UNSPEC, AI_ADDRCONFIG, AI_ALL, AI_CANONNAME, AI_NUMERICHOST,
                    AI_NUMERICSERV, AI_PASSIVE, AI_V4MAPPED, EAI_ADDRFAMILY, EAI_AGAIN, EAI_BADFLAGS, EAI_FAIL,
                    EAI_FAMILY, EAI_NODATA, EAI_NONAME, EAI_SERVICE, EAI_SOCKTYPE, NI_DGRAM, NI_NAMEREQD,
                    NI_NOFQDN, NI_NUMERICHOST, NI_NUMERICSERV, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET,
                    SOCK_STREAM, AddressFamily, SocketKind, gaierror, getservbyname, getservbyport, herror,
                    inet_ntop, inet_pton)
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ..header import dns
from ..tcpip import IPV6_PROTOCOL_NUMBER, FullAddress
from .hosts import LOOPBACK_V4, LOOPBACK_V6, HostEntry, HostsTable
from .stub import ResolverStats, Status, StubResolver, worst_failure

if TYPE_CHECKING:
    from ..stack import Stack

__all__ = ["Resolver"]

# glibc's gai_strerror texts.
_GAI_MESSAGES = {
    EAI_BADFLAGS: "Bad value for ai_flags",
    EAI_NONAME: "Name or service not known",
    EAI_AGAIN: "Temporary failure in name resolution",
    EAI_FAIL: "Non-recoverable failure in name resolution",
    EAI_NODATA: "No address associated with hostname",
    EAI_FAMILY: "ai_family not supported",
    EAI_SOCKTYPE: "ai_socktype not supported",
    EAI_SERVICE: "Servname not supported for ai_socktype",
    EAI_ADDRFAMILY: "Address family for hostname not supported",
}
_GAI_CODES = {Status.NXDOMAIN: EAI_NONAME, Status.NODATA: EAI_NODATA, Status.AGAIN: EAI_AGAIN,
              Status.FAIL: EAI_FAIL}

# h_errno values and glibc's hstrerror texts, for gethostbyname_ex and gethostbyaddr.
HOST_NOT_FOUND, TRY_AGAIN, NO_RECOVERY, NO_DATA = 1, 2, 3, 4
_H_MESSAGES = {HOST_NOT_FOUND: "Unknown host", TRY_AGAIN: "Host name lookup failure",
               NO_RECOVERY: "Unknown server error", NO_DATA: "No address associated with name"}
_H_ERRNOS = {Status.NXDOMAIN: HOST_NOT_FOUND, Status.AGAIN: TRY_AGAIN, Status.FAIL: NO_RECOVERY,
             Status.NODATA: NO_DATA}

# Flags glibc accepts; the IDN ones change nothing here, since CPython has IDNA-encoded the name.
_AI_IDN, _AI_CANONIDN, _DEPRECATED_AI_IDN = 0x0040, 0x0080, 0x0300
_AI_KNOWN = int(AI_PASSIVE | AI_CANONNAME | AI_NUMERICHOST | AI_V4MAPPED | AI_ALL | AI_ADDRCONFIG | AI_NUMERICSERV
                | _AI_IDN | _AI_CANONIDN | _DEPRECATED_AI_IDN)   # int: ~ of an IntFlag keeps only known bits
_NI_KNOWN = 0xFF        # NI_NUMERICHOST ... NI_DGRAM, NI_IDN and its two deprecated companions

_SOCK_DCCP, _IPPROTO_DCCP, _IPPROTO_UDPLITE, _IPPROTO_SCTP = 6, 33, 136, 132

_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
_BOTH = frozenset((AF_INET, AF_INET6))
_INT_MAX = 2**31 - 1
_LONG_RANGE = range(-2**63, 2**63)
_ULONG_MAX = 2**64 - 1
_UINT32_MAX = 2**32 - 1


class _TypeProto(NamedTuple):
    socktype: int
    protocol: int
    name: str                   # for getservbyname
    default: bool               # returned when neither a socket type nor a protocol is asked for
    any_protocol: bool = False  # takes whatever protocol is asked for (raw sockets)
    no_service: bool = False    # has no ports, so a service cannot be given


# glibc's gaih_inet_typeproto, in its order (which is the order of the results).
_TYPEPROTOS = (
    _TypeProto(SOCK_STREAM, socket.IPPROTO_TCP, "tcp", True),
    _TypeProto(SOCK_DGRAM, socket.IPPROTO_UDP, "udp", True),
    _TypeProto(_SOCK_DCCP, _IPPROTO_DCCP, "dccp", False),
    _TypeProto(SOCK_DGRAM, _IPPROTO_UDPLITE, "udplite", False),
    _TypeProto(SOCK_STREAM, _IPPROTO_SCTP, "sctp", False),
    _TypeProto(SOCK_SEQPACKET, _IPPROTO_SCTP, "sctp", False),
    _TypeProto(SOCK_RAW, 0, "raw", True, any_protocol=True, no_service=True),
)


class _Address(NamedTuple):
    family: int
    address: bytes
    scope_id: int = 0


class _Info(NamedTuple):
    """One getaddrinfo result before CPython formats it."""

    target: _Address
    socktype: int
    protocol: int
    port: int
    canonname: str


class _LookupFailed(Exception):
    def __init__(self, status: Status) -> None:
        super().__init__(status)
        self.status = status


def _gaierror(code: int) -> gaierror:
    return gaierror(code, _GAI_MESSAGES[code])


def _herror(code: int) -> herror:
    return herror(code, _H_MESSAGES[code])


_E = TypeVar("_E", bound=int)


def _as_enum(value: int, kind: type[_E]) -> _E | int:
    """As socket.py's _intenum_converter: the enum member if there is one, else the int."""
    try:
        return kind(value)
    except ValueError:
        return value


class Resolver:
    """Name resolution for one stack: a hosts table, then DNS through the stack.

    ``hosts`` maps names to addresses (as ``add_host`` does, one call per address); ``hosts_file``
    is read as glibc reads /etc/hosts (None: no file); ``nameservers`` are numeric addresses, an
    IPv6 one optionally with a %scope, asked in order; each try waits ``timeout`` seconds and the
    list is gone through ``attempts`` times; ``search`` domains complete names as resolv.conf's
    search line does (a name with fewer dots than one tries them first), the first also being
    the local domain of NI_NOFQDN. ``cache_size`` bounds the DNS cache (0: no cache).
    """

    def __init__(self, stack: Stack, *, hosts: dict[str, list[str]] | None = None,
                 hosts_file: str | None = "/etc/hosts", nameservers: list[str] | tuple[str, ...] = (),
                 timeout: float = 2.0, attempts: int = 2, search: list[str] | tuple[str, ...] = (),
                 cache_size: int = 1024) -> None:
        self.stack = stack
        self.hosts = HostsTable(hosts, hosts_file)
        servers = [self._nameserver(text) for text in nameservers]
        self._dns = StubResolver(stack, servers, timeout, attempts, search, cache_size)

    @property
    def stats(self) -> ResolverStats:
        return self._dns.stats

    def add_host(self, name: str, address: str) -> None:
        """Make ``name`` resolve to ``address`` (too), ahead of the hosts file and DNS."""
        self.hosts.add(name, address)

    # --- getaddrinfo ------------------------------------------------------------------------------

    def getaddrinfo(self, host: str | bytes | None, port: str | bytes | int | None, family: int = 0,
                    type: int = 0, proto: int = 0,
                    flags: int = 0) -> list[tuple[AddressFamily | int, SocketKind | int, int, str, tuple[Any, ...]]]:
        """socket.getaddrinfo: a list of (family, type, proto, canonname, sockaddr)."""
        if host is None:
            name = None
        elif isinstance(host, str):
            name = host.encode("idna").decode("ascii")
        elif isinstance(host, bytes):
            name = host.decode("ascii", "surrogateescape")
        else:
            raise TypeError("getaddrinfo() argument 1 must be string or None")
        if port is None:
            service = None
        elif port.__class__ is int:                 # exactly int (PyLong_CheckExact): not bool
            if sys.version_info < (3, 12) and port not in _LONG_RANGE:
                raise OverflowError("Python int too large to convert to C long")   # 3.12 takes any int
            service = str(port)
        elif isinstance(port, str):
            port.encode("utf-8")                    # lone surrogates raise, as in CPython
            service = port
        elif isinstance(port, bytes):
            service = port.decode("utf-8", "surrogateescape")
        else:
            raise OSError("Int or String expected")
        infos = self._addrinfo(name, service, _c_int(family), _c_int(type), _c_int(proto), _c_int(flags))
        return [(_as_enum(info.target.family, AddressFamily), _as_enum(info.socktype, SocketKind), info.protocol,
                 info.canonname, _sockaddr(info.target, info.port)) for info in infos]

    def _addrinfo(self, name: str | None, service: str | None, family: int, socktype: int, protocol: int,
                  flags: int) -> list[_Info]:
        """glibc's getaddrinfo, its checks in its order."""
        if name == "*":
            name = None
        if service == "*":
            service = None
        if name is None and service is None:
            raise _gaierror(EAI_NONAME)
        if flags & ~_AI_KNOWN or (flags & AI_CANONNAME and name is None):
            raise _gaierror(EAI_BADFLAGS)
        if family not in (AF_UNSPEC, AF_INET, AF_INET6):
            raise _gaierror(EAI_FAMILY)
        if flags & AI_ADDRCONFIG:
            family = self._configured_family(family)
        service = service or None                   # an empty service is no service
        number = _service_number(service) if service is not None else None
        if service is not None and number is None and flags & AI_NUMERICSERV:
            raise _gaierror(EAI_NONAME)
        services = _services(service, number, socktype, protocol)
        targets, canonical = self._targets(name, family, flags)
        infos = [_Info(target, *service_tuple, "") for target in targets for service_tuple in services]
        if flags & AI_CANONNAME:
            infos[0] = infos[0]._replace(canonname=canonical)
        return infos

    def _configured_family(self, family: int) -> int:
        """AI_ADDRCONFIG: only families the stack has an address of, 127.0.0.1 and ::1 not
        counting (glibc's __check_pf, over the stack's NICs instead of the kernel's)."""
        seen = set()
        for addresses in self.stack.all_addresses().values():
            for protocol_address in addresses:
                address = bytes(protocol_address.address_with_prefix.address)
                if address not in (LOOPBACK_V4, LOOPBACK_V6):
                    seen.add(AF_INET if len(address) == 4 else AF_INET6)
        if family == AF_UNSPEC:
            return seen.pop() if len(seen) == 1 else AF_UNSPEC
        if family not in seen:
            raise _gaierror(EAI_NONAME)
        return family

    def _targets(self, name: str | None, family: int, flags: int) -> tuple[list[_Address], str]:
        """The addresses of ``name`` (None: the wildcard or the loopback), and its canonical name."""
        if name is None:
            return _no_host_targets(family, bool(flags & AI_PASSIVE)), ""
        numeric = self._numeric_host(name, family, flags)
        if numeric is not None:
            return [numeric], name
        if flags & AI_NUMERICHOST:
            raise _gaierror(EAI_NONAME)
        mapped = family == AF_INET6 and bool(flags & AI_V4MAPPED)
        try:
            entry = self._resolve(name, _BOTH if family == AF_UNSPEC or mapped else frozenset((family,)))
        except _LookupFailed as failed:
            raise _gaierror(_GAI_CODES[failed.status]) from None
        v4 = [_Address(AF_INET, a) for a in entry.addresses if len(a) == 4]
        v6 = [_Address(AF_INET6, a) for a in entry.addresses if len(a) == 16]
        if mapped:
            if v6 and not flags & AI_ALL:
                return v6, entry.canonical
            return v6 + [_Address(AF_INET6, _V4_MAPPED_PREFIX + a.address) for a in v4], entry.canonical
        return (v6 + v4 if self._prefers_ipv6() else v4 + v6), entry.canonical

    def _numeric_host(self, name: str, family: int, flags: int) -> _Address | None:
        """glibc's numeric forms: inet_aton's for IPv4, inet_pton's with an optional %scope for IPv6;
        None for anything else (a name)."""
        v4 = _inet_aton_exact(name)
        if v4 is not None:
            if family in (AF_UNSPEC, AF_INET):
                return _Address(AF_INET, v4)
            if family == AF_INET6 and flags & AI_V4MAPPED:
                return _Address(AF_INET6, _V4_MAPPED_PREFIX + v4)
            raise _gaierror(EAI_ADDRFAMILY)
        text, percent, scope = name.partition("%")
        try:
            v6 = inet_pton(AF_INET6, text)
        except (OSError, ValueError):
            return None
        if family == AF_INET:
            if not v6.startswith(_V4_MAPPED_PREFIX):
                raise _gaierror(EAI_ADDRFAMILY)
            result = _Address(AF_INET, v6[12:])
        else:
            result = _Address(AF_INET6, v6)
        if percent:
            scope_id = self._scope_id(v6, scope)
            if scope_id is None:
                raise _gaierror(EAI_NONAME)
            if result.family == AF_INET6:
                result = result._replace(scope_id=scope_id)
        return result

    def _scope_id(self, address: bytes, scope: str) -> int | None:
        """glibc's __inet6_scopeid_pton: a NIC name for link-local addresses (and node- and
        link-local multicast), else a decimal number that fits 32 bits."""
        link_scoped = (address[0] == 0xFE and address[1] & 0xC0 == 0x80) or (
            address[0] == 0xFF and address[1] & 0x0F in (0x1, 0x2))
        if link_scoped:
            nic = self.stack.nic_by_name(scope)
            if nic is not None:
                return nic.id
        if re.fullmatch(r"[0-9]+", scope) and int(scope) <= _UINT32_MAX:
            return int(scope)
        return None

    def _prefers_ipv6(self) -> bool:
        """Has the stack a usable global IPv6 address (the ordering rule in the module docstring)?"""
        for nic in self.stack.nics.values():
            if not nic.enabled or nic.loopback:
                continue
            for prefixed in nic.addresses.get(IPV6_PROTOCOL_NUMBER, ()):
                address = bytes(prefixed.address)
                if (address not in nic.tentative and address[0] != 0xFF
                        and not (address[0] == 0xFE and address[1] & 0xC0 == 0x80) and address != LOOPBACK_V6):
                    return True
        return False

    def _resolve(self, name: str, families: frozenset[int]) -> HostEntry:
        """The hosts table's entry for ``name``, or what DNS says (A before AAAA)."""
        entry = self.hosts.lookup(name, families)
        if entry is not None:
            return entry
        qtypes = tuple(qtype for family, qtype in ((AF_INET, dns.RRType.A), (AF_INET6, dns.RRType.AAAA))
                       if family in families)
        answers = self._dns.lookup(name, qtypes)
        found = [answers[qtype] for qtype in qtypes if answers[qtype].status is Status.FOUND]
        if not found:
            raise _LookupFailed(worst_failure(answer.status for answer in answers.values()))
        addresses = tuple(address for answer in found for address in answer.data if isinstance(address, bytes))
        return HostEntry(found[0].canonical, found[0].aliases, addresses)

    def _reverse(self, address: bytes) -> HostEntry:
        """The hosts table's name for ``address``, or its PTR record (an IPv4-mapped IPv6 address is
        looked up as the IPv4 address, as glibc's DNS backend does)."""
        entry = self.hosts.reverse(address)
        if entry is not None:
            return entry
        asked = address[12:] if address.startswith(_V4_MAPPED_PREFIX) else address
        answer = self._dns.lookup_absolute(dns.reverse_name(asked), (dns.RRType.PTR,))[dns.RRType.PTR]
        if answer.status is not Status.FOUND:
            raise _LookupFailed(answer.status)
        return HostEntry(str(answer.data[0]), (), (address,))

    # --- the hostent functions ----------------------------------------------------------------------

    def gethostbyname(self, hostname: str | bytes | bytearray) -> str:
        """socket.gethostbyname: one IPv4 address, as text."""
        target = self._setipaddr(_name_argument(hostname, "gethostbyname"), AF_INET)
        return inet_ntop(AF_INET, target.address)

    def gethostbyname_ex(self, hostname: str | bytes | bytearray) -> tuple[str, list[str], list[str]]:
        """socket.gethostbyname_ex: (canonical name, aliases, IPv4 addresses)."""
        name = _name_argument(hostname, "gethostbyname_ex")
        self._setipaddr(name, AF_INET)   # as CPython: a name that does not resolve raises gaierror
        if not name or name == "<broadcast>":
            raise _herror(NO_RECOVERY)   # setipaddr's special names mean nothing to gethostbyname_r
        if _DIGITS_DOTS.fullmatch(name):            # glibc's __nss_hostname_digits_dots
            numeric = _inet_aton_exact(name)
            if numeric is None:
                raise _herror(HOST_NOT_FOUND)
            return name, [], [inet_ntop(AF_INET, numeric)]
        try:
            entry = self._resolve(name, frozenset((AF_INET,)))
        except _LookupFailed as failed:
            raise _herror(_H_ERRNOS[failed.status]) from None
        return entry.canonical, list(entry.aliases), [inet_ntop(AF_INET, a) for a in entry.addresses]

    def gethostbyaddr(self, ip_address: str | bytes | bytearray) -> tuple[str, list[str], list[str]]:
        """socket.gethostbyaddr: (name, aliases, [the address]); a name is resolved first."""
        target = self._setipaddr(_name_argument(ip_address, "gethostbyaddr"), AF_UNSPEC)
        try:
            entry = self._reverse(target.address)
        except _LookupFailed as failed:
            raise _herror(_H_ERRNOS[failed.status]) from None
        return entry.canonical, list(entry.aliases), [inet_ntop(target.family, target.address)]

    def address_of(self, name: str, family: int) -> bytes:
        """The packed address a socket's host argument ``name`` stands for in ``family`` (CPython's
        setipaddr, as bind, connect and sendto use it)."""
        return self._setipaddr(name, family).address

    def _setipaddr(self, name: str, family: int) -> _Address:
        """CPython's setipaddr: the one address a host argument stands for."""
        if not name:
            infos = self._addrinfo(None, "0", family, SOCK_DGRAM, 0, AI_PASSIVE)
            if len(infos) > 1:
                raise OSError("wildcard resolved to multiple address")
            return infos[0].target
        if name in ("255.255.255.255", "<broadcast>"):
            if family not in (AF_INET, AF_UNSPEC):
                raise OSError("address family mismatched")
            return _Address(AF_INET, b"\xff\xff\xff\xff")
        for candidate in (AF_INET, AF_INET6):
            if family in (AF_UNSPEC, candidate) and not (candidate == AF_INET6 and "%" in name):
                try:
                    return _Address(candidate, inet_pton(candidate, name))
                except (OSError, ValueError):
                    pass
        return self._addrinfo(name, None, family, 0, 0, 0)[0].target

    # --- getnameinfo --------------------------------------------------------------------------------

    def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        """socket.getnameinfo: (host, port), each a name when one is known and not refused by flags."""
        flags = _c_int(flags)
        if not isinstance(sockaddr, tuple):
            raise TypeError("getnameinfo() argument 1 must be a tuple")
        if not 2 <= len(sockaddr) <= 4 or not isinstance(sockaddr[0], str):
            raise TypeError("getnameinfo(): illegal sockaddr argument")
        host = sockaddr[0]
        if "\0" in host:
            raise ValueError("embedded null character")
        port = _c_int(sockaddr[1])
        flowinfo, scope_id = ([operator.index(v) & _UINT32_MAX for v in sockaddr[2:]] + [0, 0])[:2]   # "I": masked
        if flowinfo > 0xFFFFF:
            raise OverflowError("getnameinfo(): flowinfo must be 0-1048575.")
        infos = self._addrinfo(host, str(port), AF_UNSPEC, SOCK_DGRAM, 0, AI_NUMERICHOST)
        if len(infos) > 1:
            raise OSError("sockaddr resolved to multiple addresses")
        target, port = infos[0].target, infos[0].port
        if target.family == AF_INET and len(sockaddr) != 2:
            raise OSError("IPv4 sockaddr must be 2 tuple")
        if target.family == AF_INET6:
            target = target._replace(scope_id=scope_id)
        if flags & ~_NI_KNOWN:
            raise _gaierror(EAI_BADFLAGS)
        service = None if flags & NI_NUMERICSERV else _service_name(port, "udp" if flags & NI_DGRAM else "tcp")
        return self._host_name(target, flags), service or str(port)

    def _host_name(self, target: _Address, flags: int) -> str:
        """glibc's gni_host_inet: the name unless NI_NUMERICHOST; the number unless NI_NAMEREQD."""
        if not flags & NI_NUMERICHOST:
            try:
                name = self._reverse(target.address).canonical
            except _LookupFailed as failed:
                if failed.status is Status.AGAIN:
                    raise _gaierror(EAI_AGAIN) from None
            else:
                local_domain = self._dns.search[0] if self._dns.search else ""
                if flags & NI_NOFQDN and local_domain and name.lower().endswith("." + local_domain.lower()):
                    name = name[:-len(local_domain) - 1]
                return name
        if flags & NI_NAMEREQD:
            raise _gaierror(EAI_NONAME)
        text = inet_ntop(target.family, target.address)
        if target.family == AF_INET6 and target.scope_id:
            address = target.address
            nic = self.stack.nics.get(target.scope_id)
            link_local = (address[0] == 0xFE and address[1] & 0xC0 == 0x80) or (
                address[0] == 0xFF and address[1] & 0x0F == 0x2)
            text += "%" + (nic.name if link_local and nic is not None else str(target.scope_id))
        return text

    # --- configuration ------------------------------------------------------------------------------

    def _nameserver(self, text: str) -> FullAddress:
        address = self._numeric_host(text, AF_UNSPEC, 0)
        if address is None:
            raise ValueError(f"a name server is a numeric address, not {text!r}")
        return FullAddress(address.scope_id, address.address, dns.PORT)


# --- glibc's and CPython's argument handling ----------------------------------------------------------

_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_DIGITS_DOTS = re.compile(r"[0-9.]*[0-9]")
_STRTOUL = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")


def _inet_aton_exact(text: str) -> bytes | None:
    """glibc's __inet_aton_exact: one to four parts, each decimal, octal (0...) or hex (0x...);
    the last fills the bytes the others left (so "127.1" is 127.0.0.1)."""
    parts = text.split(".")
    if len(parts) > 4 or not all(_ATON_PART.fullmatch(p) for p in parts):
        return None
    values = [int(p, 16) if p[:2] in ("0x", "0X") else int(p, 8) if p[0] == "0" else int(p) for p in parts]
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    return bytes(leading) + last.to_bytes(4 - len(leading), "big")


def _service_number(service: str) -> int | None:
    """What glibc makes of a service with strtoul and an int cast: None if it is not all number
    (a name); else the number, negative when the cast makes it so (then it is looked up as a name,
    and fails, but AI_NUMERICSERV does not refuse it)."""
    match = _STRTOUL.fullmatch(service)
    if match is None:
        return None
    value = int(match.group(2))
    if value > _ULONG_MAX:
        value = _ULONG_MAX
    elif match.group(1) == "-":
        value = -value & _ULONG_MAX
    value &= _UINT32_MAX
    return value - 2**32 if value > _INT_MAX else value


def _services(service: str | None, number: int | None, socktype: int,
              protocol: int) -> list[tuple[int, int, int]]:
    """(socket type, protocol, port) for each result per address, as glibc's gaih_inet builds them."""
    chosen = None
    if socktype or protocol:
        chosen = next((tp for tp in _TYPEPROTOS if (not socktype or socktype == tp.socktype)
                       and (not protocol or tp.any_protocol or protocol == tp.protocol)), None)
        if chosen is None:
            raise _gaierror(EAI_SOCKTYPE if socktype else EAI_SERVICE)
    port = 0
    if service is not None:
        if chosen is not None and chosen.no_service:
            raise _gaierror(EAI_SERVICE)
        if number is None or number < 0:
            found = []
            for tp in (chosen,) if chosen is not None else _TYPEPROTOS:
                named_port = None if tp.no_service else _service_port(service, tp.name)
                if named_port is not None:
                    found.append((tp.socktype, protocol if tp.any_protocol else tp.protocol, named_port))
            if not found:
                raise _gaierror(EAI_SERVICE)
            return found
        port = number & 0xFFFF
    if chosen is not None:
        return [(chosen.socktype, protocol if chosen.any_protocol else chosen.protocol, port)]
    return [(tp.socktype, tp.protocol, port) for tp in _TYPEPROTOS if tp.default]


def _service_port(name: str, protocol: str) -> int | None:
    try:
        return getservbyname(name, protocol)
    except (OSError, UnicodeError, ValueError):
        return None


def _service_name(port: int, protocol: str) -> str | None:
    try:
        return getservbyport(port, protocol)
    except OSError:
        return None


def _no_host_targets(family: int, passive: bool) -> list[_Address]:
    """glibc's fixed answer for no host: the wildcard with AI_PASSIVE, else the loopback; of both
    families, in the order its RFC 6724 sort always leaves them."""
    v4 = _Address(AF_INET, bytes(4) if passive else LOOPBACK_V4)
    v6 = _Address(AF_INET6, bytes(16) if passive else LOOPBACK_V6)
    if family != AF_UNSPEC:
        return [v4 if family == AF_INET else v6]
    return [v4, v6] if passive else [v6, v4]


def _sockaddr(target: _Address, port: int) -> tuple[Any, ...]:
    text = inet_ntop(target.family, target.address)
    return (text, port) if target.family == AF_INET else (text, port, 0, target.scope_id)


def _c_int(value: Any) -> int:
    """A C int argument as CPython's "i" format takes it."""
    number = operator.index(value)
    if number > _INT_MAX:
        raise OverflowError("signed integer is greater than maximum")
    if number < -_INT_MAX - 1:
        raise OverflowError("signed integer is less than minimum")
    return number


def _name_argument(value: Any, function: str) -> str:
    """A host argument as CPython's "et" format with the idna codec takes it."""
    if isinstance(value, str):
        raw = value.encode("idna")
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        kind = "None" if value is None else type(value).__name__
        raise TypeError(f"{function}() argument 1 must be str, bytes or bytearray, not {kind}")
    if b"\0" in raw:
        kind = "str" if isinstance(value, str) else type(value).__name__
        raise TypeError(f"{function}() argument 1 must be encoded string without null bytes, not {kind}")
    return raw.decode("ascii", "surrogateescape")
