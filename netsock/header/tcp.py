"""TCP (RFC 9293): header parse and build, options (RFC 7323, RFC 2018) and the checksum.

Options are laid out the way Linux writes them (``tcp_options_write``), so that our segments look
like a kernel's to middleboxes and to anyone reading a capture, and so that the per-segment
timestamp option sits 4-byte aligned behind two NOPs where receivers' fast paths look for it.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import Iterable, NamedTuple, Sequence

from . import Malformed
from .checksum import Buffer, checksum, checksum_views, pseudo_header_checksum

MIN_SIZE = 20
MAX_SIZE = 60
MAX_OPTIONS_SIZE = MAX_SIZE - MIN_SIZE
PROTOCOL_NUMBER = 6
CHECKSUM_OFFSET = 16

# Flags (byte 13 of the header).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

# Option kinds (IANA "TCP Option Kind Numbers").
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WS = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8
OPT_FAST_OPEN = 34          # RFC 7413: a cookie, or (empty) a request for one

FAST_OPEN_COOKIE_SIZES = range(4, 17, 2)    # RFC 7413 §4.1.1: 4 to 16 bytes, an even number

MAX_WINDOW_SCALE = 14       # RFC 7323 §2.3: a larger shift would let the window exceed 2**30
MAX_SACK_BLOCKS = 4         # what fits in 40 bytes beside the NOP NOP padding (3 beside timestamps)

_HDR = struct.Struct("!HHIIBBHHH")
_CHECKSUM = struct.Struct("!H")
_TIMESTAMP = struct.Struct("!II")
_SACK_BLOCK = struct.Struct("!II")

# Option layouts. A 4-byte lead word (padding, kind, length) is packed as one big-endian integer.
_MSS = struct.Struct("!BBH")                    # MSS 4 | mss
_NOP_WS = struct.Struct("!BBBB")                # NOP WS 3 shift
_NOP_NOP_SACKPERM = b"\x01\x01\x04\x02"
_ALIGNED_TIMESTAMP = struct.Struct("!III")      # lead word | tsval | tsecr
_NOP_NOP_TS = 0x0101080A
_SACKPERM_TS = 0x0402080A                       # SACK-permitted in place of the NOPs (SYN only)
_NOP_NOP_SACK = 0x01010500                      # | option length
# Indexed by the number of SACK blocks: lead word + blocks, and timestamp + lead word + blocks.
_SACK_LAYOUTS = tuple(struct.Struct("!I" + "II" * n) for n in range(MAX_SACK_BLOCKS + 1))
_TS_SACK_LAYOUTS = tuple(struct.Struct("!IIII" + "II" * n) for n in range(MAX_SACK_BLOCKS))


class TCPHeader(NamedTuple):
    src_port: int
    dst_port: int
    seq: int
    ack: int
    data_offset: int    # header length in bytes, options included
    flags: int
    window: int         # as on the wire: not yet shifted by the window scale
    checksum: int
    urgent: int


class TCPOptions(NamedTuple):
    """The options a TCP endpoint acts on; which ones count depends on the segment (MSS, window
    scale and SACK-permitted only on a SYN), a judgement left to the endpoint."""

    mss: int | None = None
    window_scale: int | None = None                 # clamped to MAX_WINDOW_SCALE
    sack_permitted: bool = False
    timestamp: tuple[int, int] | None = None        # (tsval, tsecr)
    sack_blocks: tuple[tuple[int, int], ...] = ()   # (start, end) sequence numbers, end exclusive
    fast_open: bytes | None = None                  # b"": a cookie request (RFC 7413, SYN and SYN-ACK only)


NO_OPTIONS = TCPOptions()


def parse(buf: Buffer) -> TCPHeader | Malformed:
    """Parse the fixed header and check the data offset against the segment.

    Checksum and options are separate steps (``checksum_valid``, ``parse_options`` on
    ``buf[MIN_SIZE:data_offset]``) so that the caller orders and counts them.
    """
    if len(buf) < MIN_SIZE:
        return Malformed.TRUNCATED
    src_port, dst_port, seq, ack, offset, flags, window, csum, urgent = _HDR.unpack_from(buf)
    data_offset = (offset >> 4) << 2
    if data_offset < MIN_SIZE:
        return Malformed.BAD_HEADER_LENGTH
    if data_offset > len(buf):
        return Malformed.TRUNCATED
    return TCPHeader(src_port, dst_port, seq, ack, data_offset, flags, window, csum, urgent)


def parse_options(options: Buffer) -> TCPOptions | Malformed:
    """Parse an options area as Linux's ``tcp_parse_options`` reads it.

    An option whose length byte is missing, below 2 or runs past the area makes the whole area
    BAD_OPTIONS (RFC 9293 MUST-7: be prepared for illegal lengths). As in Linux, unknown kinds are
    skipped, a known option of the wrong size and an MSS of zero are ignored, a repeated option
    overrides the earlier one, and everything after an end-of-list is ignored (a Fast Open option of
    an even wrong length takes back the cookie of an earlier one).
    """
    n = len(options)
    if not n:
        return NO_OPTIONS
    if n == 12:  # Linux's tcp_fast_parse_options case: the aligned timestamp alone
        first, tsval, tsecr = _ALIGNED_TIMESTAMP.unpack_from(options)
        if first == _NOP_NOP_TS:
            return TCPOptions(timestamp=(tsval, tsecr))
    mss = window_scale = timestamp = None
    sack_permitted = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    fast_open = None
    i = 0
    while i < n:
        kind = options[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 == n:
            return Malformed.BAD_OPTIONS
        length = options[i + 1]
        if length < 2 or i + length > n:
            return Malformed.BAD_OPTIONS
        if kind == OPT_TIMESTAMP:
            if length == 10:
                timestamp = _TIMESTAMP.unpack_from(options, i + 2)
        elif kind == OPT_SACK:
            if length >= 10 and not (length - 2) & 7:
                sack_blocks = tuple(_SACK_BLOCK.iter_unpack(options[i + 2:i + length]))
        elif kind == OPT_MSS:
            if length == 4:
                mss = ((options[i + 2] << 8) | options[i + 3]) or mss
        elif kind == OPT_WS:
            if length == 3:
                window_scale = min(options[i + 2], MAX_WINDOW_SCALE)
        elif kind == OPT_SACK_PERMITTED:
            if length == 2:
                sack_permitted = True
        elif kind == OPT_FAST_OPEN and not length & 1:    # (an odd length is ignored, an even wrong one
            cookie = bytes(options[i + 2:i + length])       # takes back an earlier cookie: Linux's)
            fast_open = cookie if not cookie or len(cookie) in FAST_OPEN_COOKIE_SIZES else None
        i += length
    return TCPOptions(mss, window_scale, sack_permitted, timestamp, sack_blocks, fast_open)


def encode_syn_options(mss: int, window_scale: int | None = None, sack_permitted: bool = False,
                       timestamp: tuple[int, int] | None = None, fast_open: bytes | None = None) -> bytes:
    """SYN / SYN-ACK options in Linux's order: MSS, SACK-permitted + timestamp, NOP + window scale,
    Fast Open.

    SACK-permitted fills the two bytes in front of the timestamp that would otherwise be NOPs, so the
    result is at most 20 bytes without Fast Open (at most 36 with a 16-byte cookie) and always a
    multiple of four. ``window_scale`` None omits the option (RFC 7323: then neither side scales);
    ``fast_open`` None omits Fast Open's, b"" makes it a cookie request.
    """
    out = _MSS.pack(OPT_MSS, 4, mss)
    if timestamp is not None:
        out += _ALIGNED_TIMESTAMP.pack(_SACKPERM_TS if sack_permitted else _NOP_NOP_TS, *timestamp)
    elif sack_permitted:
        out += _NOP_NOP_SACKPERM
    if window_scale is not None:
        out += _NOP_WS.pack(OPT_NOP, OPT_WS, 3, window_scale)
    if fast_open is not None:
        option = bytes((OPT_FAST_OPEN, 2 + len(fast_open))) + fast_open
        out += option + b"\x01" * (-len(option) & 3)   # NOPs after it, as Linux pads
    return out


def encode_options(timestamp: tuple[int, int] | None = None,
                   sack_blocks: Sequence[tuple[int, int]] = ()) -> bytes:
    """Options of a non-SYN segment: NOP NOP timestamp, then NOP NOP SACK blocks.

    At most 40 bytes: 3 SACK blocks fit beside the timestamp, 4 without it; blocks beyond that are
    dropped from the end, since RFC 2018 §4 puts the most recently received block first.
    """
    count = len(sack_blocks)
    if timestamp is None:
        if not count:
            return b""
        count = min(count, MAX_SACK_BLOCKS)
        return _SACK_LAYOUTS[count].pack(_NOP_NOP_SACK | (2 + 8 * count),
                                         *chain.from_iterable(sack_blocks[:count]))
    if not count:
        return _ALIGNED_TIMESTAMP.pack(_NOP_NOP_TS, *timestamp)
    count = min(count, MAX_SACK_BLOCKS - 1)
    return _TS_SACK_LAYOUTS[count].pack(_NOP_NOP_TS, timestamp[0], timestamp[1],
                                        _NOP_NOP_SACK | (2 + 8 * count),
                                        *chain.from_iterable(sack_blocks[:count]))


def build(buf: memoryview | bytearray, *, src_port: int, dst_port: int, seq: int, ack: int, flags: int,
          window: int, urgent: int = 0, options: bytes = b"", checksum: int = 0) -> None:
    """Write the header into the first 20 + len(options) bytes of ``buf``.

    ``options`` comes from the encoders above (a multiple of four, at most 40 bytes). ``checksum``
    stays 0 for ``compute_checksum`` + ``set_checksum``, or carries a value computed elsewhere
    (a pseudo-header sum for checksum offload, a segment replayed as is).
    """
    size = MIN_SIZE + len(options)
    if size & 3 or size > MAX_SIZE:
        raise ValueError(f"TCP options must be padded to a multiple of 4 bytes, at most 40: {len(options)}")
    _HDR.pack_into(buf, 0, src_port, dst_port, seq, ack, size << 2, flags, window, checksum, urgent)
    if options:
        buf[MIN_SIZE:size] = options


def set_checksum(buf: memoryview | bytearray, value: int) -> None:
    """Store ``value`` in the checksum field of the header at the start of ``buf``."""
    _CHECKSUM.pack_into(buf, CHECKSUM_OFFSET, value)


def compute_checksum(src: bytes, dst: bytes, header: Buffer, payload: Buffer = b"") -> int:
    """The checksum field value for a segment whose header (checksum field zero) and payload are given.

    ``src`` and ``dst`` are 4-byte (IPv4) or 16-byte (IPv6) addresses: the pseudo-header sums the
    same way for both. The header is a multiple of four bytes long, so the payload's 16-bit lanes
    line up without the odd-length bookkeeping of ``checksum_views``.
    """
    total = pseudo_header_checksum(PROTOCOL_NUMBER, src, dst, len(header) + len(payload))
    return ~checksum(payload, checksum(header, total)) & 0xFFFF


def checksum_valid(pseudo_sum: int, segment_views: Iterable[Buffer]) -> bool:
    """Whether the segment (header and payload, laid end to end) checks against ``pseudo_sum``,
    the ``pseudo_header_checksum`` of the network layer's addresses and the segment length."""
    return checksum_views(segment_views, pseudo_sum) == 0xFFFF
