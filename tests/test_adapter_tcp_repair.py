"""TCP_REPAIR on NetsockSocket, checked against the kernel's sockets over 127.0.0.1: a connection checkpointed
(its queues and sequence numbers read in repair mode, then closed without a word to the peer) and restored on
a new socket (sequence numbers, connect without a handshake, options, queues, repair off) carries on with its
peer, which never noticed; and every call of the way answers as the kernel's does. Needs CAP_NET_ADMIN, as on
Linux (CI runs as root)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

import gevent
import pytest

from netsock.adapter import NetsockSocket

from conftest import outcome

TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS, TCP_REPAIR_WINDOW = 19, 20, 21, 22, 29
TCP_TIMESTAMP = 24
NO_QUEUE, RECV_QUEUE, SEND_QUEUE = 0, 1, 2
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
TCP = socket.IPPROTO_TCP


def int32(value: int) -> int:
    """A 32-bit sequence number as setsockopt takes an int (a C int)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def migrate(make: Callable[..., Any]) -> list[Any]:
    """Checkpoint one end of a connection whose receive queue holds unread bytes, restore it on a new socket
    with bytes in flight that the peer never got, and talk on: every answer on the way."""
    trace: list[Any] = []
    with make() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        old = make()
        old.connect(listener.getsockname())
        peer = listener.accept()[0]
        with peer:
            peer.sendall(b"unread by old")
            gevent.sleep(0.05)
            trace += [outcome(lambda: old.getsockopt(TCP, TCP_QUEUE_SEQ)),       # not in repair
                      outcome(lambda: old.setsockopt(TCP, TCP_REPAIR_QUEUE, RECV_QUEUE)),
                      outcome(lambda: old.setsockopt(TCP, TCP_REPAIR, 2)), old.getsockopt(TCP, TCP_REPAIR)]
            old.setsockopt(TCP, TCP_REPAIR, 1)
            trace += [old.getsockopt(TCP, TCP_REPAIR), outcome(lambda: old.getsockopt(TCP, TCP_QUEUE_SEQ)),
                      outcome(lambda: old.recv(100)), outcome(lambda: old.recv(100, socket.MSG_PEEK)),
                      outcome(lambda: old.send(b"x")), outcome(lambda: old.setsockopt(TCP, TCP_REPAIR_QUEUE, 3))]
            old.setsockopt(TCP, TCP_REPAIR_QUEUE, RECV_QUEUE)
            received_seq, received = old.getsockopt(TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF, old.recv(100, socket.MSG_PEEK)
            old.setsockopt(TCP, TCP_REPAIR_QUEUE, SEND_QUEUE)
            sent_seq, unacknowledged = old.getsockopt(TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF, old.recv(100, socket.MSG_PEEK)
            trace += [old.getsockopt(TCP, TCP_REPAIR_QUEUE), received, unacknowledged,
                      outcome(lambda: old.setsockopt(TCP, TCP_QUEUE_SEQ, 5)),                # established
                      outcome(lambda: old.getsockopt(TCP, TCP_REPAIR_WINDOW, 16))]
            snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup = struct.unpack(
                "5I", old.getsockopt(TCP, TCP_REPAIR_WINDOW, 20))
            trace += [rcv_wup == received_seq, snd_wnd > 0, max_window >= snd_wnd, rcv_wnd > 0]
            clock = old.getsockopt(TCP, TCP_TIMESTAMP) & 0xFFFFFFFF
            local, remote = old.getsockname(), old.getpeername()
            old.close()                             # in repair: no FIN, no reset
            gevent.sleep(0.05)
            new = make()
            with new:
                new.setsockopt(TCP, TCP_REPAIR, 1)
                trace.append(outcome(lambda: new.setsockopt(TCP, TCP_REPAIR_OPTIONS, struct.pack("II", 2, 1400))))
                new.setsockopt(TCP, TCP_REPAIR_QUEUE, RECV_QUEUE)
                new.setsockopt(TCP, TCP_QUEUE_SEQ, int32(received_seq - len(received)))
                new.setsockopt(TCP, TCP_REPAIR_QUEUE, SEND_QUEUE)
                new.setsockopt(TCP, TCP_QUEUE_SEQ, int32(sent_seq))
                trace.append(new.getsockopt(TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF == sent_seq)
                new.bind(local)
                trace += [new.connect(remote), new.getsockopt(TCP, socket.TCP_INFO, 1)]     # established at once
                trace += [outcome(lambda: new.setsockopt(TCP, TCP_REPAIR_OPTIONS, struct.pack(
                    "II", TCPOPT_WINDOW, 15))), outcome(lambda: new.setsockopt(TCP, TCP_REPAIR_OPTIONS, struct.pack(
                        "II", TCPOPT_SACK_PERM, 1)))]
                new.setsockopt(TCP, TCP_REPAIR_OPTIONS, struct.pack("8I", TCPOPT_MSS, 65483, TCPOPT_WINDOW,
                                                                    7 | 7 << 16, TCPOPT_SACK_PERM, 0,
                                                                    TCPOPT_TIMESTAMP, 0))
                new.setsockopt(TCP, TCP_TIMESTAMP, int32(clock))
                trace.append(new.getsockopt(TCP, socket.TCP_MAXSEG))      # in repair: the MSS set
                new.setsockopt(TCP, TCP_REPAIR_QUEUE, RECV_QUEUE)
                trace.append(new.send(received))
                new.setsockopt(TCP, TCP_REPAIR_WINDOW, struct.pack("5I", snd_wl1, snd_wnd, max_window, rcv_wnd,
                                                                   rcv_wup))
                new.setsockopt(TCP, TCP_REPAIR_QUEUE, SEND_QUEUE)
                trace.append(new.send(b"in flight"))    # as if sent already: the peer has not got it
                trace.append(new.getsockopt(TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF == (sent_seq + 9) & 0xFFFFFFFF)
                new.setsockopt(TCP, TCP_REPAIR, 0)
                new.settimeout(5)
                peer.settimeout(5)
                trace += [new.getsockopt(TCP, TCP_REPAIR), new.recv(100)]
                new.sendall(b", then more")
                got = b""
                while len(got) < 20:
                    got += peer.recv(100)
                peer.sendall(b"answer")
                trace += [got, new.recv(100), new.getsockopt(TCP, socket.TCP_INFO, 6)[5] & 0b111]   # ts, sack, ws
    return trace


@pytest.mark.usefixtures("stack")
def test_a_checkpointed_connection_carries_on_where_it_is_restored_as_on_the_kernel() -> None:
    ours = migrate(NetsockSocket)
    assert ours == migrate(socket.socket)
    assert ours[-4:] == [b"unread by old", b"in flight, then more", b"answer", 0b111]


@pytest.mark.usefixtures("stack")
def test_repair_mode_takes_closed_and_established_sockets_only() -> None:
    for make in (socket.socket, NetsockSocket):
        with make() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            assert outcome(lambda: listener.setsockopt(TCP, TCP_REPAIR, 1)) == "EPERM", make
            with make(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                assert outcome(lambda: udp.setsockopt(TCP, TCP_REPAIR, 1)) == "ENOPROTOOPT", make
