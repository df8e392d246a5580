"""The TCP samples on a TUN device against the Linux kernel's TCP: 100 MB both ways with every byte
checked, refused connections both ways, 1,000 concurrent connections, a SYN flood, keepalive."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from integration.conftest import ECHO_PORT, KERNEL_ADDRESS, KERNEL_CIDR, NETSOCK_ADDRESS
from integration.nsutil import ConnectSample, EchoSample, NetNS, PeerProcess, file_sha256, run_peer, write_seeded

ECHO = f"{NETSOCK_ADDRESS}:{ECHO_PORT}"
SERVER = f"{KERNEL_ADDRESS}:5001"       # a kernel server for the netsock client
CLOSED_PORT = 9
FLOOD_SOURCE = "192.0.2.99"             # nobody: SYN-ACKs sent there are dropped by the kernel
BULK = 100 * 1024 * 1024


@pytest.fixture
def tcp_echo(netns: NetNS, tmp_path: Path) -> EchoSample:
    """tun_tcp_echo on tun0 (192.0.2.2 port 7); the kernel side of tun0 is 192.0.2.1/24."""
    netns.add_tun("tun0", KERNEL_CIDR)
    sample = EchoSample(netns, tmp_path, sample="tun_tcp_echo")
    sample.wait_ready()
    return sample


def test_kernel_client_gets_100mb_back_from_the_echo(netns: NetNS, tcp_echo: EchoSample) -> None:
    result = run_peer(netns, "tcp-echo", ECHO, "--bytes", str(BULK), "--seed", "1", timeout=180)
    assert result["ok"] == 1, result
    stats = tcp_echo.stop()
    assert stats["tcp"]["passive_connection_openings"] == 1
    assert stats["tcp"]["checksum_errors"] == stats["tcp"]["invalid_segments_received"] == 0


def test_netsock_client_sends_and_receives_100mb(netns: NetNS, tmp_path: Path) -> None:
    netns.add_tun("tun0", KERNEL_CIDR)
    upload = tmp_path / "upload.bin"
    upload_sha256 = write_seeded(upload, 2, BULK)
    server = PeerProcess(netns, "tcp-serve", SERVER, "--send", str(BULK), "--seed", "3")
    server.wait_line("listening")
    client = ConnectSample(netns, tmp_path, SERVER, stdin=upload)
    assert client.wait(timeout=180) == 0, client.stderr()
    result = server.result(timeout=30)
    assert result["received"] == BULK and result["received_sha256"] == upload_sha256, result
    assert client.stdout_path.stat().st_size == BULK
    assert file_sha256(client.stdout_path) == result["sent_sha256"]
    assert client.stats()["tcp"]["active_connection_openings"] == 1


def test_closed_netsock_port_refuses_the_kernel(netns: NetNS, tcp_echo: EchoSample) -> None:
    assert run_peer(netns, "tcp-refused", f"{NETSOCK_ADDRESS}:{CLOSED_PORT}")["outcome"] == "ECONNREFUSED"
    stats = tcp_echo.stop()
    assert stats["tcp"]["resets_sent"] == 1
    assert stats["tcp"]["passive_connection_openings"] == 0


def test_closed_kernel_port_refuses_netsock(netns: NetNS, tmp_path: Path) -> None:
    netns.add_tun("tun0", KERNEL_CIDR)
    client = ConnectSample(netns, tmp_path, f"{KERNEL_ADDRESS}:{CLOSED_PORT}", stdin=None)
    assert client.wait(timeout=20) == 1
    assert f"connection to {KERNEL_ADDRESS}:{CLOSED_PORT} failed: connection was refused (ECONNREFUSED)" \
        in client.stderr()
    assert client.stdout_path.read_bytes() == b""
    assert client.stats()["tcp"]["failed_connection_attempts"] == 1


def test_1000_concurrent_connections_through_the_echo(netns: NetNS, tcp_echo: EchoSample) -> None:
    result = run_peer(netns, "tcp-many", ECHO, "--connections", "1000", "--bytes", "4096", "--seed", "5",
                      timeout=180)
    assert result["completed"] == 1000, result
    stats = tcp_echo.stop()
    assert stats["tcp"]["passive_connection_openings"] == 1000
    assert stats["tcp"]["established_resets"] == 0


def test_syn_flood_does_not_lock_out_a_legitimate_client(netns: NetNS, tcp_echo: EchoSample) -> None:
    # A classic SYN flood: spoofed sources that never complete (or reset) a handshake, so the half-open
    # queue stays full and the listener answers with SYN cookies. Rate-limited to well within what a
    # Python stack absorbs on a slow machine (hping3 at 100 µs intervals offers ~7,000 SYN/s; the backlog
    # overflows within 0.1 s; at 20 µs, ~20,000/s, a machine with little cache falls behind): unlimited,
    # hping3 --flood offers ~330,000/s, the TUN device's queue drops ~90% of all traffic to netsock, the
    # legitimate client's packets included, before netsock sees any of it.
    flood = netns.popen(["hping3", "-S", "-i", "u100", "-a", FLOOD_SOURCE, "-p", str(ECHO_PORT), NETSOCK_ADDRESS],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2)       # the listener is swamped by now
        if flood.poll() is not None:
            pytest.fail(f"hping3 exited {flood.returncode}: {flood.communicate()[1]!r}")
        result = run_peer(netns, "tcp-echo", ECHO, "--bytes", "65536", "--connections", "3", "--seed", "6",
                          timeout=120)
        assert flood.poll() is None, "the flood ended before the legitimate exchanges did"
    finally:
        flood.terminate()
        flood.wait(10)
    assert result["ok"] == 3, result
    stats = tcp_echo.stop()["tcp"]
    assert stats["listen_overflow_syn_cookie_sent"] > 1000, stats
    assert stats["listen_overflow_syn_cookie_rcvd"] >= 1, stats   # a legitimate handshake completed by cookie
    assert stats["passive_connection_openings"] == 3, stats


def test_keepalive_detects_a_vanished_peer(netns: NetNS, tmp_path: Path) -> None:
    idle, interval, count = 2.0, 1.0, 3
    netns.add_tun("tun0", KERNEL_CIDR)
    server = PeerProcess(netns, "tcp-serve", SERVER, "--no-fin")    # an idle, open connection
    server.wait_line("listening")
    client = ConnectSample(netns, tmp_path, SERVER, stdin=None,
                           options=["--keepalive", f"{idle},{interval},{count}"])
    client.wait_connected()
    connected = time.monotonic()
    server.wait_line("accepted")
    # The kernel side vanishes: nothing it is sent arrives, nothing leaves it.
    netns.run(["iptables", "-A", "INPUT", "-i", "tun0", "-j", "DROP"])
    netns.run(["iptables", "-A", "OUTPUT", "-o", "tun0", "-j", "DROP"])
    vanished = time.monotonic()
    assert vanished - connected < idle, "the peer vanished only after the first probe: timing not tested"
    assert client.wait(timeout=idle + interval * count + 10) == 1
    elapsed = time.monotonic() - connected
    assert f"connection to {SERVER} failed: operation timed out (ETIMEDOUT)" in client.stderr(), client.stderr()
    # Probes after idle seconds, then every interval; the connection ends when count went unanswered.
    expected = idle + interval * count
    assert expected - 0.5 <= elapsed <= expected + 2.0, f"keepalive gave up after {elapsed:.2f}s, not {expected}s"
    assert client.stats()["tcp"]["established_resets"] == 1     # the abort's RST (into the void)
