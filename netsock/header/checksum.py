"""The Internet checksum (RFC 1071), pseudo-header sums and incremental update (RFC 1624).

All sums here are *folded but not complemented* 16-bit one's-complement sums, as netstack's
``header.Checksum`` returns them: they combine by one's-complement addition, and a header's
checksum field gets ``~sum & 0xffff``. A packet verifies when the sum over it (checksum field
included) is 0xffff.

The native extension (``netsock._native``, built from ``native/checksum.c`` by cffi) does the work
where it was compiled; the pure-Python path gives identical results so the package still imports
without a compiler.
"""

from __future__ import annotations

from typing import Iterable, Union

Buffer = Union[bytes, bytearray, memoryview]


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _py_checksum(buf: Buffer, initial: int = 0) -> int:
    """Pure-Python RFC 1071 sum: one big-integer add of the 16-bit words, folded.

    Summing the buffer as one big integer of 64-bit lanes would be faster still, but adding the
    bytes as a single integer and folding mod 0xffff is exact and needs no loop over words.
    """
    n = len(buf)
    if n & 1:
        buf = bytes(buf) + b"\x00"
    # The sum of 16-bit words mod 0xffff equals the big-endian integer mod 0xffff, since
    # 2**16 == 1 (mod 0xffff). A one's-complement sum is that residue, with 0 kept as 0 only for
    # an all-zero input (otherwise 0xffff).
    value = int.from_bytes(buf, "big")
    total = value % 0xFFFF
    if total == 0 and value:
        total = 0xFFFF
    if initial:
        total = _fold(total + initial)
    return total


try:  # pragma: no cover - which branch runs depends on the build
    from netsock._native import ffi as _ffi, lib as _lib  # type: ignore[import-not-found]

    def checksum(buf: Buffer, initial: int = 0) -> int:
        """Folded one's-complement sum of ``buf``, added to ``initial``."""
        if len(buf) < 128:  # below this the cost of calling into C exceeds the pure-Python sum
            return _py_checksum(buf, initial)
        return _lib.ns_checksum(_ffi.from_buffer(buf), len(buf), initial)

    USING_NATIVE = True
except ImportError:  # no compiler where this was installed
    checksum = _py_checksum
    USING_NATIVE = False

py_checksum = _py_checksum


def combine(a: int, b: int) -> int:
    """One's-complement addition of two folded sums."""
    total = a + b
    return (total & 0xFFFF) + (total >> 16)


def checksum_views(views: Iterable[Buffer], initial: int = 0) -> int:
    """Sum over buffers laid end to end (an odd-length buffer shifts the next one's byte lanes)."""
    total = initial
    odd = False
    for view in views:
        n = len(view)
        if not n:
            continue
        if odd:
            # The first byte of this view is the low byte of the previous word.
            total = combine(total, view[0])
            view = view[1:]
            n -= 1
            odd = False
            if not n:
                continue
        total = checksum(view, total)
        if n & 1:
            # checksum() padded with a zero low byte; the next view's first byte fills it.
            odd = True
    return total


def pseudo_header_checksum(protocol: int, src: Buffer, dst: Buffer, length: int) -> int:
    """Sum of the IPv4 (RFC 768/793) or IPv6 (RFC 8200 §8.1) pseudo-header."""
    if len(src) == 4:
        # Two 32-bit integers are cheaper to add in Python than two calls into checksum().
        a = int.from_bytes(src, "big")
        b = int.from_bytes(dst, "big")
        return _fold((a >> 16) + (a & 0xFFFF) + (b >> 16) + (b & 0xFFFF) + protocol + length)
    total = checksum(src, 0)
    total = checksum(dst, total)
    return combine(combine(total, protocol), _fold(length))


def adjust_checksum(checksum: int, old: Buffer, new: Buffer) -> int:
    """RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for any number of words: the checksum once the 16-bit words
    ``old`` (an even number of bytes) became ``new`` (as many)."""
    total = (~checksum & 0xFFFF) + (~int.from_bytes(old, "big") & ((1 << 8 * len(old)) - 1)) \
        + int.from_bytes(new, "big")
    while total >> 16:
        total = sum((total >> shift) & 0xFFFF for shift in range(0, total.bit_length(), 16))
    return ~total & 0xFFFF


def complete_checksum(frame: memoryview, csum_start: int, csum_offset: int) -> bool:
    """Fill in the checksum the kernel left partial (F_NEEDS_CSUM): the sum from ``csum_start`` to the
    end, seeded with the pseudo-header sum already in the field, stored complemented at
    ``csum_start + csum_offset`` — what the device would have done. False if that lies outside the frame.

    A zero result is stored as 0xFFFF, its one's-complement twin: both verify, and for UDP a zero
    would mean "no checksum".
    """
    field = csum_start + csum_offset
    if field + 2 > len(frame):
        return False
    value = ~checksum(frame[csum_start:]) & 0xFFFF or 0xFFFF
    frame[field] = value >> 8
    frame[field + 1] = value & 0xFF
    return True
