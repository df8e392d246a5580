"""Source-specific multicast on NetsockSocket (RFC 3678's API), call by call beside the kernel's sockets on the
loopback: IP_ADD_SOURCE_MEMBERSHIP and its kin with struct ip_mreq_source, the MCAST_ requests of either level
with struct group_req and group_source_req, IP_MSFILTER and MCAST_MSFILTER; and which sources' datagrams reach a
filtered member and a socket of no membership (the interface's filter holds back what no member wants)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any, TypeVar

import gevent
import pytest

from netsock.adapter import NetsockSocket

from conftest import outcome, private_kernel_network

IP, IPV6 = socket.IPPROTO_IP, socket.IPPROTO_IPV6
IP_UNBLOCK_SOURCE, IP_BLOCK_SOURCE, IP_ADD_SOURCE_MEMBERSHIP, IP_DROP_SOURCE_MEMBERSHIP = 37, 38, 39, 40
IP_MSFILTER = 41
MCAST_JOIN_GROUP, MCAST_BLOCK_SOURCE, MCAST_UNBLOCK_SOURCE, MCAST_LEAVE_GROUP = 42, 43, 44, 45
MCAST_JOIN_SOURCE_GROUP, MCAST_LEAVE_SOURCE_GROUP, MCAST_MSFILTER = 46, 47, 48
MCAST_EXCLUDE, MCAST_INCLUDE = 0, 1
LO = 1                          # the loopback's index, the kernel's and netsock's
GROUP, GROUP6 = socket.inet_aton("239.1.2.3"), socket.inet_pton(socket.AF_INET6, "ff12::1:3")
HERE, NOWHERE = socket.inet_aton("127.0.0.1"), socket.inet_aton("192.0.2.77")
S1, S2 = socket.inet_aton("127.0.0.2"), socket.inet_aton("127.0.0.3")
V6_S1, V6_S2 = socket.inet_pton(socket.AF_INET6, "2001:db8::7"), socket.inet_pton(socket.AF_INET6, "2001:db8::8")
PORT = 5007
Step = tuple[str, int, int, bytes]
T = TypeVar("T")


def on_the_kernel(scenario: Callable[..., T], *args: Any) -> T:
    """``scenario`` run on the kernel's sockets, where root may, in a network namespace of its own: a host's
    group memberships set what its interfaces accept for every socket, so another run of these tests at the
    same time (CI runs each Python's) would change what a bystander reads."""
    with private_kernel_network():
        return scenario(socket.socket, *args)


def storage(address: bytes) -> bytes:
    """A sockaddr_storage holding ``address`` (sockaddr_in or sockaddr_in6)."""
    if len(address) == 4:
        return struct.pack("H2x4s", socket.AF_INET, address).ljust(128, b"\0")
    return struct.pack("H2xI16sI", socket.AF_INET6, 0, address, 0).ljust(128, b"\0")


def group_req(group: bytes, ifindex: int = LO) -> bytes:
    return struct.pack("I4x128s", ifindex, storage(group))


def group_source_req(group: bytes, source: bytes, ifindex: int = LO) -> bytes:
    return struct.pack("I4x128s128s", ifindex, storage(group), storage(source))


def mreq_source(source: bytes, group: bytes = GROUP, interface: bytes = HERE) -> bytes:
    return group + interface + source


def msfilter(mode: int, sources: list[bytes], group: bytes = GROUP, count: int | None = None) -> bytes:
    return group + HERE + struct.pack("II", mode, len(sources) if count is None else count) + b"".join(sources)


def group_filter(mode: int, sources: list[bytes], group: bytes = GROUP, count: int | None = None) -> bytes:
    head = struct.pack("I4x128sII", LO, storage(group), mode, len(sources) if count is None else count)
    return head + b"".join(storage(s) for s in sources)


IPV4_STEPS: list[Step] = [
    ("add a source (joins)", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S1)),
    ("add it again", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S1)),
    ("add another", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S2)),
    ("block in include mode", IP, IP_BLOCK_SOURCE, mreq_source(S1)),
    ("a plain join on top", IP, socket.IP_ADD_MEMBERSHIP, GROUP + HERE),
    ("MCAST_JOIN_GROUP on top", IP, MCAST_JOIN_GROUP, group_req(GROUP)),
    ("MCAST_JOIN_SOURCE_GROUP, there", IP, MCAST_JOIN_SOURCE_GROUP, group_source_req(GROUP, S1)),
    ("drop one", IP, IP_DROP_SOURCE_MEMBERSHIP, mreq_source(S1)),
    ("drop it again", IP, IP_DROP_SOURCE_MEMBERSHIP, mreq_source(S1)),
    ("drop the last (leaves)", IP, MCAST_LEAVE_SOURCE_GROUP, group_source_req(GROUP, S2)),
    ("drop after the leave", IP, IP_DROP_SOURCE_MEMBERSHIP, mreq_source(S2)),
    ("MCAST_JOIN_GROUP", IP, MCAST_JOIN_GROUP, group_req(GROUP)),
    ("block", IP, MCAST_BLOCK_SOURCE, group_source_req(GROUP, S1)),
    ("block again", IP, IP_BLOCK_SOURCE, mreq_source(S1)),
    ("add in exclude mode", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S2)),
    ("unblock", IP, MCAST_UNBLOCK_SOURCE, group_source_req(GROUP, S1)),
    ("unblock again", IP, IP_UNBLOCK_SOURCE, mreq_source(S1)),
    ("add once the list was had", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S2)),
    ("MCAST_LEAVE_GROUP", IP, MCAST_LEAVE_GROUP, group_req(GROUP)),
    ("leave again", IP, MCAST_LEAVE_GROUP, group_req(GROUP)),
    ("a plain join, then a source (switches mode)", IP, socket.IP_ADD_MEMBERSHIP, GROUP + HERE),
    ("... the source", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S1)),
    ("... and the block it now refuses", IP, IP_BLOCK_SOURCE, mreq_source(S2)),
    ("msfilter: exclude two", IP, IP_MSFILTER, msfilter(MCAST_EXCLUDE, [S1, S2])),
    ("msfilter: a block on top", IP, IP_BLOCK_SOURCE, mreq_source(HERE)),
    ("msfilter: bad mode", IP, IP_MSFILTER, msfilter(7, [S1])),
    ("msfilter: short list", IP, IP_MSFILTER, msfilter(MCAST_INCLUDE, [S1], count=2)),
    ("msfilter: too many", IP, IP_MSFILTER, msfilter(MCAST_INCLUDE, [S1] * 11)),
    ("group_filter: include one", IP, MCAST_MSFILTER, group_filter(MCAST_INCLUDE, [S2])),
    ("group_filter: IPv6 group", IP, MCAST_MSFILTER, group_filter(MCAST_INCLUDE, [S2], group=GROUP6)),
    ("group_filter: include none (leaves)", IP, MCAST_MSFILTER, group_filter(MCAST_INCLUDE, [])),
    ("msfilter without a membership", IP, IP_MSFILTER, msfilter(MCAST_EXCLUDE, [S1])),
    ("ip_mreq_source short", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S1)[:11]),
    ("ip_mreq_source long", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S1) + b"\0"),
    ("not a group", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S1, group=HERE)),
    ("no such interface address", IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S1, interface=NOWHERE)),
    ("group_req short", IP, MCAST_JOIN_GROUP, group_req(GROUP)[:-1]),
    ("group_req of an IPv6 group", IP, MCAST_JOIN_GROUP, group_req(GROUP6)),
    ("group_source_req of an IPv6 source", IP, MCAST_JOIN_SOURCE_GROUP, group_source_req(GROUP, V6_S1)),
    ("no such interface index", IP, MCAST_JOIN_SOURCE_GROUP, group_source_req(GROUP, S1, ifindex=999)),
]
IPV6_STEPS: list[Step] = [
    ("join a source", IPV6, MCAST_JOIN_SOURCE_GROUP, group_source_req(GROUP6, V6_S1)),
    ("again", IPV6, MCAST_JOIN_SOURCE_GROUP, group_source_req(GROUP6, V6_S1)),
    ("another", IPV6, MCAST_JOIN_SOURCE_GROUP, group_source_req(GROUP6, V6_S2)),
    ("MCAST_JOIN_GROUP on top", IPV6, MCAST_JOIN_GROUP, group_req(GROUP6)),
    ("block in include mode", IPV6, MCAST_BLOCK_SOURCE, group_source_req(GROUP6, V6_S1)),
    ("leave one", IPV6, MCAST_LEAVE_SOURCE_GROUP, group_source_req(GROUP6, V6_S1)),
    ("leave the last", IPV6, MCAST_LEAVE_SOURCE_GROUP, group_source_req(GROUP6, V6_S2)),
    ("join", IPV6, MCAST_JOIN_GROUP, group_req(GROUP6)),
    ("block", IPV6, MCAST_BLOCK_SOURCE, group_source_req(GROUP6, V6_S1)),
    ("unblock", IPV6, MCAST_UNBLOCK_SOURCE, group_source_req(GROUP6, V6_S1)),
    ("group_filter", IPV6, MCAST_MSFILTER, group_filter(MCAST_EXCLUDE, [V6_S2], group=GROUP6)),
    ("leave", IPV6, MCAST_LEAVE_GROUP, group_req(GROUP6)),
    ("leave again", IPV6, MCAST_LEAVE_GROUP, group_req(GROUP6)),
    ("an IPv4 group", IPV6, MCAST_JOIN_GROUP, group_req(GROUP)),
    ("an IPv4 source", IPV6, MCAST_JOIN_SOURCE_GROUP, group_source_req(GROUP6, S1)),
    ("group_filter of an IPv4 group", IPV6, MCAST_MSFILTER, group_filter(MCAST_EXCLUDE, [], group=GROUP)),
]


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize(("family", "steps"), [(socket.AF_INET, IPV4_STEPS), (socket.AF_INET6, IPV6_STEPS)],
                         ids=["ipv4", "ipv6"])
