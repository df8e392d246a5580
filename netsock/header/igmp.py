"""IGMP (RFC 2236 IGMPv2, RFC 3376 IGMPv3): queries, reports and leaves.

The IGMPv3 group record and the 8-bit floating-point code are shared with MLDv2 (RFC 3810 mirrors
RFC 3376 with 16-byte addresses), so ``mld`` builds on the helpers here.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Sequence

from . import Malformed
from .checksum import Buffer, checksum

PROTOCOL_NUMBER = 2
MIN_SIZE = 8                # IGMPv1/v2 messages, and the v3 report's fixed part
V3_QUERY_MIN_SIZE = 12
TTL = 1                     # every IGMP message is sent with TTL 1 and a Router Alert (RFC 3376 §4)

MEMBERSHIP_QUERY = 0x11
V1_REPORT = 0x12
V2_REPORT = 0x16
LEAVE_GROUP = 0x17
V3_REPORT = 0x22

V1_MAX_RESPONSE_TIME = 100  # tenths of a second: what a v1 query (code 0) allows (RFC 2236 §4)

ALL_SYSTEMS = bytes((224, 0, 0, 1))
ALL_ROUTERS = bytes((224, 0, 0, 2))
ALL_IGMPV3_ROUTERS = bytes((224, 0, 0, 22))

# Group record types (RFC 3376 §4.2.12; RFC 3810 §5.2.12 uses the same values).
MODE_IS_INCLUDE = 1
MODE_IS_EXCLUDE = 2
CHANGE_TO_INCLUDE = 3
CHANGE_TO_EXCLUDE = 4
ALLOW_NEW_SOURCES = 5
BLOCK_OLD_SOURCES = 6

_HDR = struct.Struct("!BBH4s")
_V3_QUERY = struct.Struct("!BBH4sBBH")
_V3_REPORT = struct.Struct("!BBHHH")
_RECORD = struct.Struct("!BBH")
_CHECKSUM = struct.Struct("!H")


class GroupRecord(NamedTuple):
    type: int
    group: bytes
    sources: tuple[bytes, ...] = ()
    aux_data: bytes = b""       # a multiple of 4 bytes; no record type defines any


class Query(NamedTuple):
    version: int                # 1, 2 or 3, told apart by length and code (RFC 3376 §7.1)
    max_response_code: int
    group: bytes                # 0.0.0.0 for a general query
    suppress: bool = False      # S flag (v3): routers skip their timer updates
    robustness: int = 0         # QRV (v3)
    qqic: int = 0               # querier's query interval code (v3)
    sources: tuple[bytes, ...] = ()

    @property
    def max_response_time(self) -> int:
        """In tenths of a second."""
        if self.version == 3:
            return decode_code(self.max_response_code)
        return self.max_response_code or V1_MAX_RESPONSE_TIME

    @property
    def query_interval(self) -> int:
        """In seconds (v3; 0 means the sender's default)."""
        return decode_code(self.qqic)


class Report(NamedTuple):
    type: int                   # V1_REPORT, V2_REPORT or LEAVE_GROUP
    group: bytes


class V3Report(NamedTuple):
    records: tuple[GroupRecord, ...]


IGMPMessage = Query | Report | V3Report


def decode_code(code: int) -> int:
    """The value of an 8-bit code (IGMPv3 Max Resp Code, IGMPv3/MLDv2 QQIC): below 128 the value
    itself, above a float with a 3-bit exponent and a 4-bit mantissa (RFC 3376 §4.1.1)."""
    if code < 0x80:
        return code
    return ((code & 0x0F) | 0x10) << (((code >> 4) & 0x07) + 3)


def encode_code(value: int) -> int:
    """The 8-bit code for ``value``, rounded down to what the format can express (saturating)."""
    if value < 0x80:
        return value
    for exp in range(8):
        mant = value >> (exp + 3)
        if mant < 0x20:
            return 0x80 | (exp << 4) | (mant & 0x0F)
    return 0xFF


def parse_group_records(buf: Buffer, at: int, count: int, address_size: int) -> tuple[GroupRecord, ...] | Malformed:
    """``count`` records from ``buf[at:]``; any running past the buffer make it TRUNCATED.

    Each record takes at least 4 + address_size bytes, so a hostile count ends the loop as soon as
    the buffer runs out, whatever it claims.
    """
    records = []
    end = len(buf)
    for _ in range(count):
        sources_at = at + 4 + address_size
        if sources_at > end:
            return Malformed.TRUNCATED
        record_type, aux_words, source_count = _RECORD.unpack_from(buf, at)
        aux_at = sources_at + source_count * address_size
        next_at = aux_at + aux_words * 4
        if next_at > end:
            return Malformed.TRUNCATED
        sources = tuple(bytes(buf[i:i + address_size]) for i in range(sources_at, aux_at, address_size))
        records.append(GroupRecord(record_type, bytes(buf[at + 4:sources_at]), sources, bytes(buf[aux_at:next_at])))
        at = next_at
    return tuple(records)


def encode_group_records(records: Sequence[GroupRecord]) -> bytes:
    return b"".join(_RECORD.pack(r.type, len(r.aux_data) >> 2, len(r.sources)) + r.group + b"".join(r.sources)
                    + r.aux_data for r in records)


def parse(message: Buffer) -> IGMPMessage | Malformed:
    """Parse an IGMP message (the checksum is a separate check: ``checksum_valid``).

    A query of 9 to 11 bytes is none of the three versions and BAD_TOTAL_LENGTH (RFC 3376 §7.1:
    ignore it); a type outside the ones above is BAD_FIELD. Bytes beyond a message's end are
    ignored (RFC 2236 §2.5).
    """
    size = len(message)
    if size < MIN_SIZE:
        return Malformed.TRUNCATED
    type_, code, _, group = _HDR.unpack_from(message)
    if type_ == MEMBERSHIP_QUERY:
        if size == MIN_SIZE:
            return Query(2 if code else 1, code, group)
        if size < V3_QUERY_MIN_SIZE:
            return Malformed.BAD_TOTAL_LENGTH
        flags, qqic, count = _V3_QUERY.unpack_from(message)[4:]
        end = V3_QUERY_MIN_SIZE + 4 * count
        if end > size:
            return Malformed.TRUNCATED
        sources = tuple(bytes(message[i:i + 4]) for i in range(V3_QUERY_MIN_SIZE, end, 4))
        return Query(3, code, group, bool(flags & 0x08), flags & 0x07, qqic, sources)
    if type_ in (V2_REPORT, LEAVE_GROUP, V1_REPORT):
        return Report(type_, group)
    if type_ == V3_REPORT:
        records = parse_group_records(message, MIN_SIZE, _V3_REPORT.unpack_from(message)[4], 4)
        return records if isinstance(records, Malformed) else V3Report(records)
    return Malformed.BAD_FIELD


def checksum_valid(message: Buffer) -> bool:
    return checksum(message) == 0xFFFF


def _set_checksum(buf: memoryview | bytearray, size: int) -> None:
    _CHECKSUM.pack_into(buf, 2, ~checksum(memoryview(buf)[:size]) & 0xFFFF)


def build(buf: memoryview | bytearray, type_: int, max_response_code: int, group: bytes) -> None:
    """Write an 8-byte v1/v2 message (query, report or leave) with its checksum."""
    _HDR.pack_into(buf, 0, type_, max_response_code, 0, group)
    _set_checksum(buf, MIN_SIZE)


def encode_v3_query(max_response_code: int, group: bytes, suppress: bool, robustness: int, qqic: int,
                    sources: Sequence[bytes] = ()) -> bytes:
    """A whole IGMPv3 query, checksum included."""
    message = bytearray(_V3_QUERY.pack(MEMBERSHIP_QUERY, max_response_code, 0, group,
                                       (suppress << 3) | robustness, qqic, len(sources)) + b"".join(sources))
    _set_checksum(message, len(message))
    return bytes(message)


def encode_v3_report(records: Sequence[GroupRecord]) -> bytes:
    """A whole IGMPv3 report, checksum included."""
    message = bytearray(_V3_REPORT.pack(V3_REPORT, 0, 0, 0, len(records)) + encode_group_records(records))
    _set_checksum(message, len(message))
    return bytes(message)
