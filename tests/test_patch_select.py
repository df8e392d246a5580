"""netsock.patches.select and .selectors: select(), poll() and epoll over netsock TCP and UDP sockets on
a loopback stack mixed with pipes; readiness as Linux reports it, waiting that lets other greenlets run,
CPython's exact argument errors (checked against the kernel's own functions), epoll's registration
rules, EPOLLONESHOT and EPOLLET, stdlib selectors driving an echo exchange, and patch()/unpatch()."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import select
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import gevent
import gevent.socket
import pytest

from netsock.adapter import NetsockSocket, fds
from netsock.patches import select as nselect
from netsock.patches import selectors as nselectors


class Kernel:
    """The kernel's functions, whose argument errors ours must match (in a class: module globals bound to
    them would be named by netsock.patch_all()'s early-binding warning in other tests)."""

    poll = select.poll
    epoll = select.epoll
    select = select.select


IN, OUT, ERR, HUP, NVAL = select.POLLIN, select.POLLOUT, select.POLLERR, select.POLLHUP, select.POLLNVAL
RDHUP, RDNORM, WRNORM = select.POLLRDHUP, select.POLLRDNORM, select.POLLWRNORM
DELAY = 0.05


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):      # a test may have closed it
            os.close(fd)


def tcp_pair() -> tuple[NetsockSocket, NetsockSocket]:
    """(client, server) of one loopback connection."""
    with NetsockSocket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = NetsockSocket()
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def udp_pair() -> tuple[NetsockSocket, NetsockSocket]:
    a, b = NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM), NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.connect(b.getsockname())
    b.connect(a.getsockname())
    return a, b


def revents(fd: Any, events: int = IN | OUT | select.POLLPRI) -> int:
    """What a patched poll() reports for ``fd`` right now."""
    poller = nselect.poll()
    poller.register(fd, events)
    found = poller.poll(0)
    return found[0][1] if found else 0


def later(call: Callable[..., Any], *args: Any) -> gevent.Greenlet:
    return gevent.spawn_later(DELAY, call, *args)


def switches(call: Callable[[], Any]) -> bool:
    """Did ``call()`` let other greenlets run?"""
    ran = gevent.spawn(lambda: None)
    call()
    return ran.dead


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


# --- select() ---------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_select_mixes_sockets_and_pipes_keeping_the_caller_s_objects_and_order(pipe) -> None:
    r, w = pipe
    client, server = tcp_pair()
    a, b = udp_pair()
    with client, server, a, b:
        assert nselect.select([client, r, a], [], [], 0) == ([], [], [])
        server.send(b"x")
        b.send(b"y")
        os.write(w, b"z")
        assert nselect.select([a, r, client, r], [], [], 0) == ([a, r, client, r], [], [])   # duplicates kept
        # Output: connected TCP and UDP sockets and a pipe's write end are writable; a read end is not.
        assert nselect.select([], [r, w, client, a], [], 0) == ([], [w, client, a], [])
        assert nselect.select([], [], [client, w], 0) == ([], [], [])
        assert nselect.select((client.fileno(),), {r}, iter([]), 0.0) == ([client.fileno()], [], [])


@pytest.mark.usefixtures("stack")
def test_select_timeouts(pipe) -> None:
    r, _ = pipe
    client, server = tcp_pair()
    with client, server:
        assert not switches(lambda: nselect.select([client, r], [], [], 0))
        found, elapsed = timed(lambda: nselect.select([client, r], [], [], DELAY))
        assert found == ([], [], []) and elapsed >= DELAY
        assert timed(lambda: nselect.select([], [], [], DELAY))[1] >= DELAY     # a cooperative sleep


@pytest.mark.usefixtures("stack")
def test_select_without_timeout_waits_for_data_from_another_greenlet(pipe) -> None:
    r, w = pipe
    client, server = tcp_pair()
    with client, server:
        sender = later(server.send, b"x")
        assert nselect.select([r, client], [], [], 0) == ([], [], [])      # nothing yet: the next call waits
        assert nselect.select([r, client], [], [], None) == ([client], [], [])
        assert sender.dead
        client.recv(1)
        writer = later(os.write, w, b"x")
        assert nselect.select([client, r], [], [], 0) == ([], [], [])
        assert nselect.select([client, r], [], [], None) == ([r], [], [])
        assert writer.dead


