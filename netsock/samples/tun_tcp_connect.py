"""TCP client on a TUN (or TAP) device: stdin to the connection, the connection to stdout (a netcat).

    python -m netsock.samples.tun_tcp_connect <tun-device> <local-address> <local-port>
        <remote-address> <remote-port> [--address ADDR[/PREFIX]]... [--tap] [--pcap FILE]
        [--stats-json FILE] [--fault SPEC] [--keepalive IDLE,INTERVAL,COUNT]

Connects from local-port (0: an ephemeral port) to the remote address, over IPv4 or IPv6 as the
remote address is (the stack needs an address of that family: the local one or an --address).
End of stdin shuts down the sending side (FIN); the peer's FIN ends the copy to stdout. Exits 0
once both directions are closed and everything sent has been acknowledged; exits 1 with a message
on stderr if the connection could not be made or failed (refused, reset, timed out). Only data
goes to stdout; the messages and the stack's counters go to stderr.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
from gevent.os import make_nonblocking, nb_read, nb_write

from ..scheduler import blocking, wait_for
from ..tcpip import Error, ErrConnectStarted, ErrWouldBlock, FullAddress, ShutdownFlags, SockOpt
from ..transport.icmp import ICMPv4Protocol, ICMPv6Protocol
from ..transport.tcp import TCPEndpoint, TCPProtocol, TCPState
from ..waiter import EventMask, WaiterQueue
from .common import (add_address_option, build_stack, close, local_addresses, network_protocol, parse_address,
                     parse_fault, report, wait_for_unique_addresses)

CHUNK = 256 * 1024


class ConnectionFailed(Exception):
    """The connection could not be made or broke; the message says why."""


def describe(err: Error) -> str:
    return f"{err} ({errno.errorcode.get(err.errno, err.errno)})"


def parse_keepalive(text: str) -> tuple[float, float, int]:
    """'IDLE,INTERVAL,COUNT' -> (seconds idle before the first probe, seconds between probes, probes)."""
    try:
        idle, interval, count = text.split(",")
        return float(idle), float(interval), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IDLE,INTERVAL,COUNT (e.g. 1,1,3), not {text!r}") from None


@contextmanager
def nonblocking(*fds: int) -> Iterator[None]:
    """Make fds non-blocking so that waiting on them parks a greenlet, not the hub; restore them after
    (a terminal's or a shell's pipe is shared with other processes)."""
    was_blocking = [os.get_blocking(fd) for fd in fds]
    for fd in fds:
        make_nonblocking(fd)
    try:
        yield
    finally:
        for fd, blocking in zip(fds, was_blocking):
            os.set_blocking(fd, blocking)


def connect(endpoint: TCPEndpoint, queue: WaiterQueue, remote: FullAddress) -> None:
    try:
        endpoint.connect(remote)
    except ErrConnectStarted:
        wait_for(queue, EventMask.OUT, lambda: bool(endpoint.readiness(EventMask.OUT)))
        err = endpoint.get_sock_opt(SockOpt.ERROR)
        if err is not None:
            raise ConnectionFailed(describe(err)) from None
    except Error as e:
        raise ConnectionFailed(describe(e)) from None


def upload(endpoint: TCPEndpoint, queue: WaiterQueue, fd: int) -> None:
    """Copy fd to the connection until EOF, then shut down the sending side."""
    writable = lambda: bool(endpoint.readiness(EventMask.OUT))  # noqa: E731
    try:
        while data := nb_read(fd, CHUNK):
            while data:     # bytes, not a memoryview: the send buffer keeps bytes as they are, copies views
                wait_for(queue, EventMask.OUT, writable)
                try:
                    data = data[endpoint.write(data):]
                except ErrWouldBlock:
                    continue
        endpoint.shutdown(ShutdownFlags.WRITE)
    except Error as e:
        raise ConnectionFailed(describe(e)) from None


def download(endpoint: TCPEndpoint, queue: WaiterQueue, fd: int) -> None:
    """Copy the connection to fd until the peer's FIN."""
    try:
        while True:
            chunk = blocking(endpoint, queue, EventMask.IN, lambda: endpoint.read(CHUNK))
            if not chunk:
                return
            data = memoryview(chunk)
            while data:
                data = data[nb_write(fd, data):]
    except Error as e:
        raise ConnectionFailed(describe(e)) from None


