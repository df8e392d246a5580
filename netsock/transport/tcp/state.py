"""The connection states (RFC 9293 §3.3.2)."""

from __future__ import annotations

import enum


class TCPState(enum.IntEnum):
    """The RFC 9293 states, numbered as Linux numbers them (so TCP_INFO reads the same)."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RCVD = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSED = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