@pytest.mark.usefixtures("stack")
def test_the_hub_and_other_greenlets_run_while_select_waits(pipe) -> None:
    """An echo exchange over the stack completes while this greenlet waits in select on a pipe."""
    r, w = pipe
    client, server = tcp_pair()

    def exchange() -> None:
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"
        server.sendall(b"pong")
        assert client.recv(4) == b"pong"
        os.write(w, b"done")

    with client, server:
        worker = gevent.spawn(exchange)
        assert nselect.select([r], [], [], 5) == ([r], [], [])
        worker.get(timeout=1)


@pytest.mark.usefixtures("stack")
def test_select_listening_socket_is_readable_when_a_connection_is_pending() -> None:
    with NetsockSocket() as listener, NetsockSocket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert nselect.select([listener], [], [], 0) == ([], [], [])
        later(client.connect, listener.getsockname())
        assert nselect.select([listener], [], [], 5) == ([listener], [], [])
        conn, _ = listener.accept()
        conn.close()
        assert nselect.select([listener], [], [], 0) == ([], [], [])


@pytest.mark.usefixtures("stack")
def test_select_connecting_socket_becomes_writable_when_connected_or_refused() -> None:
    with NetsockSocket() as listener, NetsockSocket() as client, NetsockSocket() as refused:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client.setblocking(False)
        assert client.connect_ex(listener.getsockname()) in (0, errno.EINPROGRESS)
        assert nselect.select([], [client], [], 5) == ([], [client], [])
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0

        with NetsockSocket() as probe:          # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()
        refused.setblocking(False)
        assert refused.connect_ex(closed_port) in (errno.EINPROGRESS, errno.ECONNREFUSED)
        assert nselect.select([refused], [refused], [], 5) == ([refused], [refused], [])
        assert refused.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED


def test_select_keeps_waiting_through_conditions_it_does_not_count(pipe) -> None:
    """A pipe's read end waited on for output after its writer closed has POLLHUP, which select() does
    not count as writable: like Linux, it sleeps on (without spinning) until the timeout or another
    descriptor is ready."""
    r, w = pipe
    other_r, other_w = os.pipe()
    try:
        gevent.spawn_later(0.02, os.close, w)   # while select() waits
        cpu = time.process_time()
        found, elapsed = timed(lambda: nselect.select([], [r], [r], 0.3))
        assert found == ([], [], []) and elapsed >= 0.3
        assert time.process_time() - cpu < 0.05
        later(os.write, other_w, b"x")
        assert nselect.select([other_r], [r], [], 5) == ([other_r], [], [])
    finally:
        os.close(other_r)
        os.close(other_w)


@pytest.mark.usefixtures("stack")
def test_select_closed_descriptors_fail_with_ebadf(pipe) -> None:
    r, _ = pipe
    sock = NetsockSocket()
    fd = sock.fileno()
    sock.close()
    os.close(r)
    for args in (([fd], [], []), ([], [r], []), ([], [], [r])):
        with pytest.raises(OSError) as info:
            nselect.select(*args, 0)
        assert info.value.errno == errno.EBADF


def test_gevent_unix_sockets_and_regular_files(tmp_path) -> None:
    left, right = gevent.socket.socketpair()
    with left, right, open(tmp_path / "file", "w+b") as regular:
        assert nselect.select([left, regular], [], [], 0) == ([regular], [], [])    # files are always ready
        later(right.sendall, b"x")
        assert nselect.select([left], [], [], 5) == ([left], [], [])
        assert revents(regular, IN | OUT) == IN | OUT
        with nselect.epoll() as ep:
            with pytest.raises(PermissionError):
                ep.register(regular)
            ep.register(right, select.EPOLLIN)
            later(left.sendall, b"y")
            assert ep.poll(5) == [(right.fileno(), IN)]