def watch(endpoint: TCPEndpoint, queue: WaiterQueue) -> None:
    """Fail as soon as the connection does, even if neither copy is waiting on it (keepalive giving
    up while we wait for stdin, after the peer's FIN)."""
    wait_for(queue, EventMask.HUP, lambda: endpoint.state is TCPState.CLOSED)
    err = endpoint.get_sock_opt(SockOpt.ERROR)
    if err is not None:
        raise ConnectionFailed(describe(err))


def finish(endpoint: TCPEndpoint, queue: WaiterQueue) -> None:
    """Wait until the peer has acknowledged our FIN (and with it every byte): in this process the
    stack, and the data it still has to send, ends when the program does."""
    wait_for(queue, EventMask.HUP, lambda: endpoint.state in (TCPState.TIME_WAIT, TCPState.CLOSED))
    try:
        endpoint.read(1)    # b"" after a clean close; the error if the connection failed meanwhile
    except Error as e:
        raise ConnectionFailed(describe(e)) from None


def run(endpoint: TCPEndpoint, queue: WaiterQueue, remote: FullAddress, stdin: int, stdout: int) -> None:
    connect(endpoint, queue, remote)
    print(f"connected {endpoint.get_local_address()} -> {endpoint.get_remote_address()}", file=sys.stderr,
          flush=True)
    copies = [gevent.spawn(upload, endpoint, queue, stdin), gevent.spawn(download, endpoint, queue, stdout)]
    watcher = gevent.spawn(watch, endpoint, queue)
    try:
        for done in gevent.iwait([*copies, watcher]):
            done.get()      # the first failure ends everything
            if all(copy.ready() for copy in copies):
                break
    finally:
        gevent.killall([*copies, watcher])
    finish(endpoint, queue)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netsock.samples.tun_tcp_connect",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("device", help="existing TUN (or TAP, with --tap) device")
    parser.add_argument("address", help="this stack's address, IPv4 or IPv6, e.g. 192.0.2.2, 192.0.2.2/24 or "
                        "2001:db8::2/64")
    parser.add_argument("port", type=int, help="local TCP port (0: ephemeral)")
    parser.add_argument("remote_address", help="IPv4 or IPv6 address to connect to")
    parser.add_argument("remote_port", type=int, help="TCP port to connect to")
    add_address_option(parser)
    parser.add_argument("--tap", action="store_true", help="the device is a TAP (Ethernet, with ARP)")
    parser.add_argument("--pcap", help="record everything on the link to this pcap file")
    parser.add_argument("--stats-json", help="write the stack's counters here on exit")
    parser.add_argument("--fault", type=parse_fault, help="faults to inject in both directions (see tun_tcp_echo)")
    parser.add_argument("--keepalive", type=parse_keepalive, metavar="IDLE,INTERVAL,COUNT",
                        help="send keepalive probes after IDLE idle seconds, every INTERVAL seconds; "
                             "give up (ETIMEDOUT) after COUNT unanswered")
    args = parser.parse_args(argv)

    addresses = local_addresses(args)
    remote = FullAddress(0, parse_address(args.remote_address).address, args.remote_port)
    stack = build_stack(args.device, addresses, [TCPProtocol, ICMPv4Protocol, ICMPv6Protocol], tap=args.tap,
                        pcap=args.pcap, fault=args.fault)
    wait_for_unique_addresses(stack, "tun_tcp_connect")
    queue = WaiterQueue()
    endpoint = stack.new_endpoint(TCPProtocol.number, network_protocol(remote.addr), queue)
    status = 0
    try:
        if args.keepalive:
            idle, interval, count = args.keepalive
            endpoint.set_sock_opt(SockOpt.KEEPALIVE_IDLE, idle)
            endpoint.set_sock_opt(SockOpt.KEEPALIVE_INTERVAL, interval)
            endpoint.set_sock_opt(SockOpt.KEEPALIVE_COUNT, count)
            endpoint.set_sock_opt(SockOpt.KEEPALIVE_ENABLED, True)
        if args.port:
            endpoint.bind(FullAddress(0, b"", args.port))
        with nonblocking(sys.stdin.fileno(), sys.stdout.fileno()):
            run(endpoint, queue, remote, sys.stdin.fileno(), sys.stdout.fileno())
    except ConnectionFailed as e:
        print(f"tun_tcp_connect: connection to {args.remote_address}:{args.remote_port} failed: {e}",
              file=sys.stderr)
        status = 1
    except Error as e:
        print(f"tun_tcp_connect: {describe(e)}", file=sys.stderr)
        status = 1
    finally:
        endpoint.close()
        report(stack, args.stats_json, out=sys.stderr)
        close(stack)
    return status


if __name__ == "__main__":
    sys.exit(main())
