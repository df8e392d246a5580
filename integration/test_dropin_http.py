"""Unmodified standard-library servers under ``python -m netsock run``, answering the kernel's clients
over tun0: ``python -m http.server`` (a 50 MB download), http.server's ThreadingHTTPServer (200
concurrent requests), and socketserver's ThreadingTCPServer and UDPServer with ordinary handler code."""

from __future__ import annotations

import time
from pathlib import Path

from integration.conftest import NETSOCK_ADDRESS
from integration.dropin import NetsockRun, run_kernel_side
from integration.nsutil import NetNS, file_sha256, write_seeded

BIG = 50 * 1024 * 1024
HTTP_PORT = 8000
CONCURRENT = 200
SMALL = b"netsock drop-in\n" * 64

# http.server's own entry point (what -m http.server runs) with a listen backlog for a burst of
# connections. socketserver listens with a backlog of 5: a burst of 200 connects overflows it, and then
# even the Linux kernel's own stack takes minutes to serve an unmodified -m http.server, the refused
# handshakes retrying on an exponential backoff (measured here: 50 concurrent curl requests 14 s,
# 200 more than 60 s).
BURST_SERVER = """
import functools, http.server, sys

class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256

handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[3])
http.server.test(HandlerClass=handler, ServerClass=Server, port=int(sys.argv[2]), bind=sys.argv[1])
"""

TCP_SERVER = f"""
import socketserver

class UpperCase(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.upper())

with socketserver.ThreadingTCPServer(("{NETSOCK_ADDRESS}", 9000), UpperCase) as server:
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
"""

UDP_SERVER = f"""
import socketserver

class UpperCase(socketserver.DatagramRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.read().upper())

with socketserver.UDPServer(("{NETSOCK_ADDRESS}", 9001), UpperCase) as server:
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
"""


def test_http_server_module_serves_a_50mb_file(netns: NetNS, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    big_sha256 = write_seeded(site / "big.bin", 51, BIG)
    server = NetsockRun(netns, tmp_path, ["-m", "http.server", str(HTTP_PORT), "--bind", NETSOCK_ADDRESS,
                                          "--directory", str(site)])
    server.wait_port(NETSOCK_ADDRESS, HTTP_PORT)
    download = tmp_path / "big.download"
    start = time.monotonic()
    netns.run(["curl", "--fail", "--silent", "--show-error", "--output", str(download),
               f"http://{NETSOCK_ADDRESS}:{HTTP_PORT}/big.bin"], timeout=120)
    seconds = time.monotonic() - start
    print(f"\n50 MB from python -m http.server under netsock: {seconds:.2f} s, {BIG / seconds / 1e6:.1f} MB/s")
    assert file_sha256(download) == big_sha256
    assert server.interrupt() == 0, server.output()
    tcp = server.stats()["tcp"]
    assert tcp["passive_connection_openings"] == 2, tcp     # the readiness probe, the download
    assert tcp["established_resets"] == 0, tcp


def test_threading_http_server_answers_200_concurrent_requests(netns: NetNS, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "small.txt").write_bytes(SMALL)
    server = NetsockRun(netns, tmp_path, ["-c", BURST_SERVER, NETSOCK_ADDRESS, str(HTTP_PORT), str(site)])
    server.wait_port(NETSOCK_ADDRESS, HTTP_PORT)
    answers = tmp_path / "answers"
    answers.mkdir()
    # All transfers at once, each on a connection of its own (http.server answers HTTP/1.0 and closes).
    start = time.monotonic()
    done = netns.run(["curl", "--parallel", "--parallel-immediate", "--parallel-max", str(CONCURRENT), "--fail",
                      "--silent", "--show-error", "--no-progress-meter", "--write-out", "%{http_code}\\n",
                      "--output", f"{answers}/#1", f"http://{NETSOCK_ADDRESS}:{HTTP_PORT}/small.txt?[1-{CONCURRENT}]"],
                     check=False, timeout=120)
    print(f"\n{CONCURRENT} concurrent requests to ThreadingHTTPServer under netsock: {time.monotonic() - start:.2f} s")
    assert done.returncode == 0, f"curl exited {done.returncode}\n{done.stderr}\n{server.output()}"
    assert done.stdout.split() == ["200"] * CONCURRENT
    assert sorted(path.name for path in answers.iterdir()) == sorted(str(n) for n in range(1, CONCURRENT + 1))
    assert all(path.read_bytes() == SMALL for path in answers.iterdir())
    assert server.interrupt() == 0, server.output()
    tcp = server.stats()["tcp"]
    assert tcp["passive_connection_openings"] == 1 + CONCURRENT, tcp     # the readiness probe
    assert tcp["established_resets"] == 0, tcp


def test_threading_tcp_server_answers_concurrent_kernel_clients(netns: NetNS, tmp_path: Path) -> None:
    server = NetsockRun(netns, tmp_path, ["-c", TCP_SERVER])
    server.wait_port(NETSOCK_ADDRESS, 9000)
    report = run_kernel_side(netns, "tcp-lines", f"{NETSOCK_ADDRESS}:9000", "--connections", "20", "--lines", "50")
    assert report == {"connections": 20, "answered": 1000}
    assert server.interrupt() == 0, server.output()
    assert server.stats()["tcp"]["passive_connection_openings"] == 1 + 20     # the readiness probe


def test_udp_server_answers_kernel_datagrams(netns: NetNS, tmp_path: Path) -> None:
    server = NetsockRun(netns, tmp_path, ["-c", UDP_SERVER])
    report = run_kernel_side(netns, "udp-lines", f"{NETSOCK_ADDRESS}:9001", "--count", "200")
    assert report["answered"] == 200, (report, server.output())
    assert server.interrupt() == 0, server.output()
    udp = server.stats()["udp"]
    # Every datagram delivered to the server was answered; resent ones may have been delivered too.
    assert 200 <= udp["packets_received"] <= 200 + report["resent"], (udp, report)
    assert udp["packets_sent"] == udp["packets_received"], udp
    assert udp["receive_buffer_errors"] == udp["checksum_errors"] == 0, udp