# --- poll() -----------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_poll_tcp_readiness_as_linux_reports_it() -> None:
    client, server = tcp_pair()
    with client, server:
        assert revents(client) == OUT
        assert revents(client, OUT | WRNORM) == OUT | WRNORM
        server.send(b"data")
        gevent.sleep(0)
        assert revents(client) == IN | OUT
        assert revents(client, IN | RDNORM) == IN | RDNORM
        server.shutdown(socket.SHUT_WR)         # the peer's FIN
        assert revents(client, IN | RDHUP) == IN | RDHUP
        assert client.recv(10) == b"data" and client.recv(10) == b""
        assert revents(client, IN) == IN        # end of stream stays readable


@pytest.mark.usefixtures("stack")
def test_poll_reset_peer_gives_err_hup_and_in() -> None:
    client, server = tcp_pair()
    with client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()                          # linger 0: RST
        poller = nselect.poll()
        poller.register(client, IN)
        [(fd, events)] = poller.poll(1000)
        assert fd == client.fileno() and events & (ERR | HUP | IN) == ERR | HUP | IN
        # POLLERR and POLLHUP are reported even to who asked for nothing.
        assert revents(client, 0) == ERR | HUP
        with pytest.raises(ConnectionResetError):
            client.recv(1)


@pytest.mark.usefixtures("stack")
def test_poll_udp_readiness_and_refusal() -> None:
    a, b = udp_pair()
    with a, b:
        assert revents(a) == OUT
        b.send(b"datagram")
        assert revents(a) == IN | OUT
        a.recv(100)
        assert revents(a) == OUT
        b.close()
        a.send(b"to nobody")                    # ICMP port unreachable comes back
        poller = nselect.poll()
        poller.register(a, 0)
        assert poller.poll(1000) == [(a.fileno(), ERR)]
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED


def test_poll_pipes_hangup_and_invalid_descriptors(pipe) -> None:
    r, w = pipe
    assert revents(w) == OUT and revents(r) == 0
    os.write(w, b"x")
    assert revents(r) == IN
    os.close(w)
    assert revents(r) == IN | HUP
    assert revents(w) == NVAL


@pytest.mark.usefixtures("stack")
def test_poll_register_modify_unregister_and_order(pipe) -> None:
    r, w = pipe
    client, server = tcp_pair()
    with client, server:
        poller = nselect.poll()
        poller.register(w)                      # default: POLLIN | POLLPRI | POLLOUT
        poller.register(client, IN)
        poller.register(r, IN)
        server.send(b"x")
        os.write(w, b"x")
        assert poller.poll(0) == [(w, OUT), (client.fileno(), IN), (r, IN)]     # registration order
        poller.modify(client, OUT)
        poller.register(w, IN)                  # registering again modifies, in place
        assert poller.poll(0) == [(client.fileno(), OUT), (r, IN)]
        poller.unregister(w)
        poller.unregister(client)
        poller.register(client, IN)             # back at the end
        assert poller.poll(0) == [(r, IN), (client.fileno(), IN)]


@pytest.mark.usefixtures("stack")
def test_poll_waits_in_milliseconds(pipe) -> None:
    r, w = pipe
    a, b = udp_pair()
    with a, b:
        poller = nselect.poll()
        poller.register(a, IN)
        poller.register(r, IN)
        found, elapsed = timed(lambda: poller.poll(DELAY * 1000))
        assert found == [] and elapsed >= DELAY
        sender = later(b.send, b"x")
        assert poller.poll(-1) == [(a.fileno(), IN)] and sender.dead
        a.recv(10)
        writer = later(os.write, w, b"x")
        assert poller.poll() == [(r, IN)] and writer.dead


@pytest.mark.usefixtures("stack")
def test_poll_refuses_a_concurrent_poll() -> None:
    a, b = udp_pair()
    with a, b:
        poller = nselect.poll()
        poller.register(a, IN)
        waiter = gevent.spawn(poller.poll)
        gevent.sleep(0)
        with pytest.raises(RuntimeError, match="concurrent poll"):
            poller.poll(0)
        b.send(b"x")
        assert waiter.get(timeout=1) == [(a.fileno(), IN)]


