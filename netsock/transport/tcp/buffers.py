"""The byte queues of a TCP connection.

``SendBuffer`` keeps unacknowledged and unsent bytes as the chunks the application wrote (bytes
objects, and views of them, are kept by reference, never copied; so is any buffer written with
MSG_ZEROCOPY, which its owner leaves alone until told it is free), addressed by sequence number; a
segment inside one
chunk is a memoryview of it, one spanning chunks is joined — or, for a link that writes scattered
payloads, handed over as the list of its pieces. ``ReceiveQueue`` holds in-order payloads
as memoryviews of the frames they arrived in, until a read copies them out — the only copy on the
receive path.
"""

from __future__ import annotations

from collections import deque
from typing import Union

Buffer = Union[bytes, bytearray, memoryview]
# A segment's payload as SendBuffer.get gives it: one piece, or views of several chunks (``scatter``).
Payload = Union[bytes, memoryview, list[memoryview]]

# Writes smaller than this are appended to a small last chunk instead of becoming chunks of their own,
# so that a stream of tiny writes does not make a segment out of many pieces.
_COALESCE = 4096


class SendBuffer:
    """Bytes from sequence ``start`` (the oldest unacknowledged) to ``end`` (the last written)."""

    __slots__ = ("_chunks", "_head", "start", "end", "_hint_index", "_hint_seq")

    def __init__(self, start: int) -> None:
        self._chunks: deque[bytes | memoryview] = deque()
        self._head = 0      # offset of ``start`` inside the first chunk
        self.start = start
        self.end = start
        # The chunk the last get() began in and the sequence number of its first byte: the next
        # segment lies there or a little after, so get() need not walk every chunk from the oldest.
        self._hint_index = 0
        self._hint_seq = start

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, data: Buffer, keep: bool = False) -> None:
        """``keep``: hold ``data`` itself, not a copy, and as a chunk of its own (MSG_ZEROCOPY)."""
        if not data:
            return
        chunks = self._chunks
        if keep:
            chunk: bytes | memoryview = memoryview(data)
            chunks.append(chunk)
        else:
            # Immutable bytes, or a view of them (a socket's send of a bytes object), are kept as they are;
            # anything its owner may change again is copied.
            chunk = data if type(data) is bytes or type(data) is memoryview and type(data.obj) is bytes \
                else bytes(data)
            last = chunks[-1] if chunks else None
            if len(chunk) < _COALESCE and type(last) is bytes and len(last) < _COALESCE:
                chunks[-1] = last + chunk       # the chunk still starts where it did: hints hold
            else:
                chunks.append(chunk)
        self.end += len(chunk)

    def get(self, seq: int, length: int, scatter: bool = False) -> Payload:
        """``length`` bytes from sequence ``seq`` (which must lie in [start, end - length]); with
        ``scatter``, bytes spanning several chunks come as a list of views of them, not joined."""
        if not length:
            return b""
        chunks = self._chunks
        index, base = self._hint_index, self._hint_seq
        if seq < base or index >= len(chunks):     # a retransmission behind the hint
            index, base = 0, self.start - self._head
        chunk = chunks[index]
        size = len(chunk)
        while seq >= base + size:
            base += size
            index += 1
            chunk = chunks[index]
            size = len(chunk)
        self._hint_index, self._hint_seq = index, base
        offset = seq - base
        take = size - offset
        if take >= length:
            return memoryview(chunk)[offset:offset + length] if length < size else chunk
        pieces = [memoryview(chunk)[offset:]]
        length -= take
        while length:
            index += 1
            chunk = chunks[index]
            take = min(len(chunk), length)
            pieces.append(memoryview(chunk)[:take])
            length -= take
        return pieces if scatter else b"".join(pieces)

    def trim(self, upto: int) -> None:
        """Forget everything before sequence ``upto`` (acknowledged)."""
        drop = min(upto, self.end) - self.start
        if drop <= 0:
            return
        self.start += drop
        head = self._head + drop
        chunks = self._chunks
        popped = 0
        while chunks and head >= len(chunks[0]):
            head -= len(chunks.popleft())
            popped += 1
        self._head = head
        if popped:
            self._hint_index -= popped
            if self._hint_index < 0:
                self._hint_index, self._hint_seq = 0, self.start - head

    def clear(self) -> None:
        self._chunks.clear()
        self._head = 0
        self.start = self.end
        self._hint_index, self._hint_seq = 0, self.start


class ReceiveQueue:
    """In-order received payloads waiting for the reader."""

    __slots__ = ("_views", "size")

    def __init__(self) -> None:
        self._views: deque[memoryview] = deque()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, view: memoryview) -> None:
        self._views.append(view)
        self.size += len(view)

    def read(self, count: int, peek: bool = False) -> bytes:
        """Up to ``count`` bytes, copied out (and consumed unless ``peek``)."""
        views = self._views
        if not views or count <= 0:
            return b""
        first = views[0]
        if len(first) >= count or len(views) == 1:
            out = bytes(first[:count])
            if not peek:
                if len(first) > count:
                    views[0] = first[count:]
                else:
                    views.popleft()
                self.size -= len(out)
            return out
        pieces = []
        taken = 0
        for view in views:
            need = count - taken
            if need <= 0:
                break
            pieces.append(view[:need])
            taken += min(len(view), need)
        out = b"".join(pieces)
        if not peek:
            self.discard(len(out))
        return out

    def read_into(self, buffer: memoryview) -> int:
        """Copy into ``buffer``; returns the byte count."""
        views = self._views
        filled = 0
        want = len(buffer)
        while views and filled < want:
            view = views[0]
            take = min(len(view), want - filled)
            buffer[filled:filled + take] = view[:take]
            filled += take
            if take < len(view):
                views[0] = view[take:]
            else:
                views.popleft()
        self.size -= filled
        return filled

    def discard(self, count: int) -> None:
        views = self._views
        self.size -= count
        while count and views:
            view = views[0]
            if len(view) > count:
                views[0] = view[count:]
                return
            count -= len(view)
            views.popleft()

    def clear(self) -> None:
        self._views.clear()
        self.size = 0