def test_every_request_answers_as_on_the_kernel(family: int, steps: list[Step]) -> None:
    def answers(make: Any) -> list[Any]:
        with closing(make(family, socket.SOCK_DGRAM)) as sock:
            return [(name, outcome(lambda: sock.setsockopt(level, option, value)))
                    for name, level, option, value in steps]
    assert answers(NetsockSocket) == on_the_kernel(answers)


def deliveries(make: Any, member_filter: Callable[[Any], None]) -> dict[str, list[str]]:
    """Datagrams to GROUP from 127.0.0.1, .2 and .3, sent out of the loopback: what a member with the filter
    ``member_filter`` sets and a socket of no membership on the same port read."""
    sockets = {}
    for name in ("member", "other"):
        sock = sockets[name] = make(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", PORT))
    member_filter(sockets["member"])
    for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        with closing(make(socket.AF_INET, socket.SOCK_DGRAM)) as sender:
            sender.bind((source, 0))
            sender.setsockopt(IP, socket.IP_MULTICAST_IF, HERE)
            sender.sendto(source.encode(), (socket.inet_ntoa(GROUP), PORT))
    (gevent.sleep if make is NetsockSocket else time.sleep)(0.05)
    read = {}
    for name, sock in sockets.items():
        sock.setblocking(False)
        read[name] = []
        while True:
            try:
                read[name].append(sock.recv(100).decode())
            except BlockingIOError:
                break
        sock.close()
    return read


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("member_filter", [
    lambda s: s.setsockopt(IP, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(S1)),
    lambda s: (s.setsockopt(IP, socket.IP_ADD_MEMBERSHIP, GROUP + HERE), s.setsockopt(IP, IP_BLOCK_SOURCE,
                                                                                       mreq_source(S1))),
    lambda s: (s.setsockopt(IP, MCAST_JOIN_GROUP, group_req(GROUP)),
               s.setsockopt(IP, MCAST_MSFILTER, group_filter(MCAST_INCLUDE, [S1, S2]))),
], ids=["include one", "exclude one", "include two"])
def test_a_member_and_a_bystander_read_what_the_filters_let_through(member_filter: Callable[[Any], None]) -> None:
    assert deliveries(NetsockSocket, member_filter) == on_the_kernel(deliveries, member_filter)


def ipv4_groups_on_ipv6_sockets(make: Any) -> list[Any]:
    """An IPv6 socket joins an IPv4 group (IP_ADD_MEMBERSHIP, as Linux lets it), before and after binding to the
    wildcard, and reads the group's datagrams as mapped addresses; the errors of joining twice, leaving what it
    never joined, joining a unicast address; a bystander IPv6 socket on the port, no member, reads none."""
    trace: list[Any] = []
    with closing(make(socket.AF_INET6, socket.SOCK_DGRAM)) as early, \
            closing(make(socket.AF_INET6, socket.SOCK_DGRAM)) as late, \
            closing(make(socket.AF_INET6, socket.SOCK_DGRAM)) as bystander:
        trace.append(outcome(lambda: early.setsockopt(IP, socket.IP_ADD_MEMBERSHIP, GROUP + HERE)))
        for sock in (early, late, bystander):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", PORT))
            sock.setblocking(False)
        trace += [outcome(lambda: late.setsockopt(IP, socket.IP_ADD_MEMBERSHIP, GROUP + HERE)),
                  outcome(lambda: late.setsockopt(IP, socket.IP_ADD_MEMBERSHIP, GROUP + HERE)),
                  outcome(lambda: late.setsockopt(IP, socket.IP_DROP_MEMBERSHIP, GROUP6[:4] + HERE)),
                  outcome(lambda: late.setsockopt(IP, socket.IP_ADD_MEMBERSHIP, HERE + HERE)),
                  outcome(lambda: late.setsockopt(IP, socket.IP_ADD_MEMBERSHIP, GROUP))]
        with closing(make(socket.AF_INET, socket.SOCK_DGRAM)) as sender:
            sender.setsockopt(IP, socket.IP_MULTICAST_IF, HERE)
            sender.sendto(b"to the group", (socket.inet_ntoa(GROUP), PORT))
        (gevent.sleep if make is NetsockSocket else time.sleep)(0.05)
        for sock in (early, late, bystander):
            trace.append(outcome(lambda: (lambda data, peer: (data, peer[0]))(*sock.recvfrom(100))))
        trace.append(outcome(lambda: late.setsockopt(IP, socket.IP_DROP_MEMBERSHIP, GROUP + HERE)))
        with closing(make(socket.AF_INET, socket.SOCK_DGRAM)) as sender:
            sender.setsockopt(IP, socket.IP_MULTICAST_IF, HERE)
            sender.sendto(b"again", (socket.inet_ntoa(GROUP), PORT))
        (gevent.sleep if make is NetsockSocket else time.sleep)(0.05)
        trace.append(outcome(lambda: late.recv(100)))
    return trace


@pytest.mark.usefixtures("stack")
def test_ipv6_sockets_join_ipv4_groups_as_on_the_kernel() -> None:
    assert ipv4_groups_on_ipv6_sockets(NetsockSocket) == on_the_kernel(ipv4_groups_on_ipv6_sockets)
