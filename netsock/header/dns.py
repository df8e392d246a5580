"""DNS messages (RFC 1035 §4), as far as a stub resolver needs them.

Queries are built here; responses are parsed into the header, the questions and the answer and
authority records, with A, AAAA, CNAME, PTR, NS and SOA data decoded (other types keep their raw
rdata). The additional section is not decoded: a stub resolver takes nothing from it, and it is
where cache-poisoning attempts put their records (RFC 5452 §6).

Names are text in presentation form: labels joined by dots, without the final dot (the root is
''). Label bytes outside printable ASCII are escaped as ``\\DDD`` and a dot or backslash inside a
label as ``\\.`` / ``\\\\`` (RFC 1035 §5.1), so a hostile label can never pass for two labels.
A compression pointer (§4.1.4) must point strictly before the piece of name that contains it: that
is where every legitimate target is, and it makes loops impossible and the work per name bounded.
"""

from __future__ import annotations

import enum
import re
import secrets
import struct
from typing import NamedTuple

from . import Malformed

HEADER_SIZE = 12
PORT = 53
MAX_UDP_SIZE = 512          # RFC 1035 §4.2.1: the largest UDP message without EDNS
MAX_NAME_LENGTH = 255       # wire form, length octets included (§2.3.4)
MAX_LABEL_LENGTH = 63
CLASS_IN = 1

# Header flag bits (the 16 bits after the ID).
QR = 0x8000                 # a response
OPCODE_MASK = 0x7800
AA = 0x0400                 # authoritative answer
TC = 0x0200                 # truncated: retry over TCP (§4.2.2)
RD = 0x0100                 # recursion desired
RA = 0x0080                 # recursion available
RCODE_MASK = 0x000F


class RRType(enum.IntEnum):
    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    AAAA = 28


class Rcode(enum.IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_RECORD_TAIL = struct.Struct("!HHIH")
_SOA_TAIL = struct.Struct("!IIIII")
_ADDRESS_LENGTHS: dict[int, int] = {RRType.A: 4, RRType.AAAA: 16}
_NAME_TYPES = frozenset((RRType.CNAME, RRType.PTR, RRType.NS))

_PLAIN_LABEL = re.compile(rb"[!-\-/-\[\]-~]*")      # printable ASCII but '.' and '\'


class Question(NamedTuple):
    name: str
    qtype: int
    qclass: int = CLASS_IN


class SOA(NamedTuple):
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int        # RFC 2308: the TTL of negative answers


RData = bytes | str | SOA   # A/AAAA: address bytes; CNAME/PTR/NS: a name; SOA; else raw rdata


class Record(NamedTuple):
    name: str
    rtype: int
    rclass: int
    ttl: int
    data: RData


class Message(NamedTuple):
    ident: int
    flags: int
    questions: tuple[Question, ...]
    answers: tuple[Record, ...]
    authority: tuple[Record, ...]

    @property
    def is_response(self) -> bool:
        return bool(self.flags & QR)

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11

    @property
    def rcode(self) -> int:
        return self.flags & RCODE_MASK

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TC)


class Query(NamedTuple):
    """A query as sent: its ID and question (to match the response against) and its bytes."""

    ident: int
    question: Question
    wire: bytes


# --- building -------------------------------------------------------------------------------------

