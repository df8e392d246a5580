"""UDP echo server on a TUN (or TAP) device; also answers ping.

    python -m netsock.samples.udp_echo <tun-device> <local-ipv4-address> <local-port>
        [--tap] [--pcap FILE] [--stats-json FILE]

The device must exist (``ip tuntap add dev tun0 mode tun``). Prints "ready" once listening; on
SIGTERM or SIGINT prints the stack's counters (and writes them to --stats-json) and exits 0.
"""

from __future__ import annotations

import argparse
import sys

import gevent

from ..scheduler import wait_for
from ..tcpip import Error, ErrWouldBlock, FullAddress, WriteOptions
from ..transport.icmp import ICMPv4Protocol
from ..transport.udp import UDPProtocol
from ..waiter import EventMask, WaiterQueue
from .common import build_stack, close, parse_address, report, wait_for_stop_signal


def echo_forever(endpoint, queue: WaiterQueue) -> None:  # noqa: ANN001 - a UDPEndpoint
    """Send every datagram back to where it came from."""
    readable = lambda: bool(endpoint.readiness(EventMask.IN))  # noqa: E731
    while True:
        wait_for(queue, EventMask.IN, readable)
        try:
            datagram = endpoint.read()
        except ErrWouldBlock:
            continue
        except Error:
            continue  # an ICMP error reported to the socket: nothing to echo
        try:
            endpoint.write(datagram.data, WriteOptions(to=datagram.sender))
        except Error as e:
            print(f"udp_echo: cannot answer {datagram.sender}: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netsock.samples.udp_echo", description=__doc__.split("\n")[0])
    parser.add_argument("device", help="existing TUN (or TAP, with --tap) device")
    parser.add_argument("address", help="this stack's IPv4 address, e.g. 192.0.2.2 or 192.0.2.2/24")
    parser.add_argument("port", type=int, help="UDP port to echo on")
    parser.add_argument("--tap", action="store_true", help="the device is a TAP (Ethernet, with ARP)")
    parser.add_argument("--pcap", help="record everything on the link to this pcap file")
    parser.add_argument("--stats-json", help="write the stack's counters here on exit")
    args = parser.parse_args(argv)

    address = parse_address(args.address)
    stack = build_stack(args.device, address, [UDPProtocol, ICMPv4Protocol], tap=args.tap, pcap=args.pcap)
    queue = WaiterQueue()
    endpoint = stack.new_endpoint(UDPProtocol.number, 0x0800, queue)
    endpoint.bind(FullAddress(0, b"", args.port))
    server = gevent.spawn(echo_forever, endpoint, queue)
    print(f"echoing UDP on {address.address}:{args.port} over {args.device}")
    print("ready", flush=True)
    try:
        wait_for_stop_signal()
    finally:
        server.kill()
        endpoint.close()
        report(stack, args.stats_json)
        close(stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