@pytest.mark.usefixtures("stack")
def test_poll_registration_errors(pipe) -> None:
    r, _ = pipe
    poller = nselect.poll()
    with pytest.raises(KeyError) as info:
        poller.unregister(r)
    assert info.value.args == (r,)
    with pytest.raises(FileNotFoundError) as not_found:
        poller.modify(r, IN)
    assert not_found.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="negative"):
        poller.register(-1)
    with NetsockSocket() as sock:
        poller.register(sock)
        poller.unregister(sock.fileno())


# --- epoll --------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_epoll_reports_sockets_and_pipes(pipe) -> None:
    r, w = pipe
    client, server = tcp_pair()
    with client, server, nselect.epoll() as ep:
        assert os.readlink(f"/proc/self/fd/{ep.fileno()}") == "anon_inode:[eventpoll]"
        ep.register(client, select.EPOLLIN | select.EPOLLRDHUP)
        ep.register(r, select.EPOLLIN)
        ep.register(w.__index__(), select.EPOLLOUT)
        assert ep.poll(0) == [(w, OUT)]
        server.send(b"x")
        os.write(w, b"x")
        assert sorted(ep.poll(0)) == sorted([(client.fileno(), IN), (r, IN), (w, OUT)])
        server.shutdown(socket.SHUT_WR)
        assert (client.fileno(), IN | RDHUP) in ep.poll(0)


@pytest.mark.usefixtures("stack")
def test_epoll_timeouts_and_waiting(pipe) -> None:
    r, w = pipe
    client, server = tcp_pair()
    with client, server, nselect.epoll() as ep:
        ep.register(client, select.EPOLLIN)
        ep.register(r, select.EPOLLIN)
        found, elapsed = timed(lambda: ep.poll(DELAY))
        assert found == [] and elapsed >= DELAY
        assert not switches(lambda: ep.poll(0))
        sender = later(server.send, b"x")
        assert ep.poll() == [(client.fileno(), IN)] and sender.dead
        client.recv(1)
        writer = later(os.write, w, b"x")
        assert ep.poll(-1, 10) == [(r, IN)] and writer.dead


@pytest.mark.usefixtures("stack")
def test_epoll_level_triggered_oneshot_and_edge_triggered(pipe) -> None:
    r, w = pipe
    a, b = udp_pair()
    with a, b, nselect.epoll() as ep:
        ep.register(a, select.EPOLLIN | select.EPOLLONESHOT)
        ep.register(r, select.EPOLLIN | select.EPOLLONESHOT)
        b.send(b"1")
        os.write(w, b"1")
        assert sorted(ep.poll(0)) == sorted([(a.fileno(), IN), (r, IN)])
        assert ep.poll(0) == []                 # disarmed, though still readable
        b.send(b"more")
        os.write(w, b"more")
        assert ep.poll(0) == []                 # even when more arrives
        ep.modify(a, select.EPOLLIN)            # re-armed, level-triggered now
        ep.modify(r, select.EPOLLIN | select.EPOLLET)
        assert sorted(ep.poll(0)) == sorted([(a.fileno(), IN), (r, IN)])
        assert ep.poll(0) == [(a.fileno(), IN)]     # the edge was reported; the level still is

        ep.modify(a, select.EPOLLIN | select.EPOLLET)
        assert ep.poll(0) == [(a.fileno(), IN)]
        assert ep.poll(0) == []
        assert a.recv(10) == b"1" and a.recv(10) == b"more"     # drained, as edge-triggered users do
        later(b.send, b"2")
        assert ep.poll(1) == [(a.fileno(), IN)]     # a new edge
        assert ep.poll(0) == []


@pytest.mark.usefixtures("stack")
def test_epoll_edge_triggered_output_ignores_input_signals() -> None:
    """As Linux's ep_poll_callback: a wake-up for input is no edge for a registration that wants output."""
    a, b = udp_pair()
    with a, b, nselect.epoll() as ep:
        ep.register(a, select.EPOLLOUT | select.EPOLLET)
        assert ep.poll(0) == [(a.fileno(), OUT)]
        b.send(b"x")
        assert ep.poll(0) == []
        ep.modify(a, select.EPOLLOUT)           # level-triggered again
        assert ep.poll(0) == [(a.fileno(), OUT)]


