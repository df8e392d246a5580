"""The Quick-start demo (``./dev.sh demo``): unmodified ``http.server`` served by netsock, fetched by
the kernel's ``curl`` and by ``requests`` running under netsock.

As root, everything happens in a private network namespace that the demo creates and removes:

    kernel curl ──tun0──► netsock run -m http.server        (192.0.2.2; kernel side 192.0.2.1)
    netsock run requests ──tun1──► kernel (forwards) ──tun0──► the same server
                          (198.51.100.2; kernel side 198.51.100.1)

Without root or /dev/net/tun it runs the same two programs in this process, on two hosts of a
private network (``netsock.Network``: two stacks joined by an in-memory switch), and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SERVER, SERVER_HOST_SIDE = "192.0.2.2", "192.0.2.1"
CLIENT, CLIENT_HOST_SIDE = "198.51.100.2", "198.51.100.1"
PORT = 8000
FILE_NAME, FILE_SIZE = "netsock-demo.bin", 20 * 1024 * 1024

# Run under netsock by the demo: requests, fetching the demo's file, printing what it got as JSON.
CLIENT_PROGRAM = """
import hashlib, json, sys, time
import requests
start = time.perf_counter()
reply = requests.get(sys.argv[1], timeout=30)
elapsed = time.perf_counter() - start
print(json.dumps({"status": reply.status_code, "bytes": len(reply.content),
                  "sha256": hashlib.sha256(reply.content).hexdigest(), "seconds": elapsed}))
