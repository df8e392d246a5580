"""TCP MD5 signatures (TCP_MD5SIG, RFC 2385) between netsock and the Linux kernel over a TUN device: the
kernel checks every segment netsock signs and netsock every one the kernel signs, with netsock connecting
and with the kernel connecting, the link's offloads on (a signed connection sends no super-segments: each
segment carries its own signature); with different keys the handshake fails on both sides.

netsock runs in the test process on the gevent hub (a NetsockSocket on the test's stack); the kernel's end
is a small program run in the namespace.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import sys

import gevent
import pytest
from gevent import subprocess as gsubprocess

from integration.conftest import KERNEL_ADDRESS, NETSOCK_ADDRESS
from integration.nsutil import NetNS, finish
from netsock.adapter import NetsockSocket
from netsock.stack import Stack

pytestmark = pytest.mark.integration

PORT = 5001
SIZE = 1 << 20
TCP_MD5SIG = 14

# The kernel's end: "serve KEY PEER" (accept one connection, read it to EOF, answer the SHA-256 of what came;
# "reset" if it was reset instead), "send KEY PEER" (connect, send SIZE seeded bytes, shut down, print the
# answer) or "reset KEY PEER" (connect, send a little, close with a reset); with TCP_MD5SIG set for
# PEER. A server that gets no connection within 5 s prints "no connection"; a client that gets none within 3 s
# fails (TimeoutError).
KERNEL_SIDE = r"""
import hashlib, socket, struct, sys
mode, key, peer, host, port, size = sys.argv[1], sys.argv[2].encode(), sys.argv[3], sys.argv[4], int(sys.argv[5]), \
    int(sys.argv[6])
sockaddr = struct.pack("=H", socket.AF_INET) + bytes(2) + socket.inet_aton(peer)
md5sig = sockaddr.ljust(128, b"\0") + struct.pack("=BBHi", 0, 0, len(key), 0) + key.ljust(80, b"\0")
sock = socket.socket()
sock.setsockopt(socket.IPPROTO_TCP, 14, md5sig)
if mode == "serve":
    sock.bind((host, port))
    sock.listen()
    print("listening", flush=True)
    sock.settimeout(5)
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        print("no connection", flush=True)
        sys.exit(0)
    conn.settimeout(30)
    digest = hashlib.sha256()
    try:
        while chunk := conn.recv(1 << 16):
            digest.update(chunk)
    except ConnectionResetError:
        print("reset", flush=True)      # (only a signed reset gets this far)
        sys.exit(0)
    conn.sendall(digest.hexdigest().encode())
    conn.close()
    print("served", flush=True)
