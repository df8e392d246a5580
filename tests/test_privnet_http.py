"""End to end through the pytest plugin: unmodified http.server and requests on hosts of a private
network, through loss and latency, a router, a partition; and nothing outside it is reachable."""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from netsock.adapter import NetsockSocket
from netsock.privnet import Host, Network

FILE_NAME, FILE_SIZE = "download.bin", 20 * 1024 * 1024
PORT = 8000


@pytest.fixture(scope="module")
def webroot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A directory holding a 20 MiB file of deterministic bytes, and the file's SHA-256."""
    root = tmp_path_factory.mktemp("www")
    block = hashlib.sha256(b"netsock").digest() * 2048        # 64 KiB
    digest = hashlib.sha256()
    with open(root / FILE_NAME, "wb") as out:
        for _ in range(FILE_SIZE // len(block)):
            out.write(block)
            digest.update(block)
    return root, digest.hexdigest()


@contextmanager
def serve(host: Host, root: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    """http.server's ThreadingHTTPServer on ``host``, serving ``root`` from a thread, as an
    unmodified program runs it; shut down (its thread joined) afterwards."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    with host:
        httpd = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
        serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="httpd")
        serving.start()
    yield httpd
    httpd.shutdown()
    serving.join()
    httpd.server_close()
    assert not serving.is_alive()


def download(client: Host, name: str) -> tuple[str, float]:
    """GET the file from ``name`` with requests on ``client``: its SHA-256 and the seconds it took."""
    with client:
        start = time.perf_counter()
        reply = requests.get(f"http://{name}:{PORT}/{FILE_NAME}", timeout=30)
        seconds = time.perf_counter() - start
    reply.raise_for_status()
    assert len(reply.content) == FILE_SIZE
    return hashlib.sha256(reply.content).hexdigest(), seconds


def kernel_sockets() -> int:
    """How many of this process's descriptors are kernel sockets."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:[")
        except OSError:
            pass                # the directory's own descriptor, closed by now
    return count


@pytest.mark.netsock(switches={"lan": "192.0.2.0/24"}, hosts={"server.test": "lan", "client.test": "lan"},
                     faults=[("client.test", "server.test", {"loss": 0.1, "latency": 0.030})])
def test_a_download_through_loss_and_latency_arrives_intact(netsock_network: Network,
                                                              webroot: tuple[Path, str]) -> None:
    root, expected = webroot
    with serve(netsock_network.hosts["server.test"], root):
        digest, seconds = download(netsock_network.hosts["client.test"], "server.test")
    print(f"20 MiB through 10% loss and 30 ms latency: {seconds:.2f} s")
    assert digest == expected
    faults = netsock_network.counters()["switches"]["lan"]["faults"]["client.test->server.test"]
    assert faults["dropped_loss"] > 0 and faults["delayed"] > 0


@pytest.mark.netsock(switches={"left": "192.0.2.0/24", "right": "198.51.100.0/24"},
                     routers={"router.test": ["left", "right"]},
                     hosts={"client.test": "left", "server.test": "right"},
                     faults=[("client.test", "router.test", {"loss": 0.1, "latency": 0.030})])
def test_the_same_download_across_a_router(netsock_network: Network, webroot: tuple[Path, str]) -> None:
    root, expected = webroot
    server, client = netsock_network.hosts["server.test"], netsock_network.hosts["client.test"]
    assert (client.address, server.address) == ("192.0.2.2", "198.51.100.2")   # the router has the .1s
    with serve(server, root):
        digest, seconds = download(client, "server.test")
    print(f"20 MiB across a router, 10% loss and 30 ms latency on the first hop: {seconds:.2f} s")
    assert digest == expected
    counters = netsock_network.counters()
    assert counters["hosts"]["router.test"]["ip"]["forwarding"]["packets_forwarded"] > 0
    # Every data segment went through it (as super-segments: forwarded whole, as Linux forwards GSO packets).
    assert counters["switches"]["left"]["ports"]["router.test"]["tx_bytes"] > FILE_SIZE


@pytest.mark.netsock(switches={"lan": "192.0.2.0/24"}, hosts={"server.test": "lan", "client.test": "lan"})
def test_a_partition_times_out_connect_and_recv_and_heal_lets_new_connections_through(
        netsock_network: Network) -> None:
    server, client = netsock_network.hosts["server.test"], netsock_network.hosts["client.test"]
    with server:
        listener = socket.create_server(("0.0.0.0", 7000))

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(16)
            conn.sendall(b"pong")

    def accept_each() -> None:
        while True:
            server.spawn(answer, listener.accept()[0])

    server.spawn(accept_each)
    with client:
        with socket.create_connection(("server.test", 7000), timeout=5) as established:
            netsock_network.partition(client, server)
            established.sendall(b"ping")
            established.settimeout(0.3)
            with pytest.raises(socket.timeout) as recv_timed_out:
                established.recv(16)
        with pytest.raises(socket.timeout) as connect_timed_out:
            socket.create_connection(("server.test", 7000), timeout=0.3)
        netsock_network.heal(client, server)
        with socket.create_connection(("server.test", 7000), timeout=5) as healed:
            healed.sendall(b"ping")
            assert healed.recv(16) == b"pong"
    for timed_out in (recv_timed_out, connect_timed_out):
        assert type(timed_out.value) is TimeoutError and str(timed_out.value) == "timed out"
    assert socket.timeout is TimeoutError
    dropped = netsock_network.counters()["switches"]["lan"]["faults"]
    assert dropped["client.test->server.test"]["dropped_blackhole"] > 0


@pytest.mark.netsock(switches={"lan": "192.0.2.0/24"}, hosts={"client.test": "lan"})
def test_nothing_outside_the_network_is_reachable_and_no_kernel_socket_is_opened(netsock_network: Network) -> None:
    client = netsock_network.hosts["client.test"]
    before = kernel_sockets()
    start = time.perf_counter()
    with client:
        with pytest.raises(OSError) as from_a_host:
            socket.create_connection(("203.0.113.1", 80), timeout=5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            assert isinstance(udp, NetsockSocket)
            with pytest.raises(OSError) as datagram:
                udp.sendto(b"x", ("198.51.100.1", 53))
        with pytest.raises(requests.ConnectionError) as through_requests:
            requests.get("http://203.0.113.1/", timeout=5)
    with pytest.raises(OSError) as from_the_body:
        socket.create_connection(("203.0.113.1", 80), timeout=5)
    seconds = time.perf_counter() - start
    for raised in (from_a_host, datagram, from_the_body):
        assert raised.value.errno == errno.ENETUNREACH
    assert "client.test is a host of a netsock private network" in str(from_a_host.value)
    assert "outside the hosts of netsock's private network" in str(from_the_body.value)
    assert "Network is unreachable" in str(through_requests.value)
    assert seconds < 1.0
    assert kernel_sockets() == before