"""


def step(text: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}* {text}{plain}", flush=True)


def write_file(directory: Path) -> str:
    """The file the server serves: deterministic bytes; returns its SHA-256."""
    block = hashlib.sha256(b"netsock").digest() * 2048        # 64 KiB
    digest = hashlib.sha256()
    with open(directory / FILE_NAME, "wb") as out:
        for _ in range(FILE_SIZE // len(block)):
            out.write(block)
            digest.update(block)
    return digest.hexdigest()


def mib_per_second(size: int, seconds: float) -> str:
    return f"{size / seconds / 2**20:.1f} MiB/s" if seconds > 0 else "-"


def print_counters(stats: dict[str, Any], names: tuple[str, ...]) -> None:
    def walk(tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif value and (prefix + key).startswith(names):
                print(f"    {prefix + key:<44} {value}")
    walk(stats, "")


COUNTERS = ("ip.packets_received", "ip.packets_sent", "ip.packets_delivered", "tcp.active_connection_openings",
            "tcp.passive_connection_openings", "tcp.valid_segments_received", "tcp.segments_sent",
            "tcp.retransmits", "tcp.fast_retransmit", "tcp.established_resets", "tcp.resets",
            "dropped_packets", "malformed_rcvd_packets")


# --- as root: a namespace, two TUN devices, the kernel between them ---------------------------------------

class Namespace:
    def __init__(self, name: str) -> None:
        self.name = name
        self.processes: list[subprocess.Popen[str]] = []

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=check, capture_output=True, text=True)

    def start(self, *argv: str, **kwargs: Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], text=True, **kwargs)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


def netsock_run(device: str, address: str, host_address: str, *rest: str) -> list[str]:
    return [sys.executable, "-m", "netsock", "run", "--tun", device, "--address", address,
            "--host-address", host_address, *rest]


def wait_for_server(ns: Namespace, server: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        if ns.run("curl", "-s", "-o", "/dev/null", "-m", "1", f"http://{SERVER}:{PORT}/", check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("the server did not answer within 20 s")


def tour_on_tun(workdir: Path) -> None:
    webroot = workdir / "www"
    webroot.mkdir()
    expected = write_file(webroot)
    ns = Namespace(f"netsock-demo-{os.getpid()}")
    step(f"Network namespace {ns.name}: the kernel forwards between two TUN devices that netsock creates")
    subprocess.run(["ip", "netns", "add", ns.name], check=True)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        ns.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward; for scope in all default; do "
               "echo 1 > /proc/sys/net/ipv6/conf/$scope/disable_ipv6; done")     # no IPv6 chatter

        step(f"Unmodified http.server under netsock on tun0 as {SERVER}:{PORT} "
             f"(netsock run ... -- -m http.server {PORT})")
        server = ns.start(*netsock_run("tun0", f"{SERVER}/24", f"{SERVER_HOST_SIDE}/24",
                                       "--pcap", str(workdir / "server.pcap"),
                                       "--stats-json", str(workdir / "server.json"),
                                       "--", "-m", "http.server", str(PORT), "--bind", SERVER,
                                       "--directory", str(webroot)),
                          stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "w"))
        wait_for_server(ns, server)
        url = f"http://{SERVER}:{PORT}/{FILE_NAME}"

        step(f"The kernel's curl downloads {FILE_SIZE // 2**20} MiB from netsock: curl {url}")
        curl = ns.run("curl", "-s", "-o", str(workdir / "curl.bin"),
                      "-w", "%{http_code} %{size_download} %{time_total}", url)
        status, size, seconds = curl.stdout.split()
        digest = hashlib.sha256((workdir / "curl.bin").read_bytes()).hexdigest()
        verdict = "matches" if digest == expected else "DIFFERS"
        print(f"    HTTP {status}, {int(size):,} bytes in {float(seconds):.2f} s "
              f"({mib_per_second(int(size), float(seconds))}), SHA-256 {verdict}")

        step(f"requests, under netsock on tun1 as {CLIENT}, fetches the same file through the kernel's routing")
        client = ns.run(*netsock_run("tun1", f"{CLIENT}/24", f"{CLIENT_HOST_SIDE}/24", "--gateway", CLIENT_HOST_SIDE,
                                     "--stats-json", str(workdir / "client.json"), "--", "-c", CLIENT_PROGRAM, url))
        fetched = json.loads(client.stdout)
        print(f"    HTTP {fetched['status']}, {fetched['bytes']:,} bytes in {fetched['seconds']:.2f} s "
              f"({mib_per_second(fetched['bytes'], fetched['seconds'])}), "
              f"SHA-256 {'matches' if fetched['sha256'] == expected else 'DIFFERS'}")

        server.send_signal(signal.SIGINT)       # http.server's own clean exit (KeyboardInterrupt)
        server.wait(timeout=10)
        step("The server's netsock counters (selected, non-zero)")
        print_counters(json.loads((workdir / "server.json").read_text()), COUNTERS)
        step("The client's netsock counters (selected, non-zero)")
        print_counters(json.loads((workdir / "client.json").read_text()), COUNTERS)
        step(f"Everything the server's stack sent and received is in {workdir / 'server.pcap'}")
        print(f"    tshark -r {workdir / 'server.pcap'} | head")
    finally:
        ns.close()      # deleting the namespace deletes anything netsock run left in it
    print("\nDone: namespace and devices removed.")


# --- without root: the same programs over an in-memory wire between two stacks -------------------------

def tour_in_memory(workdir: Path) -> None:
    import netsock
    netsock.patch_all()

    import http.server
    import threading

    import requests

    webroot = workdir / "www"
    webroot.mkdir()
    expected = write_file(webroot)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(webroot), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    step("No root or no /dev/net/tun: a private network inside this process (netsock.Network), "
         "two hosts on one switch")
    with netsock.Network(seed=1) as net:
        lan = net.switch("lan", "192.0.2.0/24")
        server = net.host("server.test", lan, address=SERVER)
        client = net.host("client.test", lan)
        step(f"Unmodified http.server (ThreadingHTTPServer) on server.test ({SERVER}:{PORT})")
        with server:
            httpd = http.server.ThreadingHTTPServer((SERVER, PORT), Handler)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://server.test:{PORT}/{FILE_NAME}"
        step(f"requests on client.test ({client.address}) downloads {FILE_SIZE // 2**20} MiB: GET {url}")
        with client:
            start = time.perf_counter()
            reply = requests.get(url, timeout=30)
            seconds = time.perf_counter() - start
        digest = hashlib.sha256(reply.content).hexdigest()
        print(f"    HTTP {reply.status_code}, {len(reply.content):,} bytes in {seconds:.2f} s "
              f"({mib_per_second(len(reply.content), seconds)}), "
              f"SHA-256 {'matches' if digest == expected else 'DIFFERS'}")
        httpd.shutdown()
        httpd.server_close()
        for name, host in (("server.test", server), ("client.test", client)):
            step(f"{name}'s counters (selected, non-zero)")
            print_counters(host.counters(), COUNTERS)
        step(f"Every frame on the switch is in {net.pcap(workdir / 'network.pcap')}")
    print("\nDone (in-memory; run as root for the TUN version with the kernel's curl).")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="netsock-demo-"))
    if os.geteuid() == 0 and os.path.exists("/dev/net/tun"):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        tour_on_tun(workdir)
    else:
        tour_in_memory(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
