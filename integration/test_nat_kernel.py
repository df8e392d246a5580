"""netsock's nat table between the real kernel and private hosts: a netsock router whose outside switch
is bridged to the kernel (a TAP device in the test's namespace) forwards a port to a host inside (DNAT),
and masquerades the inside hosts' connections out (MASQUERADE). The kernel has no route to the inside
subnet, so only translated packets can be answered; and it drops a segment whose checksum the
translation got wrong.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from gevent import subprocess

from netsock.adapter import NetsockSocket
from netsock.link.netns import inside
from netsock.privnet import Network
from netsock.stack.iptables import DNAT, Masquerade, Rule, TProxy
from netsock.tcpip import TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER

from .nsutil import NetNS
from .test_privnet_bridge import fetch, serve_once

KERNEL = "198.51.100.100"
UDP_PROBE = """
import errno, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(5)
sock.connect((sys.argv[1], 53))
sock.send(b"query")
try:
    sock.recv(100)
    print("answered")
except OSError as error:
    print(errno.errorcode.get(error.errno, "timeout"))
"""


def test_the_kernel_reaches_a_forwarded_port_and_sees_masqueraded_hosts(netns: NetNS, tmp_path: Path) -> None:
    body = hashlib.sha256(b"nat").digest() * 16384                          # 512 KiB
    with Network(seed=5) as net:
        lan, wan = net.switch("lan", "192.0.2.0/24"), net.switch("wan", "198.51.100.0/24")
        router = net.router("router.test", lan, wan)
        web = net.host("web.test", lan)
        with inside(netns.name):
            net.bridge(wan, "tap0", kernel_address=KERNEL, name="kernel.test")
        outside = router.addresses[wan]
        table = router.stack.iptables.ipv4_nat
        forward = Rule(DNAT(bytes(map(int, web.address.split("."))), (8000, 8000)), protocol=TCP_PROTOCOL_NUMBER,
                       in_interface="wan", destination_ports=(80, 80))
        table.append("PREROUTING", forward)
        table.append("POSTROUTING", Rule(Masquerade(), out_interface="wan"))

        # The kernel fetches http://<router>/ and gets the inside host's answer.
        listener = NetsockSocket(stack=web.stack)
        listener.bind(("0.0.0.0", 8000))
        listener.listen()
        serving = web.spawn(serve_once, listener, body)
        curl = subprocess.run(["ip", "netns", "exec", netns.name, "curl", "-s", "-m", "20", "-o",
                               str(tmp_path / "got"), f"http://{outside}/"], timeout=30)
        assert curl.returncode == 0
        assert (tmp_path / "got").read_bytes() == body
        serving.get(timeout=5)
        listener.close()
        assert forward.packets == 1

        # A forwarded datagram to a closed port: the inside host's port unreachable, translated back (its
        # quote too, the ICMP checksum summed afresh), reaches the kernel's socket as ECONNREFUSED.
        table.append("PREROUTING", Rule(DNAT(bytes(map(int, web.address.split("."))), (5300, 5300)),
                                        protocol=UDP_PROTOCOL_NUMBER, in_interface="wan", destination_ports=(53, 53)))
        probe = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-c", UDP_PROBE, outside],
                               capture_output=True, text=True, timeout=30)
        assert probe.stdout.strip() == "ECONNREFUSED", probe.stderr

        # The inside host fetches from a kernel server, which sees the router's address.
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "file").write_bytes(body)
        log = tmp_path / "server.log"
        with log.open("wb") as sink:
            kernel_server = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-u", "-m",
                                              "http.server", "8001", "--bind", KERNEL, "--directory",
                                              str(tmp_path / "www")], stdout=sink, stderr=subprocess.STDOUT)
        try:
            assert fetch(web, KERNEL, 8001, "/file") == body
        finally:
            kernel_server.kill()
            kernel_server.wait()
        peers = set(re.findall(r"^(\S+) - - \[.*\"GET /file", log.read_text(), re.MULTILINE))
        assert peers == {outside}


def test_the_kernel_is_answered_by_a_transparent_proxy_in_the_servers_name(netns: NetNS, tmp_path: Path) -> None:
    # curl fetches from an inside address no host has, routed through the netsock router, whose mangle table
    # hands the connection to a transparent proxy there (TPROXY): it accepts in that address's name, and
    # answers from it, what the kernel takes as the server's reply.
    nowhere = "192.0.2.77"
    with Network(seed=6) as net:
        lan, wan = net.switch("lan", "192.0.2.0/24"), net.switch("wan", "198.51.100.0/24")
        router = net.router("router.test", lan, wan)
        with inside(netns.name):
            net.bridge(wan, "tap0", kernel_address=KERNEL, name="kernel.test")
        netns.ip("route", "add", "192.0.2.0/24", "via", router.addresses[wan])
        router.stack.iptables.ipv4_mangle.append("PREROUTING", Rule(TProxy(3128), protocol=TCP_PROTOCOL_NUMBER,
                                                                    in_interface="wan", destination_ports=(80, 80)))
        listener = NetsockSocket(stack=router.stack)
        listener.setsockopt(0, 19, 1)       # IP_TRANSPARENT
        listener.bind(("0.0.0.0", 3128))
        listener.listen()

        def proxy() -> None:
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                body = "proxied for {}:{}".format(*conn.getsockname()).encode()
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        proxying = router.spawn(proxy)
        curl = subprocess.run(["ip", "netns", "exec", netns.name, "curl", "-s", "-m", "20", f"http://{nowhere}/"],
                              capture_output=True, timeout=30)
        assert curl.returncode == 0 and curl.stdout == f"proxied for {nowhere}:80".encode()
        proxying.get(timeout=5)
        listener.close()
