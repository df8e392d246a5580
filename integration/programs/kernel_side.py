"""The kernel's side of the drop-in tests: plain CPython on the namespace's kernel sockets.

    python kernel_side.py https 192.0.2.1:8443 --cert CERT --key KEY --directory DIR
    python kernel_side.py select-peers --echo 192.0.2.1:7000 --sink 192.0.2.1:7001
    python kernel_side.py urgent-peer 192.0.2.1:7002
    python kernel_side.py tcp-lines 192.0.2.2:9000 --connections 20 --lines 50
    python kernel_side.py udp-lines 192.0.2.2:9001 --count 200

Servers run until terminated. Clients print one JSON line and exit 0 only if every answer was right.
Run by path: it imports nothing from the tests.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import socket
import ssl
import sys
import threading
import time
from typing import Any


def _endpoint(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def _report(result: dict[str, Any], ok: bool) -> int:
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


def https(bind: tuple[str, int], cert: str, key: str, directory: str) -> int:
    """http.server's file server behind the stdlib's TLS, one handshake per request thread (a client
    that fails the handshake, or a probe that sends nothing, stalls no one else)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class HTTPSServer(http.server.ThreadingHTTPServer):
        def finish_request(self, request: Any, client_address: Any) -> None:
            with context.wrap_socket(request, server_side=True) as tls:
                super().finish_request(tls, client_address)

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    with HTTPSServer(bind, handler) as server:
        server.serve_forever()
    return 0


def select_peers(echo: tuple[str, int], sink: tuple[str, int]) -> int:
    """An echo server that closes after the client's FIN, and a sink: a listener that completes
    handshakes but never accepts, so nothing sent to it is ever read and its window closes."""
    sink_listener = socket.create_server(sink, backlog=8)

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    with sink_listener, socket.create_server(echo) as listener:      # listening on echo: both are ready
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"the client closed after {data!r}")
        data += chunk
    return data


def urgent_peer(bind: tuple[str, int]) -> int:
    """The other end of programs/urgent_data.py, one connection at a time: sends it urgent data
    (b"hello", b"!" with MSG_OOB, b"world"), reads what it sends back the same way and reports it as
    a JSON line, then sends urgent data once more (b"12", b"3" with MSG_OOB, b"45") for it to read
    inline."""
    with socket.create_server(bind) as listener:
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    conn.sendall(b"hello")
                    conn.send(b"!", socket.MSG_OOB)
                    conn.sendall(b"world")
                    _recv_exactly(conn, 4)                  # b"next": the client sends its own now
                    time.sleep(0.3)
                    got = {"before": conn.recv(100).decode(), "oob": conn.recv(1, socket.MSG_OOB).decode(),
                           "after": conn.recv(100).decode()}
                    conn.sendall(json.dumps(got).encode() + b"\n")
                    _recv_exactly(conn, 6)                  # b"inline": SO_OOBINLINE is on over there
                    conn.sendall(b"12")
                    conn.send(b"3", socket.MSG_OOB)
                    conn.sendall(b"45")
                    _recv_exactly(conn, 4)                  # b"done"
                except (ConnectionError, OSError) as error:
                    print(f"urgent-peer: {error!r}", file=sys.stderr, flush=True)


def tcp_lines(server: tuple[str, int], connections: int, lines: int, timeout: float) -> int:
    """Open ``connections`` connections at once, then on each send ``lines`` lines and expect each
    back in upper case."""
    socks = [socket.create_connection(server, timeout=timeout) for _ in range(connections)]
    answered = [0] * connections

    def exchange(index: int) -> None:
        with socks[index] as sock, sock.makefile("rwb") as stream:
            for number in range(lines):
                line = f"connection {index} line {number}\n".encode()
                stream.write(line)
                stream.flush()
                if stream.readline() != line.upper():
                    return
                answered[index] += 1

    threads = [threading.Thread(target=exchange, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _report({"connections": connections, "answered": sum(answered)}, sum(answered) == connections * lines)


def udp_lines(server: tuple[str, int], count: int, timeout: float) -> int:
    """Send ``count`` datagrams one after another, each until its upper-case answer comes back (the
    server may not be up yet: the first is retried for up to ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    answered = resent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for number in range(count):
            payload = f"datagram {number}".encode()
            while True:
                try:
                    sock.sendto(payload, server)
                    # An answer to an earlier, resent datagram may still arrive: skip it.
                    while sock.recvfrom(65536) != (payload.upper(), server):
                        pass
                    break
                except OSError:        # no answer yet (timeout), or no netsock on the device yet
                    if time.monotonic() > deadline:
                        return _report({"answered": answered, "resent": resent}, False)
                    resent += 1
                    time.sleep(0.05)
            answered += 1
    return _report({"answered": answered, "resent": resent}, answered == count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("https", help="serve a directory over HTTPS")
    p.add_argument("bind", type=_endpoint)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--directory", required=True)
    p = commands.add_parser("select-peers", help="an echo server and a sink that never reads")
    p.add_argument("--echo", type=_endpoint, required=True)
    p.add_argument("--sink", type=_endpoint, required=True)
    p = commands.add_parser("urgent-peer", help="exchanges TCP urgent data (MSG_OOB) with urgent_data.py")
    p.add_argument("bind", type=_endpoint)
    p = commands.add_parser("tcp-lines", help="concurrent line exchanges with an upper-casing server")
    p.add_argument("server", type=_endpoint)
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--lines", type=int, default=50)
    p.add_argument("--timeout", type=float, default=30.0)
    p = commands.add_parser("udp-lines", help="datagram exchanges with an upper-casing server")
    p.add_argument("server", type=_endpoint)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.command == "https":
        return https(args.bind, args.cert, args.key, args.directory)
    if args.command == "select-peers":
        return select_peers(args.echo, args.sink)
    if args.command == "urgent-peer":
        return urgent_peer(args.bind)
    if args.command == "tcp-lines":
        return tcp_lines(args.server, args.connections, args.lines, args.timeout)
    return udp_lines(args.server, args.count, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