def waiters(sock: NetsockSocket) -> int:
    """How many callbacks the socket's waiter queue holds."""
    return len(fds.lookup(sock.fileno()).waiter_queue)


@pytest.mark.usefixtures("stack")
def test_waiting_leaves_no_callbacks_behind(pipe) -> None:
    r, _ = pipe
    a, b = udp_pair()
    with a, b:
        idle = waiters(a)
        assert nselect.select([a, r], [], [], 0.01) == ([], [], [])
        poller = nselect.poll()
        poller.register(a, IN)
        assert poller.poll(10) == []
        ep = nselect.epoll()
        ep.register(a, select.EPOLLIN)
        assert ep.poll(0.01) == [] and waiters(a) == idle + 1
        del ep                                  # dropped without close(): its registration goes too
        gc.collect()
        assert waiters(a) == idle


@pytest.mark.usefixtures("stack")
def test_epoll_maxevents_takes_turns() -> None:
    pairs = [udp_pair() for _ in range(3)]
    with nselect.epoll() as ep:
        for a, b in pairs:
            ep.register(a, select.EPOLLIN)
            b.send(b"x")
        seen = [event for _ in range(3) for event in ep.poll(0, maxevents=1)]
        assert sorted(seen) == sorted((a.fileno(), IN) for a, _ in pairs)
    for a, b in pairs:
        a.close()
        b.close()


@pytest.mark.usefixtures("stack")
def test_epoll_maxevents_does_not_let_kernel_descriptors_starve_sockets(pipe) -> None:
    r, w = pipe
    a, b = udp_pair()
    with a, b, nselect.epoll() as ep:
        ep.register(r, select.EPOLLIN)
        ep.register(a, select.EPOLLIN)
        os.write(w, b"x")
        b.send(b"x")
        assert sorted(ep.poll(0, 1) + ep.poll(0, 1)) == sorted([(r, IN), (a.fileno(), IN)])


