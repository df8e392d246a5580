"""SO_TXTIME / SCM_TXTIME and SO_MAX_PACING_RATE on datagram sockets: a datagram leaves no earlier than the time
its write gives, and no sooner than the pacing rate lets it, as Linux's fq queueing discipline holds it (netsock
plays a host whose qdisc is fq): in the order written, one not yet due holding back those after it; a past time
is now; one more than ten seconds ahead is dropped; past a flow's first ten MTUs, each its length at the rate
after the last. Against the stack's own clock, whose monotonic seconds stand for CLOCK_MONOTONIC; the socket
calls beside the kernel's are at the end."""

from __future__ import annotations

import socket
import struct
import time
from contextlib import closing
from typing import Any

import gevent
import pytest
from scapy.layers.inet import IP
from scapy.packet import Raw

from netsock.adapter import NetsockSocket
from netsock.tcpip import (ErrNoBufferSpace, FullAddress, SendableControlMessages, SockOpt, WriteOptions)
from netsock.transport.datagram import CLOCK_MONOTONIC, CLOCK_REALTIME

from conftest import PEER, StackHarness, addr, outcome

SO_TXTIME = SCM_TXTIME = 61


@pytest.fixture
def h() -> StackHarness:
    harness = StackHarness()
    harness.times: list[float] = []   # type: ignore[attr-defined]
    harness.link.on_outbound = lambda info: harness.times.append(harness.clock.now())  # type: ignore[attr-defined]
    return harness


def sender(h: StackHarness, clock: int = CLOCK_MONOTONIC) -> Any:
    ep = h.udp(4000)
    ep.set_sock_opt(SockOpt.TXTIME, (clock, 0))
    return ep


def send(ep: Any, payload: bytes, txtime: int | None = None) -> None:
    ep.write(payload, WriteOptions(to=FullAddress(0, addr(PEER), 9), control=SendableControlMessages(txtime=txtime)))


def departures(h: StackHarness, start: float) -> list[tuple[float, bytes]]:
    sent = [(round(t - start, 6), bytes(IP(raw)[Raw].load)) for t, raw in zip(h.times, h.sent_raw())]
    h.times.clear()    # type: ignore[attr-defined]
    return sent


def ns(seconds: float) -> int:
    return round(seconds * 1e9)


def test_a_datagram_leaves_at_its_time_and_those_after_it_wait_their_turn(h: StackHarness) -> None:
    ep = sender(h)
    start = h.clock.now()
    send(ep, b"at 5 ms", ns(start + 0.005))
    send(ep, b"no time")                        # behind one held: waits with it
    send(ep, b"at 2 ms", ns(start + 0.002))     # due before the one ahead of it: waits for it too
    send(ep, b"at 8 ms", ns(start + 0.008))
    assert h.sent_raw() == []
    h.clock.advance(0.01)
    assert departures(h, start) == [(0.005, b"at 5 ms"), (0.005, b"no time"), (0.005, b"at 2 ms"),
                                    (0.008, b"at 8 ms")]
    send(ep, b"in the past", ns(start))          # nothing held: a past time is now
    assert departures(h, start) == [(0.01, b"in the past")]
    assert len(h.stack.timers) == 0


def test_one_beyond_the_horizon_is_dropped_which_ip_recverr_reports(h: StackHarness) -> None:
    ep = sender(h)
    now = h.clock.now()
    send(ep, b"too far", ns(now + 10.5))
    assert ep.stats.send_errors.send_to_network_failed.value == 1
    ep.set_sock_opt(SockOpt.RECEIVE_ERRORS, True)
    with pytest.raises(ErrNoBufferSpace):
        send(ep, b"too far", ns(now + 10.5))
    send(ep, b"far enough", ns(now + 9.5))
    h.clock.advance(10)
    assert departures(h, now) == [(9.5, b"far enough")]


def test_the_wall_clock_is_taken_from_now(h: StackHarness) -> None:
    ep = sender(h, CLOCK_REALTIME)
    start = h.clock.now()
    send(ep, b"in 3 ms", h.clock.now_ns() + ns(0.003))
    h.clock.advance(0.01)
    assert departures(h, start) == [(0.003, b"in 3 ms")]


