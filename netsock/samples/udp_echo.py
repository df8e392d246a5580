"""UDP echo server on a TUN (or TAP) device, over IPv4 and IPv6; also answers ping.

    python -m netsock.samples.udp_echo <tun-device> <local-address> <local-port>
        [--address ADDR[/PREFIX]]... [--join GROUP]... [--tap] [--pcap FILE] [--stats-json FILE]

Addresses are IPv4 or IPv6 (``udp_echo tun0 192.0.2.2 7 --address 2001:db8::2/64``); the server
listens on the port in each family it has an address of. ``--join 239.1.2.3`` or ``--join ff15::1234``
joins a multicast group on the device (IGMP/MLD) and echoes what is sent to it, from the stack's
unicast address as a normal socket would. The device must exist (``ip tuntap add dev tun0 mode tun``).
On a TAP, IPv6 addresses first go through duplicate address detection: one another node holds is
reported with a line starting "udp_echo: WARNING: duplicate address" and not used. Prints "ready"
once listening; on SIGTERM or SIGINT prints the stack's counters (and writes them to --stats-json)
and exits 0.
"""

from __future__ import annotations

import argparse
import sys

import gevent

from ..scheduler import blocking
from ..tcpip import Error, FullAddress, SockOpt, WriteOptions
from ..transport.icmp import ICMPv4Protocol, ICMPv6Protocol
from ..transport.udp import UDPProtocol
from ..waiter import EventMask, WaiterQueue
from .common import (NIC_ID, add_address_option, build_stack, close, host_port, local_addresses, network_protocol,
                     network_protocols, parse_address, report, wait_for_stop_signal, wait_for_unique_addresses)


def echo_forever(endpoint, queue: WaiterQueue) -> None:  # noqa: ANN001 - a UDPEndpoint
    """Send every datagram back to where it came from."""
    while True:
        try:
            datagram = blocking(endpoint, queue, EventMask.IN, endpoint.read)
        except Error:
            continue  # an ICMP error reported to the socket: nothing to echo
        try:
            endpoint.write(datagram.data, WriteOptions(to=datagram.sender))
        except Error as e:
            print(f"udp_echo: cannot answer {datagram.sender}: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netsock.samples.udp_echo", description=__doc__.split("\n")[0])
    parser.add_argument("device", help="existing TUN (or TAP, with --tap) device")
    parser.add_argument("address", help="this stack's address, IPv4 or IPv6, e.g. 192.0.2.2, 192.0.2.2/24 or "
                        "2001:db8::2/64")
    parser.add_argument("port", type=int, help="UDP port to echo on")
    add_address_option(parser)
    parser.add_argument("--join", action="append", default=[], metavar="GROUP",
                        help="join this IPv4 or IPv6 multicast group and echo what is sent to it (repeatable)")
    parser.add_argument("--tap", action="store_true", help="the device is a TAP (Ethernet, with ARP and NDP)")
    parser.add_argument("--pcap", help="record everything on the link to this pcap file")
    parser.add_argument("--stats-json", help="write the stack's counters here on exit")
    args = parser.parse_args(argv)

    addresses = local_addresses(args)
    groups = [parse_address(text).address for text in args.join]
    stack = build_stack(args.device, addresses, [UDPProtocol, ICMPv4Protocol, ICMPv6Protocol], tap=args.tap,
                        pcap=args.pcap)
    wait_for_unique_addresses(stack, "udp_echo")
    endpoints = {}
    servers = []
    try:
        # One socket per family (as AF_INET and AF_INET6 sockets on the same port), a group's included.
        for net_proto in network_protocols([*(a.address for a in addresses), *groups]):
            queue = WaiterQueue()
            endpoint = stack.new_endpoint(UDPProtocol.number, net_proto, queue)
            endpoints[net_proto] = (endpoint, queue)
            endpoint.bind(FullAddress(0, b"", args.port))
        for text, group in zip(args.join, groups, strict=True):
            endpoint, _ = endpoints[network_protocol(group)]
            try:
                endpoint.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (group, NIC_ID))
            except Error as e:
                parser.error(f"cannot join {text}: {e}")
        servers = [gevent.spawn(echo_forever, endpoint, queue) for endpoint, queue in endpoints.values()]
        print(f"echoing UDP on {', '.join(host_port(a.address, args.port) for a in addresses)} over {args.device}")
        for text in args.join:
            print(f"joined {text} on {args.device}")
        print("ready", flush=True)
        wait_for_stop_signal()
    finally:
        gevent.killall(servers)
        for endpoint, _ in endpoints.values():
            endpoint.close()
        report(stack, args.stats_json)
        close(stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
