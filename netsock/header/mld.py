"""MLD (RFC 2710 MLDv1, RFC 3810 MLDv2): multicast listener queries, reports and dones.

MLD messages are ICMPv6 messages; ``parse`` takes the whole message with the IPv6 facts RFC 2710
§3 and RFC 3810 §5.1.14/§5.2.13 require of it (link-local source, hop limit 1, a Router Alert in
the hop-by-hop header), and the encoders return the body that ``icmpv6.build_header`` completes.
Packets sent carry the hop-by-hop header ``ipv6.build_router_alert`` writes. The multicast address
records, their types and the QQIC format are IGMPv3's (``igmp.GroupRecord``, ``igmp.encode_code``).
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Sequence

from . import Malformed
from .checksum import Buffer
from .icmpv6 import MIN_SIZE, MLD_DONE, MLD_QUERY, MLD_REPORT, MLDV2_REPORT
from .igmp import GroupRecord, decode_code, encode_group_records, parse_group_records
from .ipv6 import ROUTER_ALERT_MLD, is_link_local, is_unspecified

HOP_LIMIT = 1
V1_SIZE = 24                # whole message, ICMPv6 header included
V2_QUERY_MIN_SIZE = 28

_V1 = struct.Struct("!HH16s")
_V2_QUERY = struct.Struct("!HH16sBBH")
_V2_REPORT = struct.Struct("!HH")


class Query(NamedTuple):
    version: int                # 1 (24 bytes) or 2 (28 and more), told apart by length (RFC 3810 §8.1)
    max_response_code: int
    group: bytes                # :: for a general query
    suppress: bool = False      # S flag (v2): routers skip their timer updates
    robustness: int = 0         # QRV (v2)
    qqic: int = 0               # querier's query interval code (v2)
    sources: tuple[bytes, ...] = ()

    @property
    def max_response_delay(self) -> int:
        """In milliseconds."""
        return decode_max_response_code(self.max_response_code) if self.version == 2 else self.max_response_code

    @property
    def query_interval(self) -> int:
        """In seconds (v2; 0 means the sender's default)."""
        return decode_code(self.qqic)


class Report(NamedTuple):
    type: int                   # MLD_REPORT (v1) or MLD_DONE
    group: bytes


class V2Report(NamedTuple):
    records: tuple[GroupRecord, ...]


MLDMessage = Query | Report | V2Report


def decode_max_response_code(code: int) -> int:
    """MLDv2's 16-bit Maximum Response Code in milliseconds: below 32768 the value itself, above a
    float with a 3-bit exponent and a 12-bit mantissa (RFC 3810 §5.1.3)."""
    if code < 0x8000:
        return code
    return ((code & 0x0FFF) | 0x1000) << (((code >> 12) & 0x07) + 3)


def encode_max_response_code(delay: int) -> int:
    """The code for ``delay`` milliseconds, rounded down to what the format can express (saturating)."""
    if delay < 0x8000:
        return delay
    for exp in range(8):
        mant = delay >> (exp + 3)
        if mant < 0x2000:
            return 0x8000 | (exp << 12) | (mant & 0x0FFF)
    return 0xFFFF


def parse(message: Buffer, src: bytes, hop_limit: int, router_alert: int | None) -> MLDMessage | Malformed:
    """Parse and validate the MLD ``message`` (ICMPv6 header included) from ``src``.

    ``router_alert`` is the value of the packet's hop-by-hop Router Alert option (see
    ``ipv6.parse_options``), None without one. Reports and dones may come from :: (RFC 3590: sent
    before the link-local address passed DAD); queries only from a link-local address. A query of
    25 to 27 bytes is BAD_TOTAL_LENGTH (RFC 3810 §8.1: ignore it); a failed check or a type that
    is not MLD is BAD_FIELD.
    """
    size = len(message)
    if size < MIN_SIZE:
        return Malformed.TRUNCATED
    type_ = message[0]
    if type_ not in (MLD_QUERY, MLD_REPORT, MLD_DONE, MLDV2_REPORT):
        return Malformed.BAD_FIELD
    if hop_limit != HOP_LIMIT or router_alert != ROUTER_ALERT_MLD:
        return Malformed.BAD_FIELD
    if not is_link_local(src) and (type_ == MLD_QUERY or not is_unspecified(src)):
        return Malformed.BAD_FIELD
    if type_ == MLDV2_REPORT:
        records = parse_group_records(message, MIN_SIZE, _V2_REPORT.unpack_from(message, 4)[1], 16)
        return records if isinstance(records, Malformed) else V2Report(records)
    if size < V1_SIZE:
        return Malformed.TRUNCATED
    code, _, group = _V1.unpack_from(message, 4)
    if type_ != MLD_QUERY:
        return Report(type_, group)
    if size == V1_SIZE:
        return Query(1, code, group)
    if size < V2_QUERY_MIN_SIZE:
        return Malformed.BAD_TOTAL_LENGTH
    flags, qqic, count = _V2_QUERY.unpack_from(message, 4)[3:]
    end = V2_QUERY_MIN_SIZE + 16 * count
    if end > size:
        return Malformed.TRUNCATED
    sources = tuple(bytes(message[i:i + 16]) for i in range(V2_QUERY_MIN_SIZE, end, 16))
    return Query(2, code, group, bool(flags & 0x08), flags & 0x07, qqic, sources)


def encode_v1(max_response_delay: int, group: bytes) -> bytes:
    """The body of an MLDv1 query, report or done (which one is the ICMPv6 type)."""
    return _V1.pack(max_response_delay, 0, group)


def encode_v2_query(max_response_code: int, group: bytes, suppress: bool, robustness: int, qqic: int,
                    sources: Sequence[bytes] = ()) -> bytes:
    return _V2_QUERY.pack(max_response_code, 0, group, (suppress << 3) | robustness, qqic,
                          len(sources)) + b"".join(sources)


def encode_v2_report(records: Sequence[GroupRecord]) -> bytes:
    return _V2_REPORT.pack(0, len(records)) + encode_group_records(records)
