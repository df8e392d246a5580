"""netsock sending to the Linux kernel over a path that reorders: RACK (RFC 8985) against RFC 6675's count of
three SACKed segments, with the kernel as the receiver whose SACKs and D-SACKs drive both.

netsock's own fault link holds back some of the packets it writes to tun0 (tc netem does not exist here), so
the kernel receives them late, after later ones: it SACKs around the gap, and reports any segment that arrives
twice (a needless retransmission) with a D-SACK. With RACK, netsock waits a quarter of the round trip before
calling a hole lost, and longer once D-SACKs show it was wrong; with RFC 6675 alone every overtaken segment is
resent, and its recovery undone when the kernel's next ACK echoes the timestamp of the original (RFC 3522's
detection). Every byte arrives, checked by SHA-256 at the kernel's end.

netsock runs in the test process on the gevent hub (a NetsockSocket on the test's stack); the kernel's end
is a small program run in the namespace.
"""

from __future__ import annotations

import hashlib
import socket
import sys

import pytest
from gevent import subprocess as gsubprocess

from integration.conftest import KERNEL_ADDRESS
from integration.nsutil import NetNS
from netsock.adapter import NetsockSocket
from netsock.link.fault import FaultConfig
from netsock.stack import Stack
from netsock.transport.tcp import TCPProtocol

pytestmark = pytest.mark.integration

PORT = 5001
SIZE = 8 << 20
# A 10 ms path on which one packet in 50 is held 2 ms past the others: the kernel sees it arrive after
# several later ones.
TUN_FAULTS = FaultConfig(delay=0.01, reorder=0.02, reorder_hold=0.002)

# The kernel's end: accept one connection, read it to EOF, answer with the SHA-256 of what came.
KERNEL_SERVER = r"""
import hashlib, socket, sys
sock = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
sock.settimeout(20)
conn, _ = sock.accept()
conn.settimeout(60)
digest = hashlib.sha256()
while chunk := conn.recv(1 << 16):
    digest.update(chunk)
conn.sendall(digest.hexdigest().encode())
conn.close()
"""


def stream() -> bytes:
    return hashlib.sha256(b"reordered").digest() * (SIZE // 32)


COUNTERS = ("retransmits", "sack_recovery", "timeouts", "dsacks_received", "spurious_recovery")


def send_to_kernel(netns: NetNS, tun_stack: Stack) -> dict[str, int]:
    """SIZE bytes from netsock to the kernel's server: what the transfer added to the stack's TCP counters
    (and the packets the fault link held back, as "reordered")."""
    tcp, faults = tun_stack.stats().tcp, tun_stack.nics[1].link.stats.outbound
    before = {name: getattr(tcp, name).value for name in COUNTERS} | {"reordered": faults.reordered.value}
    server = gsubprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-c", KERNEL_SERVER,
                                KERNEL_ADDRESS, str(PORT)], stdout=gsubprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        with NetsockSocket(stack=tun_stack) as sock:
            sock.settimeout(60)
            sock.connect((KERNEL_ADDRESS, PORT))
            sock.sendall(stream())
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(100):
                answer += chunk
        assert answer.decode() == hashlib.sha256(stream()).hexdigest()
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()       # (by PID: the one this test started)
            server.wait()
    after = {name: getattr(tcp, name).value for name in COUNTERS} | {"reordered": faults.reordered.value}
    return {name: after[name] - before[name] for name in after}


def test_rack_against_rfc6675_with_the_kernel_as_receiver(netns: NetNS, tun_stack: Stack) -> None:
    rack = send_to_kernel(netns, tun_stack)
    tun_stack.transport_protocols[TCPProtocol.number].rack_loss_detection = False
    rfc6675 = send_to_kernel(netns, tun_stack)
    for run in (rack, rfc6675):
        assert run["reordered"] > 10 and run["timeouts"] == 0, (rack, rfc6675)
    # RFC 6675 resends what three segments overtook; the kernel's next ACK echoes the original's timestamp
    # and its D-SACK reports the copy: netsock takes the window reduction back. RACK waits for its
    # allowance, widened by such D-SACKs.
    assert rfc6675["sack_recovery"] > 5 and rfc6675["dsacks_received"] > 5, rfc6675
    assert rfc6675["spurious_recovery"] > rfc6675["sack_recovery"] / 2, rfc6675
    assert rack["retransmits"] < rfc6675["retransmits"] / 2, (rack, rfc6675)
