"""A private network that includes the real kernel: ``Network.bridge`` puts a TAP device on a switch.

The test process runs the network (hosts are netsock stacks in this process); the TAP device and the
kernel's side of it live in the test's namespace. Kernel programs run there through gevent's
subprocess, so that waiting for them lets the network run.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import gevent
from gevent import subprocess

from netsock.adapter import NetsockSocket
from netsock.link.netns import inside
from netsock.privnet import Host, Network

from .nsutil import NetNS

KERNEL = "192.0.2.100"


def serve_once(listener: NetsockSocket, body: bytes) -> None:
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def fetch(host: Host, address: str, port: int, path: str) -> bytes:
    """From ``host``, an HTTP/1.0 GET of a kernel server that may still be starting: the body."""
    with host:
        for _ in range(100):
            client = NetsockSocket()
            client.settimeout(10)
            if client.connect_ex((address, port)) == 0:
                break
            client.close()
            gevent.sleep(0.1)
        with client:
            client.sendall(b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
            reply = b""
            while data := client.recv(65536):
                reply += data
    return reply.split(b"\r\n\r\n", 1)[1]


def test_the_kernel_and_a_private_host_talk_through_a_bridged_tap(netns: NetNS, tmp_path: Path) -> None:
    body = hashlib.sha256(b"bridge").digest() * 32768                      # 1 MiB
    with Network(seed=3) as net:
        lan = net.switch("lan", "192.0.2.0/24")
        server = net.host("server.test", lan)
        with inside(netns.name):
            net.bridge(lan, "tap0", kernel_address=KERNEL, name="kernel.test")
        assert netns.link_stats("tap0")                                      # the device is in the namespace

        # The kernel fetches from the private host ...
        listener = NetsockSocket(stack=server.stack)
        listener.bind(("0.0.0.0", 8000))
        listener.listen()
        serving = server.spawn(serve_once, listener, body)
        curl = subprocess.run(["ip", "netns", "exec", netns.name, "curl", "-s", "-m", "20", "-o",
                               str(tmp_path / "got"), f"http://{server.address}:8000/"], timeout=30)
        assert curl.returncode == 0
        assert (tmp_path / "got").read_bytes() == body
        serving.get(timeout=5)
        listener.close()

        # ... and the private host, by name, from a kernel server.
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "file").write_bytes(body)
        kernel_server = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-m", "http.server",
                                          "8001", "--bind", KERNEL, "--directory", str(tmp_path / "www")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert fetch(server, "kernel.test", 8001, "/file") == body
        finally:
            kernel_server.kill()
            kernel_server.wait()
        counters = net.counters()["switches"]["lan"]["ports"]["tap0"]
        assert counters["rx_packets"] > 0 and counters["tx_packets"] > 0
    assert "tap0" not in netns.ip("link")                                    # removed with its descriptor
