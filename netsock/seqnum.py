"""TCP sequence-number arithmetic modulo 2**32 (netstack's ``seqnum``; RFC 9293 §3.4, RFC 1982).

Sequence numbers are plain ints in [0, 2**32) and sizes ints in [0, 2**32); these are functions
rather than a wrapper class because they run several times per segment.

The ordering is circular: ``seq_lt(a, b)`` means b lies ahead of a by 1 to 2**31, which is
meaningful only while the values compared are less than 2**31 apart. TCP keeps them so (windows
are at most 2**30 bytes, RFC 7323 §2.3). At exactly 2**31 apart each value is "less" than the
other, as with netstack's ``int32(a - b) < 0``. The range and window tests have no such limit:
they measure unsigned distance from the start of the range.

Python's ``&`` treats negative ints as infinite two's complement, so ``(a - b) & 0x80000000`` is bit
31 of the 32-bit difference without masking the difference first.
"""

from __future__ import annotations

_MASK = 0xFFFFFFFF


def seq_lt(a: int, b: int) -> bool:
    """a precedes b."""
    return (a - b) & 0x80000000 != 0


def seq_le(a: int, b: int) -> bool:
    """a precedes or equals b."""
    return a == b or (a - b) & 0x80000000 != 0


def seq_gt(a: int, b: int) -> bool:
    """a follows b."""
    return (b - a) & 0x80000000 != 0


def seq_ge(a: int, b: int) -> bool:
    """a follows or equals b."""
    return a == b or (b - a) & 0x80000000 != 0


def in_range(v: int, a: int, b: int) -> bool:
    """a <= v < b, going forward from a (empty when a == b)."""
    return (v - a) & _MASK < (b - a) & _MASK


def in_window(v: int, first: int, size: int) -> bool:
    """first <= v < first + size: v falls in the ``size`` numbers starting at ``first``."""
    return (v - first) & _MASK < size


def seq_add(a: int, n: int) -> int:
    """a advanced by n (n may be negative)."""
    return (a + n) & _MASK


def seq_sub(a: int, b: int) -> int:
    """Signed distance from b to a, in [-2**31, 2**31): positive when a follows b."""
    return ((a - b + 0x80000000) & _MASK) - 0x80000000


def overlap(a: int, a_size: int, b: int, b_size: int) -> bool:
    """[a, a + a_size) and [b, b + b_size) share a sequence number (an empty range shares none).

    Two non-empty arcs of the circle intersect exactly when one starts inside the other, so this
    holds for any sizes below 2**32, not only within 2**31.
    """
    return a_size > 0 and b_size > 0 and ((b - a) & _MASK < a_size or (a - b) & _MASK < b_size)
