"""MSG_ZEROCOPY on one TCP connection, as Linux's msg_zerocopy_realloc and __msg_zerocopy_callback keep it:
each send call that queues bytes with it takes the next number of a 32-bit counter, and its buffer is held
(not copied) until the peer has acknowledged its last byte and the call has returned (a blocking one queues
its bytes over several writes); then a completion naming the calls done goes to the error queue, extending
the one queued last if that ends just before. A connection that ends frees every buffer at once, as Linux's
write-queue purge does."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ...waiter import EventMask
from ..datagram import complete_zerocopy

if TYPE_CHECKING:
    from .endpoint import TCPEndpoint

MASK = 0xFFFFFFFF


class ZeroCopySends:
    """The next send call's number, the calls whose bytes are not all acknowledged: [last byte (an
    unwrapped sequence number), number], and whether the newest of them is still under way (its call has
    not returned: it may queue more)."""

    __slots__ = ("next_id", "pending", "open")

    def __init__(self) -> None:
        self.next_id = 0
        self.pending: deque[list[int]] = deque()
        self.open = False

    def written(self, last: int, continues: bool) -> None:
        """A write whose last byte is ``last``; ``continues``: it goes on with the send call of the write
        before, whose number it shares."""
        pending = self.pending
        self.open = True
        if continues and pending and pending[-1][1] == (self.next_id - 1) & MASK:
            pending[-1][0] = last
            return
        pending.append([last, self.next_id])
        self.next_id = (self.next_id + 1) & MASK

    def call_returned(self, ep: TCPEndpoint) -> None:
        """The send call under way has returned: once its bytes are all acknowledged, it is complete."""
        self.open = False
        if self.pending and ep.snd is not None:
            self.acked(ep, ep.snd.una)

    def acked(self, ep: TCPEndpoint, ack: int) -> None:
        """Everything below ``ack`` is acknowledged: the calls it completes are reported (not one whose
        send call is still under way)."""
        pending = self.pending
        first = last = None
        while pending and pending[0][0] < ack and not (self.open and len(pending) == 1):
            _, number = pending.popleft()
            if first is None:
                first = number
            last = number
        if first is not None:
            self._report(ep, first, last)  # type: ignore[arg-type]

    def release(self, ep: TCPEndpoint) -> None:
        """The connection ended: no byte will be sent again, every buffer is free."""
        if self.pending:
            first, last = self.pending[0][1], self.pending[-1][1]
            self.pending.clear()
            self._report(ep, first, last)

    def _report(self, ep: TCPEndpoint, first: int, last: int) -> None:
        """Queue the completion; over a loopback the bytes were copied (to the receiving socket), as Linux
        says of a loopback's (SO_EE_CODE_ZEROCOPY_COPIED)."""
        route = ep.route
        complete_zerocopy(ep.error_list(), first, last, route is not None and (route.loop or route.nic.loopback))
        ep.waiter_queue.notify(EventMask.ERR)
