"""TCP Fast Open (RFC 7413) between netsock and the Linux kernel over a TUN device, both ways: the first
connection gets a cookie, the second sends its request with its SYN and the server takes it at once;
each side's counters say so (netsock's stats, the kernel's TcpExt TCPFastOpen* in the namespace, where
net.ipv4.tcp_fastopen is 3: client and server). With TCP_FASTOPEN_NO_COOKIE, the first request does.

netsock runs in the test process on the gevent hub (a NetsockSocket on the test's stack); the kernel's end
is a small program run in the namespace.
"""

from __future__ import annotations

import socket
import sys

import gevent
import pytest
from gevent import subprocess as gsubprocess

from integration.conftest import KERNEL_ADDRESS, NETSOCK_ADDRESS
from integration.nsutil import NetNS, finish
from netsock.adapter import NetsockSocket
from netsock.stack import Stack
from netsock.transport.tcp.protocol import FAST_OPEN_CLIENT, FAST_OPEN_SERVER

pytestmark = pytest.mark.integration

PORT = 5001
MSG_FASTOPEN = 0x20000000
TCP_FASTOPEN_NO_COOKIE = 34
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
RESPONSE = b"HTTP/1.0 200 OK\r\n\r\nhello"

# The kernel's end: "serve N" (a Fast Open listener answering N requests, one per connection) or "ask N"
# (N connections, each sending its request with sendto(MSG_FASTOPEN) and printing the answer); with
# "no-cookie", TCP_FASTOPEN_NO_COOKIE on the listener or on each client.
KERNEL_SIDE = r"""
import socket, sys
mode, count, host, port, cookie = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
request, response = b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nhello"
def no_cookie(sock):
    if cookie == "no-cookie":
        sock.setsockopt(socket.IPPROTO_TCP, 34, 1)
if mode == "serve":
    listener = socket.socket()
    no_cookie(listener)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 5)
    listener.bind((host, port))
    listener.listen()
    print("listening", flush=True)
    listener.settimeout(20)
    for _ in range(count):
        conn, _ = listener.accept()
        conn.settimeout(20)
        print(conn.recv(100) == request, flush=True)
        conn.sendall(response)
        conn.close()
else:
    for _ in range(count):
        sock = socket.socket()      # (blocking: without a cookie, sendto waits for the handshake)
        no_cookie(sock)
        sock.sendto(request, socket.MSG_FASTOPEN, (host, port))
        sock.settimeout(20)
        print(sock.recv(100) == response, flush=True)
        sock.close()
"""


def kernel_side(ns: NetNS, mode: str, host: str, count: int = 2, cookie: str = "cookie") -> gsubprocess.Popen:
    return gsubprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", KERNEL_SIDE, mode, str(count),
                              host, str(PORT), cookie], stdout=gsubprocess.PIPE, stderr=gsubprocess.PIPE, text=True)


@pytest.fixture
def fast_open(netns: NetNS, tun_stack: Stack) -> Stack:
    """Client and server Fast Open on in the namespace's kernel and in netsock."""
    netns.run(["sysctl", "-q", "-w", "net.ipv4.tcp_fastopen=3"])
    tun_stack.transport_protocols[socket.IPPROTO_TCP].fast_open = FAST_OPEN_CLIENT | FAST_OPEN_SERVER
    return tun_stack


def test_netsock_sends_its_second_request_with_the_syn_to_a_kernel_server(netns: NetNS, fast_open: Stack) -> None:
    server = kernel_side(netns, "serve", KERNEL_ADDRESS)
    assert server.stdout.readline().strip() == "listening"
    for _ in range(2):
        with NetsockSocket(stack=fast_open) as sock:
            sock.settimeout(20)
            assert sock.sendto(REQUEST, MSG_FASTOPEN, (KERNEL_ADDRESS, PORT)) == len(REQUEST)
            assert sock.recv(100) == RESPONSE
    out, err = finish(server)
    assert out.split() == ["True", "True"], err
    stats = fast_open.stats().tcp
    assert (stats.fast_open_active.value, stats.fast_open_active_fail.value) == (1, 0)
    kernel = netns.snmp("TcpExt", "netstat")
    assert (kernel["TCPFastOpenCookieReqd"], kernel["TCPFastOpenPassive"], kernel["TCPFastOpenPassiveFail"]) == \
        (1, 1, 0)


def netsock_serves(netns: NetNS, stack: Stack, count: int, cookie: str = "cookie") -> None:
    """A netsock Fast Open listener answers ``count`` requests of the kernel's end ("ask", with ``cookie``),
    and each side sees what it should."""
    with NetsockSocket(stack=stack) as listener:
        if cookie == "no-cookie":
            listener.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_NO_COOKIE, 1)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 5)
        listener.bind((NETSOCK_ADDRESS, PORT))
        listener.listen()

        def serve() -> list[bytes]:
            requests = []
            for _ in range(count):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(20)
                    requests.append(conn.recv(100))
                    conn.sendall(RESPONSE)
            return requests

        answering = gevent.spawn(serve)
        out, err = finish(kernel_side(netns, "ask", NETSOCK_ADDRESS, count=count, cookie=cookie))
        assert answering.get(timeout=30) == [REQUEST] * count, err
    assert out.split() == ["True"] * count, err


def test_a_kernel_client_sends_its_second_request_with_the_syn_to_netsock(netns: NetNS, fast_open: Stack) -> None:
    netsock_serves(netns, fast_open, 2)
    stats = fast_open.stats().tcp
    assert (stats.fast_open_cookie_requests.value, stats.fast_open_passive.value,
            stats.fast_open_passive_fail.value) == (1, 1, 0)
    kernel = netns.snmp("TcpExt", "netstat")
    assert (kernel["TCPFastOpenActive"], kernel["TCPFastOpenActiveFail"]) == (1, 0)


def test_without_cookies_the_first_request_rides_on_its_syn_both_ways(netns: NetNS, fast_open: Stack) -> None:
    """TCP_FASTOPEN_NO_COOKIE at both ends: the data goes with the very first SYN, which carries no option."""
    server = kernel_side(netns, "serve", KERNEL_ADDRESS, count=1, cookie="no-cookie")
    assert server.stdout.readline().strip() == "listening"
    with NetsockSocket(stack=fast_open) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_NO_COOKIE, 1)
        sock.settimeout(20)
        assert sock.sendto(REQUEST, MSG_FASTOPEN, (KERNEL_ADDRESS, PORT)) == len(REQUEST)
        assert sock.recv(100) == RESPONSE
    out, err = finish(server)
    assert out.split() == ["True"], err
    assert netns.snmp("TcpExt", "netstat")["TCPFastOpenPassive"] == 1

    netsock_serves(netns, fast_open, 1, "no-cookie")
    stats = fast_open.stats().tcp
    assert (stats.fast_open_active.value, stats.fast_open_passive.value, stats.fast_open_cookie_requests.value) == \
        (1, 1, 0)
    assert netns.snmp("TcpExt", "netstat")["TCPFastOpenActive"] == 1
