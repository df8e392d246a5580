"""TCP echo server on a TUN (or TAP) device; also answers ping.

    python -m netsock.samples.tun_tcp_echo <tun-device> <local-address> <local-port>
        [--address ADDR[/PREFIX]]... [--tap] [--pcap FILE] [--stats-json FILE] [--fault SPEC] [--backlog N]

Accepts connections forever and serves each in a greenlet of its own: every byte received is sent
back, and once the peer has closed its sending side and everything has been echoed, the connection
is closed. Addresses are IPv4 or IPv6 (as for udp_echo); it listens on the port in each family it
has an address of. The device must exist (``ip tuntap add dev tun0 mode tun``). Prints "ready" once
listening; on SIGTERM or SIGINT prints the stack's counters (and writes them to --stats-json) and
exits 0. ``--fault loss=0.05,delay=0.05,...`` injects faults into both directions of the link
(see ``netsock.link.fault``).
"""

from __future__ import annotations

import argparse
import sys

from gevent.pool import Group

from ..scheduler import blocking
from ..tcpip import Error, FullAddress
from ..transport.icmp import ICMPv4Protocol, ICMPv6Protocol
from ..transport.tcp import TCPEndpoint, TCPProtocol
from ..waiter import EventMask, WaiterQueue
from .common import (add_address_option, build_stack, close, host_port, local_addresses, network_protocols,
                     parse_fault, report, wait_for_stop_signal, wait_for_unique_addresses)

READ_SIZE = 256 * 1024


def echo(endpoint: TCPEndpoint, queue: WaiterQueue) -> None:
    """Echo one connection until the peer's EOF, then close it (gracefully: FIN after the data)."""
    # A failed connection is readable and writable (the error is then raised by read or write).
    try:
        while True:
            data = blocking(endpoint, queue, EventMask.IN, lambda: endpoint.read(READ_SIZE))
            if not data:
                break
            while data:     # bytes, not a memoryview: the send buffer keeps bytes as they are, copies views
                data = data[blocking(endpoint, queue, EventMask.OUT, lambda: endpoint.write(data)):]
    except Error:
        pass  # reset or timed out: nothing left to echo to
    finally:
        endpoint.close()


def accept_forever(listener: TCPEndpoint, queue: WaiterQueue, connections: Group) -> None:
    while True:
        endpoint, endpoint_queue = blocking(listener, queue, EventMask.IN, listener.accept)
        connections.spawn(echo, endpoint, endpoint_queue)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netsock.samples.tun_tcp_echo", description=__doc__.split("\n")[0])
    parser.add_argument("device", help="existing TUN (or TAP, with --tap) device")
    parser.add_argument("address", help="this stack's address, IPv4 or IPv6, e.g. 192.0.2.2, 192.0.2.2/24 or "
                        "2001:db8::2/64")
    parser.add_argument("port", type=int, help="TCP port to listen on")
    add_address_option(parser)
    parser.add_argument("--tap", action="store_true", help="the device is a TAP (Ethernet, with ARP)")
    parser.add_argument("--pcap", help="record everything on the link to this pcap file")
    parser.add_argument("--stats-json", help="write the stack's counters here on exit")
    parser.add_argument("--fault", type=parse_fault, help="faults to inject in both directions, e.g. "
                        "loss=0.05,delay=0.05,jitter=0.01,reorder=0.02,duplicate=0.01,corrupt=0.01,seed=1")
    parser.add_argument("--backlog", type=int, default=1024, help="listen backlog (default 1024)")
    args = parser.parse_args(argv)

    addresses = local_addresses(args)
    stack = build_stack(args.device, addresses, [TCPProtocol, ICMPv4Protocol, ICMPv6Protocol], tap=args.tap,
                        pcap=args.pcap, fault=args.fault)
    wait_for_unique_addresses(stack, "tun_tcp_echo")
    listeners: list[TCPEndpoint] = []
    connections = Group()
    servers = Group()
    try:
        for net_proto in network_protocols(a.address for a in addresses):
            queue = WaiterQueue()
            listener = stack.new_endpoint(TCPProtocol.number, net_proto, queue)
            listeners.append(listener)
            listener.bind(FullAddress(0, b"", args.port))
            listener.listen(args.backlog)
            servers.spawn(accept_forever, listener, queue, connections)
        print(f"echoing TCP on {', '.join(host_port(a.address, args.port) for a in addresses)} over {args.device}")
        print("ready", flush=True)
        wait_for_stop_signal()
    finally:
        servers.kill()
        connections.kill()
        for listener in listeners:
            listener.close()
        report(stack, args.stats_json)
        close(stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