@pytest.mark.usefixtures("stack")
def test_epoll_registration_errors(pipe) -> None:
    r, _ = pipe
    sock = NetsockSocket()
    with sock, nselect.epoll() as ep:
        for fd in (sock, r):
            ep.register(fd, select.EPOLLIN)
            with pytest.raises(FileExistsError):
                ep.register(fd, select.EPOLLOUT)
            ep.unregister(fd)
            with pytest.raises(FileNotFoundError):
                ep.unregister(fd)
            with pytest.raises(FileNotFoundError):
                ep.modify(fd, select.EPOLLIN)
        with pytest.raises(ValueError, match="negative"):
            ep.register(-2)
        ep.register(sock, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        with pytest.raises(OSError) as info:
            ep.modify(sock, select.EPOLLIN)
        assert info.value.errno == errno.EINVAL
        with pytest.raises(OSError) as info:
            ep.register(r, select.EPOLLIN | select.EPOLLEXCLUSIVE | select.EPOLLONESHOT)
        assert info.value.errno == errno.EINVAL


@pytest.mark.usefixtures("stack")
def test_epoll_forgets_closed_sockets() -> None:
    with nselect.epoll() as ep:
        a, b = udp_pair()
        ep.register(a, select.EPOLLIN)
        fd = a.fileno()
        b.send(b"x")
        a.close()
        assert ep.poll(0) == []
        with pytest.raises(OSError) as info:    # the descriptor is gone, as the kernel says
            ep.unregister(fd)
        assert info.value.errno in (errno.EBADF, errno.ENOENT)
        c, d = udp_pair()
        with b, c, d:
            ep.register(c, select.EPOLLIN)      # possibly the same number again
            d.send(b"y")
            assert ep.poll(0) == [(c.fileno(), IN)]


@pytest.mark.usefixtures("stack")
def test_closed_epoll_and_its_waiters() -> None:
    a, b = udp_pair()
    with a, b:
        ep = nselect.epoll()
        ep.register(a, select.EPOLLIN)
        waiter = gevent.spawn(ep.poll)
        gevent.sleep(0)
        ep.close()
        with pytest.raises(ValueError, match="closed epoll"):
            waiter.get(timeout=1)
        assert ep.closed
        ep.close()
        for call in (ep.fileno, lambda: ep.poll(0), lambda: ep.register(a), lambda: ep.modify(a, 1),
                     lambda: ep.unregister(a), ep.__enter__):
            with pytest.raises(ValueError, match="I/O operation on closed epoll object"):
                call()


def test_epoll_fromfd_adopts_the_kernel_descriptors(pipe) -> None:
    r, w = pipe
    with nselect.epoll() as ep:
        ep.register(r, select.EPOLLIN)
        adopted = nselect.epoll.fromfd(os.dup(ep.fileno()))
        with adopted:
            os.write(w, b"x")
            assert adopted.poll(0) == [(r, IN)]


# --- argument checks: exactly CPython's -------------------------------------------------------------

class _Fileno:
    def __init__(self, value: Any) -> None:
        self.value = value

    def fileno(self) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"fileno->{self.value!r}"


class _Index:
    def __index__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "__index__->0"


def outcome(call: Callable[[], Any]) -> tuple[type, str] | str:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the exception is the result
        return type(e), str(e)
    return "ok"


BAD_TIMEOUTS = ["1", 1j, Decimal(1), float("nan"), float("inf"), -1, -0.5, 1e300, 2**64, 2**40, True, _Index(),
                -0.0, 2**31, -2**31 - 1, 1e10, 3.5]
BAD_FDS = [None, "3", 3.0, -1, 2**40, -2**40, _Fileno("3"), _Fileno(-4), 5000]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_timeouts_are_checked_as_cpython_checks_them(timeout: Any, pipe) -> None:
    _, w = pipe         # always writable: CPython's functions return at once for any valid timeout
    assert outcome(lambda: nselect.select([], [w], [], timeout)) == outcome(
        lambda: Kernel.select([], [w], [], timeout))
    ours, kernels = nselect.poll(), Kernel.poll()
    ours.register(w, OUT)
    kernels.register(w, OUT)
    if not (isinstance(timeout, (int, float)) and timeout < 0):     # negative is forever for poll
        assert outcome(lambda: ours.poll(timeout)) == outcome(lambda: kernels.poll(timeout))
    with nselect.epoll() as ep, Kernel.epoll() as kernel_ep:
        ep.register(w, select.EPOLLOUT)
        kernel_ep.register(w, select.EPOLLOUT)
        assert outcome(lambda: ep.poll(timeout)) == outcome(lambda: kernel_ep.poll(timeout))


@pytest.mark.parametrize("fd", BAD_FDS, ids=repr)
def test_descriptors_are_checked_as_cpython_checks_them(fd: Any) -> None:
    assert outcome(lambda: nselect.select([fd], [], [], 0)) == outcome(lambda: Kernel.select([fd], [], [], 0))
    if fd != 5000:
        assert outcome(lambda: nselect.poll().register(fd)) == outcome(lambda: Kernel.poll().register(fd))
        with nselect.epoll() as ep, Kernel.epoll() as kernel_ep:
            assert outcome(lambda: ep.register(fd)) == outcome(lambda: kernel_ep.register(fd))


@pytest.mark.parametrize("mask", [-1, 65536, 1.0, "1", 2**70, _Index(), True], ids=repr)
def test_event_masks_are_checked_as_cpython_checks_them(mask: Any, pipe) -> None:
    _, w = pipe
    assert outcome(lambda: nselect.poll().register(w, mask)) == outcome(lambda: Kernel.poll().register(w, mask))
    with nselect.epoll() as ep, Kernel.epoll() as kernel_ep:
        assert outcome(lambda: ep.register(w, mask)) == outcome(lambda: kernel_ep.register(w, mask))


@pytest.mark.parametrize("lists", [(5, [], []), ([], None, []), ([], [], "ab"), ((x for x in [0]), [], [])],
                         ids=repr)
def test_select_lists_are_checked_as_cpython_checks_them(lists: tuple[Any, ...]) -> None:
    assert outcome(lambda: nselect.select(*lists, 0)) == outcome(lambda: Kernel.select(*lists, 0))


@pytest.mark.parametrize("kwargs", [{"sizehint": 0}, {"sizehint": -2}, {"flags": 1}, {"sizehint": "x"},
                                    {"sizehint": 5, "flags": select.EPOLL_CLOEXEC}], ids=repr)
def test_epoll_constructor_arguments(kwargs: dict[str, Any]) -> None:
    def make(cls: Any) -> None:
        cls(**kwargs).close()
    assert outcome(lambda: make(nselect.epoll)) == outcome(lambda: make(Kernel.epoll))


@pytest.mark.parametrize("maxevents", [0, -2, "x", 1.0, 2**40], ids=repr)
def test_epoll_maxevents(maxevents: Any) -> None:
    with nselect.epoll() as ep, Kernel.epoll() as kernel_ep:
        assert outcome(lambda: ep.poll(0, maxevents)) == outcome(lambda: kernel_ep.poll(0, maxevents))


# --- selectors -----------------------------------------------------------------------------------------

@pytest.fixture
def patched_selectors() -> Iterator[None]:
    nselectors.patch()
    yield
    nselectors.unpatch()


@pytest.mark.usefixtures("stack", "patched_selectors")
@pytest.mark.parametrize("kind", ["DefaultSelector", "EpollSelector", "PollSelector", "SelectSelector"])
def test_selector_drives_an_echo_exchange(kind: str, pipe) -> None:
    """A one-greenlet echo server on a selector (accept, read, write) serving a client greenlet, with a
    pipe in the same selector telling the server when to stop."""
    r, w = pipe
    listener = NetsockSocket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    payload = bytes(range(256)) * 200

    def client() -> bytes:
        with NetsockSocket() as sock:
            sock.connect(listener.getsockname())
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        os.write(w, b"stop")
        return received

    peer = gevent.spawn(client)
    with getattr(selectors, kind)() as selector, listener:
        selector.register(listener, selectors.EVENT_READ, "accept")
        selector.register(r, selectors.EVENT_READ, "stop")
        pending: dict[NetsockSocket, bytes] = {}
        running = True
        while running:
            for key, events in selector.select(timeout=5):
                if key.data == "stop":
                    running = False
                elif key.data == "accept":
                    conn, _ = listener.accept()
                    conn.setblocking(False)
                    pending[conn] = b""
                    selector.register(conn, selectors.EVENT_READ, "conn")
                elif events & selectors.EVENT_READ:
                    conn = key.fileobj
                    data = conn.recv(65536)
                    pending[conn] += data
                    if not data:
                        selector.modify(conn, selectors.EVENT_WRITE, "conn")
                else:
                    conn = key.fileobj
                    sent = conn.send(pending[conn])
                    pending[conn] = pending[conn][sent:]
                    if not pending[conn]:
                        selector.unregister(conn)
                        conn.close()
        assert peer.get(timeout=5) == payload


# --- patch() and unpatch() ---------------------------------------------------------------------------------

def test_patch_and_unpatch_restore_the_originals() -> None:
    originals = (select.select, select.poll, select.epoll, select.POLLIN, select.EPOLLET, select.error)
    selector_attributes = (selectors.SelectSelector.__dict__["_select"], selectors.PollSelector._selector_cls,
                           selectors.EpollSelector._selector_cls)
    nselect.patch()
    nselectors.patch()
    try:
        nselect.patch()
        nselectors.patch()                      # idempotent
        assert (select.select, select.poll, select.epoll) == (nselect.select, nselect.poll, nselect.epoll)
        assert (select.POLLIN, select.EPOLLET, select.error) == originals[3:]
        assert selectors.PollSelector._selector_cls is nselect.poll
        assert selectors.EpollSelector._selector_cls is nselect.epoll
        assert selectors.DefaultSelector._selector_cls is nselect.epoll
        assert selectors.SelectSelector.__dict__["_select"].__func__ is nselect.select
        with selectors.DefaultSelector() as selector:
            assert isinstance(selector._selector, nselect.epoll)
        assert isinstance(select.epoll(), nselect.epoll)
    finally:
        nselectors.unpatch()
        nselect.unpatch()
    assert (select.select, select.poll, select.epoll, select.POLLIN, select.EPOLLET, select.error) == originals
    assert (selectors.SelectSelector.__dict__["_select"], selectors.PollSelector._selector_cls,
            selectors.EpollSelector._selector_cls) == selector_attributes
