"""TCP urgent data (MSG_OOB, SO_OOBINLINE) as an ordinary program sees it. The drop-in tests run it on
the kernel's sockets and under ``netsock run``, against the same kernel peer (kernel_side.py
urgent-peer), and both must observe the same.

    python urgent_data.py PEER_HOST:PORT

Prints one JSON object: each step's name and what it saw (data, or the errno name of an error).
"""

from __future__ import annotations

import errno
import json
import select
import socket
import sys
import time
from collections.abc import Callable
from typing import Any


def attempt(call: Callable[[], Any]) -> Any:
    """The call's result (bytes as text), or the name of the errno it failed with."""
    try:
        result = call()
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error))
    if isinstance(result, bytes):
        return result.decode()
    if isinstance(result, tuple):     # recvmsg: data and the message flags
        return [result[0].decode(), bool(result[2] & socket.MSG_OOB)]
    return result


def timed(sock: socket.socket, timeout: float, call: Callable[[], Any]) -> Any:
    """``call`` with the socket's timeout set to ``timeout`` for it."""
    saved = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        return call()
    finally:
        sock.settimeout(saved)


def readiness(sock: socket.socket) -> list[str]:
    readable, _, exceptional = select.select([sock], [], [sock], 0)
    return [name for name, ready in (("in", readable), ("pri", exceptional)) if ready]


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        line += chunk
    return line


def main() -> int:
    host, port = sys.argv[1].rsplit(":", 1)
    seen: dict[str, Any] = {}
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        seen["inline by default"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE)
        time.sleep(0.3)                      # b"hello", b"!" (urgent), b"world" are in
        seen["ready with urgent data"] = readiness(sock)
        seen["read stops at the mark"] = attempt(lambda: sock.recv(100))
        seen["peek the urgent byte"] = attempt(lambda: sock.recvmsg(1, 0, socket.MSG_OOB | socket.MSG_PEEK))
        seen["read the urgent byte"] = attempt(lambda: sock.recv(1, socket.MSG_OOB))
        seen["read it again"] = attempt(lambda: sock.recv(1, socket.MSG_OOB))
        seen["ready once it is read"] = readiness(sock)
        seen["read past the mark"] = attempt(lambda: sock.recv(100))
        seen["nothing urgent"] = attempt(lambda: timed(sock, 0.0, lambda: sock.recv(1, socket.MSG_OOB)))
        # With a timeout, CPython polls for POLLIN before the call: nothing to read, so it times out.
        seen["nothing urgent, with a timeout"] = attempt(lambda: timed(sock, 0.2, lambda: sock.recv(1, socket.MSG_OOB)))

        sock.sendall(b"next")
        sock.sendall(b"abc")
        sock.send(b"Z", socket.MSG_OOB)
        sock.sendall(b"def")
        seen["the peer read"] = json.loads(read_line(sock))

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        seen["inline when set"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE)
        sock.sendall(b"inline")
        time.sleep(0.3)                      # b"12", b"3" (urgent), b"45" are in
        seen["inline: ready"] = readiness(sock)
        seen["inline: read stops at the mark"] = attempt(lambda: sock.recv(100))
        seen["inline: no out-of-band read"] = attempt(lambda: sock.recv(1, socket.MSG_OOB))
        seen["inline: the byte is in the stream"] = attempt(lambda: sock.recv(100))
        sock.sendall(b"done")
        seen["end"] = attempt(lambda: sock.recv(100))
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
