"""What select.select, select.poll, select.epoll and selectors.DefaultSelector report ready when TCP
sockets and a pipe are waited on in one call. An ordinary program: the drop-in tests run it on the
kernel's sockets and under ``netsock run``, and both must observe the same.

    python select_readiness.py ECHO_HOST:PORT SINK_HOST:PORT

ECHO echoes what it receives and closes after the client's FIN; SINK takes connections but never
reads. Prints one JSON object: {api: {step: {descriptor: [events]}}}, events among "in", "out",
"pri", "err", "hup", "rdhup" (what the API can tell), only for descriptors that are ready.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Waited = dict[str, list[str]]
Wait = Callable[[dict[Any, str], dict[Any, str], float], Waited]

_FLAGS = ("IN", "PRI", "OUT", "ERR", "HUP", "RDHUP")


def _endpoint(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def _fd(obj: Any) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


def _interest(reads: dict[Any, str], writes: dict[Any, str]) -> dict[int, tuple[Any, str, bool, bool]]:
    """fd -> (object, label, wants input, wants output): one registration per descriptor."""
    wanted: dict[int, tuple[Any, str, bool, bool]] = {}
    for obj, label in reads.items():
        wanted[_fd(obj)] = (obj, label, True, False)
    for obj, label in writes.items():
        _, _, wants_input, _ = wanted.get(_fd(obj), (obj, label, False, False))
        wanted[_fd(obj)] = (obj, label, wants_input, True)
    return wanted


def _flag_names(mask: int, prefix: str) -> list[str]:
    return [flag.lower() for flag in _FLAGS if mask & getattr(select, prefix + flag)]


def wait_select(reads: dict[Any, str], writes: dict[Any, str], timeout: float) -> Waited:
    readable, writable, _ = select.select(list(reads), list(writes), [], timeout)
    ready: Waited = {}
    for obj in readable:
        ready.setdefault(reads[obj], []).append("in")
    for obj in writable:
        ready.setdefault(writes[obj], []).append("out")
    return ready


def wait_poll(reads: dict[Any, str], writes: dict[Any, str], timeout: float) -> Waited:
    poller = select.poll()
    labels = {}
    for fd, (_, label, wants_input, wants_output) in _interest(reads, writes).items():
        poller.register(fd, (select.POLLIN if wants_input else 0) | (select.POLLOUT if wants_output else 0))
        labels[fd] = label
    return {labels[fd]: _flag_names(mask, "POLL") for fd, mask in poller.poll(timeout * 1000)}


def wait_epoll(reads: dict[Any, str], writes: dict[Any, str], timeout: float) -> Waited:
    labels = {}
    with select.epoll() as poller:
        for fd, (_, label, wants_input, wants_output) in _interest(reads, writes).items():
            poller.register(fd, (select.EPOLLIN if wants_input else 0) | (select.EPOLLOUT if wants_output else 0))
            labels[fd] = label
        return {labels[fd]: _flag_names(mask, "EPOLL") for fd, mask in poller.poll(timeout)}


def wait_selector(reads: dict[Any, str], writes: dict[Any, str], timeout: float) -> Waited:
    with selectors.DefaultSelector() as selector:
        for obj, label, wants_input, wants_output in _interest(reads, writes).values():
            events = (selectors.EVENT_READ if wants_input else 0) | (selectors.EVENT_WRITE if wants_output else 0)
            selector.register(obj, events, label)
        ready: Waited = {}
        for key, events in selector.select(timeout):
            ready[key.data] = [name for name, event in (("in", selectors.EVENT_READ), ("out", selectors.EVENT_WRITE))
                               if events & event]
        return ready


def fill(sock: socket.socket) -> None:
    """Send to a peer that never reads until sending blocks, and still blocks after the data in
    flight was acknowledged: from then on the socket is not writable."""
    sock.setblocking(False)
    chunk = bytes(1 << 16)
    while True:
        try:
            while True:
                sock.send(chunk)
        except BlockingIOError:
            pass
        time.sleep(0.3)
        try:
            sock.send(chunk)
        except BlockingIOError:
            return


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {data!r}")
        data += chunk
    return data


def observe(wait: Wait, echo: tuple[str, int], sink: socket.socket) -> dict[str, Waited]:
    """The steps, on a new echo connection and a new pipe."""
    steps: dict[str, Waited] = {}
    conn = socket.create_connection(echo, timeout=10)
    pipe_r, pipe_w = os.pipe()
    reads = {conn: "socket", pipe_r: "pipe-r"}
    try:
        steps["idle"] = wait(reads, {conn: "socket", pipe_w: "pipe-w", sink: "sink"}, 0)
        conn.sendall(b"ping")
        steps["data arrives"] = wait(reads, {}, 10)
        os.write(pipe_w, b"x")
        steps["both readable"] = wait(reads, {}, 0)
        assert receive_exactly(conn, 4) == b"ping" and os.read(pipe_r, 1) == b"x"
        threading.Timer(0.2, os.write, (pipe_w, b"x")).start()
        steps["pipe written meanwhile"] = wait(reads, {}, 10)
        assert os.read(pipe_r, 1) == b"x"
        steps["nothing ready"] = wait(reads, {sink: "sink"}, 0.2)
        conn.shutdown(socket.SHUT_WR)           # the echo answers with its FIN
        steps["peer closed"] = wait(reads, {}, 10)
        assert conn.recv(1) == b""
    finally:
        conn.close()
        os.close(pipe_r)
        os.close(pipe_w)
    return steps


def main() -> int:
    echo, sink_address = map(_endpoint, sys.argv[1:3])
    apis: dict[str, Wait] = {"select": wait_select, "poll": wait_poll, "epoll": wait_epoll,
                             "selectors": wait_selector}
    with socket.create_connection(sink_address, timeout=10) as sink:
        fill(sink)
        print(json.dumps({name: observe(wait, echo, sink) for name, wait in apis.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