def test_held_datagrams_still_leave_after_the_socket_closes(h: StackHarness) -> None:
    """Linux's queued skbs keep their socket: closing it does not take them back."""
    ep = sender(h)
    start = h.clock.now()
    send(ep, b"later", ns(start + 0.004))
    ep.close()
    h.clock.advance(0.01)
    assert departures(h, start) == [(0.004, b"later")]


def test_a_paced_socket_sends_past_its_first_ten_mtus_one_datagram_its_length_at_the_rate_after_the_last(
        h: StackHarness) -> None:
    ep = h.udp(4000)
    ep.set_sock_opt(SockOpt.MAX_PACING_RATE, 148_000)   # a 1,480-byte IP datagram every 10 ms
    start = h.clock.now()
    for i in range(15):
        send(ep, bytes([i]) * 1452)
    h.clock.advance(1)
    times = [t for t, _ in departures(h, start)]
    assert times == [0.0] * 12 + [0.01, 0.02, 0.03]     # (10 Ethernet MTUs, 15,140 bytes, before pacing starts)
    send(ep, b"after a rest")
    assert [t for t, _ in departures(h, start)] == [1.0]


def test_a_paced_socket_at_rate_0_sends_one_datagram_a_second(h: StackHarness) -> None:
    ep = h.udp(4000)
    ep.set_sock_opt(SockOpt.MAX_PACING_RATE, 0)
    start = h.clock.now()
    for _ in range(13):
        send(ep, bytes(1452))
    h.clock.advance(5)
    assert [t for t, _ in departures(h, start)][10:] == [0.0, 0.0, 1.0]


# --- the socket calls, beside the kernel's ------------------------------------------------------------


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_the_option_and_the_control_message_answer_as_on_the_kernel(kind: int) -> None:
    values = [struct.pack("iI", 1, 0), struct.pack("iI", 11, 3), struct.pack("iI", 1, 4), struct.pack("iI", 0, 0),
              struct.pack("iI", 99, 0), 5, struct.pack("iI", 1, 1) + b"\0", struct.pack("iI", -1, 0)]
    traces = []
    for make in (socket.socket, NetsockSocket):
        with closing(make(socket.AF_INET, kind)) as sock, closing(make(socket.AF_INET, socket.SOCK_DGRAM)) as plain:
            trace = [outcome(lambda: sock.getsockopt(socket.SOL_SOCKET, SO_TXTIME, size)) for size in (0, 4, 8)]
            for value in values:
                trace.append((outcome(lambda: sock.setsockopt(socket.SOL_SOCKET, SO_TXTIME, value)),
                              outcome(lambda: sock.getsockopt(socket.SOL_SOCKET, SO_TXTIME, 8))))
            later = struct.pack("Q", time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 10**6)
            trace.append(outcome(lambda: plain.sendmsg([b"x"], [(socket.SOL_SOCKET, SCM_TXTIME, later)], 0,
                                                       ("127.0.0.1", 9))))
            if kind == socket.SOCK_DGRAM:
                trace.append(outcome(lambda: sock.sendmsg([b"x"], [(socket.SOL_SOCKET, SCM_TXTIME, later[:4])], 0,
                                                          ("127.0.0.1", 9))))
            traces.append(trace)
    assert traces[1] == traces[0]


@pytest.mark.usefixtures("stack")
def test_a_datagram_sent_for_later_arrives_then() -> None:
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as sender_:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        sender_.setsockopt(socket.SOL_SOCKET, SO_TXTIME, struct.pack("iI", time.CLOCK_MONOTONIC, 0))
        start = time.monotonic()
        due = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 50_000_000
        sender_.sendmsg([b"later"], [(socket.SOL_SOCKET, SCM_TXTIME, struct.pack("Q", due))], 0,
                        receiver.getsockname())
        gevent.sleep(0.02)
        with pytest.raises(BlockingIOError):
            receiver.recv(100, socket.MSG_DONTWAIT)
        assert receiver.recv(100) == b"later"
        assert time.monotonic() - start >= 0.045
