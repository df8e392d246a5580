"""A short tour: netsock's stack on a TUN device, talking to the Linux kernel (``./dev.sh demo``).

Needs root. Everything happens in a private network namespace that this demo creates and removes:
the kernel's side of the TUN device is 192.0.2.1, netsock (the udp_echo sample) is 192.0.2.2. The
kernel's own ping and UDP sockets talk to netsock; the capture is kept in a temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .link.netns import inside

KERNEL = "192.0.2.1"
NETSOCK = "192.0.2.2"
ECHO_PORT = 7
CLOSED_PORT = 9
DEVICE = "tun0"


def step(text: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}* {text}{plain}", flush=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def start_sample(namespace: str, workdir: Path) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", namespace, sys.executable, "-m", "netsock.samples.udp_echo",
            DEVICE, NETSOCK, str(ECHO_PORT), "--pcap", str(workdir / "demo.pcap"),
            "--stats-json", str(workdir / "stats.json")]
    sample = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=workdir)
    assert sample.stdout is not None
    watchdog = threading.Timer(20, sample.kill)
    watchdog.start()
    try:
        for line in sample.stdout:
            if line.startswith("ready"):
                return sample
    finally:
        watchdog.cancel()
    raise RuntimeError(f"the udp_echo sample did not start (exit code {sample.wait()})")


def stop_sample(sample: subprocess.Popen[str]) -> None:
    sample.send_signal(signal.SIGTERM)
    try:
        sample.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        sample.kill()
        sample.wait()


def print_counters(stats: dict[str, Any], prefix: str = "") -> None:
    for key, value in stats.items():
        if isinstance(value, dict):
            print_counters(value, f"{prefix}{key}.")
        elif value:
            print(f"    {prefix + key:<40} {value}")


def tour(namespace: str, workdir: Path) -> None:
    step(f"Network namespace {namespace}: TUN device {DEVICE}, kernel side {KERNEL}/24")
    ip("netns", "add", namespace)
    ip("-n", namespace, "link", "set", "lo", "up")
    with inside(namespace):  # no IPv6 chatter: the link carries only what the demo sends
        for scope in ("all", "default"):
            Path(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6").write_text("1")
    ip("-n", namespace, "tuntap", "add", "dev", DEVICE, "mode", "tun")
    ip("-n", namespace, "addr", "add", f"{KERNEL}/24", "dev", DEVICE)
    ip("-n", namespace, "link", "set", DEVICE, "up")

    step(f"netsock's udp_echo sample attaches to {DEVICE} as {NETSOCK}, echoing UDP port {ECHO_PORT}")
    sample = start_sample(namespace, workdir)
    try:
        step(f"The kernel pings netsock: ping -c 3 {NETSOCK}")
        ping = subprocess.run(["ip", "netns", "exec", namespace, "ping", "-c", "3", "-i", "0.2", NETSOCK],
                              check=False, capture_output=True, text=True)
        for line in filter(None, ping.stdout.splitlines()):
            print(f"    {line}")

        step(f"A kernel UDP socket sends datagrams to {NETSOCK}:{ECHO_PORT}")
        with inside(namespace):
            echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with echo, closed:
            echo.settimeout(2)
            echo.connect((NETSOCK, ECHO_PORT))
            for message in (b"hello, netsock", b"a userspace TCP/IP stack", b"in Python"):
                echo.send(message)
                print(f"    sent {message.decode()!r:<28} echoed {echo.recv(2048).decode()!r}")

            step(f"And one datagram to closed port {CLOSED_PORT}")
            closed.settimeout(2)
            closed.connect((NETSOCK, CLOSED_PORT))
            closed.send(b"anyone there?")
            try:
                closed.recv(2048)
                print("    unexpected: got a reply")
            except ConnectionRefusedError:
                print("    recv() raised ConnectionRefusedError: netsock answered with ICMP port unreachable")
    finally:
        stop_sample(sample)

    step("netsock's counters (non-zero)")
    print_counters(json.loads((workdir / "stats.json").read_text()))
    step(f"Everything netsock sent and received is in {workdir / 'demo.pcap'}")
    print(f"    open it with Wireshark, or: tshark -r {workdir / 'demo.pcap'}")


def main() -> int:
    if os.geteuid() != 0:
        print("The demo creates a network namespace and a TUN device: run it as root (./dev.sh demo).")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    namespace = f"netsock-demo-{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="netsock-demo-"))
    try:
        tour(namespace, workdir)
    finally:
        # Deleting the namespace deletes the TUN device in it; the sample has already exited.
        subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
    print("\nDone: namespace and device removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