def encode_name(name: str) -> bytes:
    """The wire form of a host or reverse-lookup name; a final dot is allowed.

    Raises ValueError for what cannot be such a name: an empty or over-long label, non-ASCII text,
    escapes, or more than 255 bytes in all.
    """
    if "\\" in name:
        raise ValueError(f"escaped names are not supported: {name!r}")
    name = name.removesuffix(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("ascii")
            if not 0 < len(raw) <= MAX_LABEL_LENGTH:
                raise ValueError(f"empty or over-long label in {name!r}")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > MAX_NAME_LENGTH:
        raise ValueError(f"name longer than {MAX_NAME_LENGTH} bytes: {name!r}")
    return bytes(out)


def build_query(name: str, qtype: int, ident: int | None = None) -> Query:
    """A recursive (RD) query with one question; the ID is random unless given (RFC 5452 §9.2:
    an unpredictable ID is half of what keeps off-path spoofers out, the source port the other)."""
    if ident is None:
        ident = secrets.randbits(16)
    wire = _HEADER.pack(ident, RD, 1, 0, 0, 0) + encode_name(name) + _QUESTION_TAIL.pack(qtype, CLASS_IN)
    return Query(ident, Question(name.removesuffix("."), qtype, CLASS_IN), wire)


def reverse_name(address: bytes) -> str:
    """The PTR name of an address: ``d.c.b.a.in-addr.arpa`` or the 32 nibbles under ``ip6.arpa``."""
    if len(address) == 4:
        return ".".join(str(b) for b in reversed(address)) + ".in-addr.arpa"
    if len(address) == 16:
        return ".".join(reversed(address.hex())) + ".ip6.arpa"
    raise ValueError(f"an address is 4 or 16 bytes, not {len(address)}")


def same_name(a: str, b: str) -> bool:
    """Names compare case-insensitively (RFC 4343); escaped bytes are never letters, so ASCII
    lower-casing of the presentation form is exact."""
    return a.lower() == b.lower()


def is_response_to(msg: Message, query: Query) -> bool:
    """Does ``msg`` answer ``query``: a response with its ID and its question (RFC 5452 §9.1)?"""
    if not msg.is_response or msg.ident != query.ident or msg.opcode != 0 or len(msg.questions) != 1:
        return False
    question = msg.questions[0]
    return (question.qtype == query.question.qtype and question.qclass == query.question.qclass
            and same_name(question.name, query.question.name))


# --- parsing --------------------------------------------------------------------------------------

def parse(buf: bytes | memoryview) -> Message | Malformed:
    """Parse a message; never raises.

    A message that ends early is TRUNCATED, unless its TC bit says the sender cut it: then the
    records that arrived whole are returned (the resolver retries over TCP anyway). Bad label
    types, pointers that do not point backwards, over-long names and rdata that does not fit its
    type are BAD_FIELD.
    """
    data = bytes(buf)
    if len(data) < HEADER_SIZE:
        return Malformed.TRUNCATED
    ident, flags, qdcount, ancount, nscount, _ = _HEADER.unpack_from(data)
    pos = HEADER_SIZE
    questions: list[Question] = []
    sections: tuple[list[Record], list[Record]] = ([], [])
    for _ in range(qdcount):
        question = _read_question(data, pos)
        if isinstance(question, Malformed):
            return _cut(ident, flags, questions, sections) if _sender_cut(question, flags) else question
        questions.append(question[0])
        pos = question[1]
    for records, count in zip(sections, (ancount, nscount)):
        for _ in range(count):
            record = _read_record(data, pos)
            if isinstance(record, Malformed):
                return _cut(ident, flags, questions, sections) if _sender_cut(record, flags) else record
            records.append(record[0])
            pos = record[1]
    return _cut(ident, flags, questions, sections)


def _sender_cut(why: Malformed, flags: int) -> bool:
    return why is Malformed.TRUNCATED and bool(flags & TC)


def _cut(ident: int, flags: int, questions: list[Question],
         sections: tuple[list[Record], list[Record]]) -> Message:
    return Message(ident, flags, tuple(questions), tuple(sections[0]), tuple(sections[1]))


def _read_question(data: bytes, pos: int) -> tuple[Question, int] | Malformed:
    name = _read_name(data, pos)
    if isinstance(name, Malformed):
        return name
    text, pos = name
    if pos + _QUESTION_TAIL.size > len(data):
        return Malformed.TRUNCATED
    qtype, qclass = _QUESTION_TAIL.unpack_from(data, pos)
    return Question(text, qtype, qclass), pos + _QUESTION_TAIL.size


def _read_record(data: bytes, pos: int) -> tuple[Record, int] | Malformed:
    name = _read_name(data, pos)
    if isinstance(name, Malformed):
        return name
    owner, pos = name
    if pos + _RECORD_TAIL.size > len(data):
        return Malformed.TRUNCATED
    rtype, rclass, ttl, rdlength = _RECORD_TAIL.unpack_from(data, pos)
    start = pos + _RECORD_TAIL.size
    end = start + rdlength
    if end > len(data):
        return Malformed.TRUNCATED
    if ttl & 0x80000000:
        ttl = 0                 # RFC 2181 §8: a TTL with the top bit set means zero
    rdata = _read_rdata(data, rtype, start, end)
    if isinstance(rdata, Malformed):
        return rdata
    return Record(owner, rtype, rclass, ttl, rdata), end


def _read_rdata(data: bytes, rtype: int, start: int, end: int) -> RData | Malformed:
    size = _ADDRESS_LENGTHS.get(rtype)
    if size is not None:
        return data[start:end] if end - start == size else Malformed.BAD_FIELD
    if rtype in _NAME_TYPES:
        name = _read_name(data, start)
        if isinstance(name, Malformed):
            return name
        return name[0] if name[1] == end else Malformed.BAD_FIELD
    if rtype == RRType.SOA:
        mname = _read_name(data, start)
        if isinstance(mname, Malformed):
            return mname
        rname = _read_name(data, mname[1])
        if isinstance(rname, Malformed):
            return rname
        if rname[1] + _SOA_TAIL.size != end:
            return Malformed.BAD_FIELD
        return SOA(mname[0], rname[0], *_SOA_TAIL.unpack_from(data, rname[1]))
    return data[start:end]


def _read_name(data: bytes, pos: int) -> tuple[str, int] | Malformed:
    """The name at ``pos`` and the offset just after it (after its first pointer, if any)."""
    labels: list[str] = []
    wire_length = 1                 # the root label
    after = -1
    piece_start = pos               # where the piece of name being read begins
    size = len(data)
    while True:
        if pos >= size:
            return Malformed.TRUNCATED
        length = data[pos]
        if length == 0:
            return ".".join(labels), (pos + 1 if after < 0 else after)
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= size:
                return Malformed.TRUNCATED
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= piece_start:
                return Malformed.BAD_FIELD
            if after < 0:
                after = pos + 2
            pos = piece_start = target
            continue
        if kind:
            return Malformed.BAD_FIELD  # the 0x40 and 0x80 label types (RFC 6891 §5 retired them)
        wire_length += 1 + length
        if wire_length > MAX_NAME_LENGTH:
            return Malformed.BAD_FIELD
        end = pos + 1 + length
        if end > size:
            return Malformed.TRUNCATED
        labels.append(_label_text(data[pos + 1:end]))
        pos = end


def _label_text(label: bytes) -> str:
    if _PLAIN_LABEL.fullmatch(label):
        return label.decode("ascii")
    out = []
    for byte in label:
        if byte in b".\\":
            out.append("\\" + chr(byte))
        elif 0x21 <= byte <= 0x7E:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)