else:
    sock.settimeout(3)
    sock.connect((host, port))
    sock.settimeout(30)
    if mode == "reset":
        sock.sendall(b"then a reset")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        sys.exit(0)
    sock.sendall(hashlib.sha256(b"seed").digest() * (size // 32))
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := sock.recv(100):
        answer += chunk
    print(answer.decode(), flush=True)
"""


def kernel_side(ns: NetNS, mode: str, key: str) -> tuple[str, str]:
    """Run the kernel's end to completion, the hub running meanwhile (gevent's subprocess): (its stdout,
    its stderr)."""
    argv = [sys.executable, "-c", KERNEL_SIDE, mode, key, NETSOCK_ADDRESS,
            KERNEL_ADDRESS if mode == "serve" else NETSOCK_ADDRESS, str(PORT), str(SIZE)]
    proc = gsubprocess.Popen(["ip", "netns", "exec", ns.name, *argv], stdout=gsubprocess.PIPE,
                             stderr=gsubprocess.PIPE, text=True)
    return finish(proc)


def md5sig(address: str, key: bytes) -> bytes:
    sockaddr = struct.pack("=H", socket.AF_INET) + bytes(2) + socket.inet_aton(address)
    return sockaddr.ljust(128, b"\0") + struct.pack("=BBHi", 0, 0, len(key), 0) + key.ljust(80, b"\0")


def stream() -> bytes:
    return hashlib.sha256(b"seed").digest() * (SIZE // 32)


def test_netsock_connects_to_a_kernel_server_with_the_same_key(netns: NetNS, tun_stack: Stack) -> None:
    server = gevent.spawn(kernel_side, netns, "serve", "bgp-session")
    with NetsockSocket(stack=tun_stack) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(KERNEL_ADDRESS, b"bgp-session"))
        sock.settimeout(20)
        for _ in range(50):     # the kernel's end starts listening within a second or so
            if sock.connect_ex((KERNEL_ADDRESS, PORT)) == 0:
                break
            gevent.sleep(0.1)
        sock.sendall(stream())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(100):
            answer += chunk
    out, err = server.get(timeout=60)
    assert answer.decode() == hashlib.sha256(stream()).hexdigest(), err
    assert "served" in out
    tcp = tun_stack.stats().tcp
    assert (tcp.md5_failure.value, tcp.md5_not_found.value, tcp.md5_unexpected.value) == (0, 0, 0)
    assert tun_stack.nics[1].link.stats.tx_super_segments.value == 0


def test_a_kernel_client_connects_to_netsock_with_the_same_key(netns: NetNS, tun_stack: Stack) -> None:
    with NetsockSocket(stack=tun_stack) as listener:
        listener.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(KERNEL_ADDRESS, b"bgp-session"))
        listener.bind((NETSOCK_ADDRESS, PORT))
        listener.listen()

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(20)
                digest = hashlib.sha256()
                while chunk := conn.recv(1 << 16):
                    digest.update(chunk)
                conn.sendall(digest.hexdigest().encode())

        server = gevent.spawn(serve)
        out, err = kernel_side(netns, "send", "bgp-session")
        server.get(timeout=30)
    assert out.strip() == hashlib.sha256(stream()).hexdigest(), err
    tcp = tun_stack.stats().tcp
    assert (tcp.md5_failure.value, tcp.md5_not_found.value, tcp.md5_unexpected.value) == (0, 0, 0)


def test_different_keys_fail_the_handshake_both_ways(netns: NetNS, tun_stack: Stack) -> None:
    server = gevent.spawn(kernel_side, netns, "serve", "one key")
    with NetsockSocket(stack=tun_stack) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(KERNEL_ADDRESS, b"another key"))
        sock.settimeout(3)
        gevent.sleep(1)
        with pytest.raises(TimeoutError):
            sock.connect((KERNEL_ADDRESS, PORT))
    out, _ = server.get(timeout=60)
    assert "no connection" in out        # the kernel dropped every SYN it could not verify

    with NetsockSocket(stack=tun_stack) as listener:
        listener.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(KERNEL_ADDRESS, b"one key"))
        listener.bind((NETSOCK_ADDRESS, PORT))
        listener.listen()
        out, err = kernel_side(netns, "send", "another key")
    assert "TimeoutError" in err or "timed out" in err
    assert tun_stack.stats().tcp.md5_failure.value >= 2     # netsock dropped the kernel's SYNs


def test_resets_are_signed_and_heard_both_ways(netns: NetNS, tun_stack: Stack) -> None:
    """A connection closed with SO_LINGER 0 ends with a reset, which the other side only heeds if signed:
    netsock's reaches the kernel's reader, the kernel's netsock's."""
    server = gevent.spawn(kernel_side, netns, "serve", "bgp-session")
    with NetsockSocket(stack=tun_stack) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(KERNEL_ADDRESS, b"bgp-session"))
        sock.settimeout(20)
        for _ in range(50):
            if sock.connect_ex((KERNEL_ADDRESS, PORT)) == 0:
                break
            gevent.sleep(0.1)
        sock.sendall(b"then a reset")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    out, err = server.get(timeout=60)
    assert "reset" in out, (out, err)

    with NetsockSocket(stack=tun_stack) as listener:
        listener.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(KERNEL_ADDRESS, b"bgp-session"))
        listener.bind((NETSOCK_ADDRESS, PORT))
        listener.listen()
        client = gevent.spawn(kernel_side, netns, "reset", "bgp-session")
        listener.settimeout(10)
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            raise AssertionError(f"no connection from the kernel: {client.get(timeout=30)} {tun_stack.stats().tcp}") \
                from None
        with conn:
            conn.settimeout(10)
            received = b""
            with pytest.raises(ConnectionResetError):
                while chunk := conn.recv(100):
                    received += chunk
        client.get(timeout=30)
    assert received == b"then a reset"
    tcp = tun_stack.stats().tcp
    assert (tcp.md5_failure.value, tcp.md5_not_found.value, tcp.md5_unexpected.value) == (0, 0, 0)
