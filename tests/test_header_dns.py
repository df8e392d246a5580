"""DNS messages: queries we build are what scapy (an independent implementation) reads; responses
scapy builds, compressed or not, are what we read; hostile bytes come back as ``Malformed``."""

from __future__ import annotations

import logging
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # before scapy's import: no route warnings

from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRSOA, dns_compress  # noqa: E402

from netsock.header import Malformed, dns  # noqa: E402

SETTINGS = settings(max_examples=200, deadline=None)

labels = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,20}", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=5).map(".".join)
ttls = st.integers(0, 2**31 - 1)
u16 = st.integers(0, 0xFFFF)


def header(ident: int = 0x1234, flags: int = dns.QR, qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def wire_name(name: str) -> bytes:
    """The test's own encoder: uncompressed labels and the root."""
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label) + b"\0"


# --- queries --------------------------------------------------------------------------------------

@SETTINGS
@given(name=names, qtype=st.sampled_from([1, 28, 12, 5]), ident=u16)
def test_queries_read_back_by_scapy(name: str, qtype: int, ident: int) -> None:
    query = dns.build_query(name, qtype, ident)
    parsed = DNS(query.wire)
    assert (parsed.id, parsed.qr, parsed.opcode, parsed.rd, parsed.tc) == (ident, 0, 0, 1, 0)
    assert (parsed.qdcount, parsed.ancount, parsed.nscount, parsed.arcount) == (1, 0, 0, 0)
    assert (parsed.qd[0].qname, parsed.qd[0].qtype, parsed.qd[0].qclass) == ((name + ".").encode(), qtype, 1)
    assert query.question == dns.Question(name, qtype, dns.CLASS_IN)
    assert len(query.wire) == dns.HEADER_SIZE + len(wire_name(name)) + 4


def test_query_ids_are_random_and_a_final_dot_is_dropped() -> None:
    queries = [dns.build_query("example.test.", dns.RRType.A) for _ in range(16)]
    assert len({q.ident for q in queries}) > 1
    assert {q.question.name for q in queries} == {"example.test"}
    assert DNS(queries[0].wire).qd[0].qname == b"example.test."


@pytest.mark.parametrize("name", ["a..b", "a" * 64 + ".test", ".".join(["a" * 63] * 4), "café.test", r"a\.b.test"])
def test_names_that_cannot_be_encoded(name: str) -> None:
    with pytest.raises(ValueError):
        dns.encode_name(name)


def test_name_encoding_limits() -> None:
    assert dns.encode_name("") == dns.encode_name(".") == b"\0"
    longest = ".".join(["a" * 63] * 3 + ["a" * 61])      # 253 characters: 255 bytes on the wire
    assert len(dns.encode_name(longest)) == dns.MAX_NAME_LENGTH


def test_reverse_names() -> None:
    assert dns.reverse_name(socket.inet_aton("192.0.2.80")) == "80.2.0.192.in-addr.arpa"
    # RFC 3596 §2.5's example.
    assert dns.reverse_name(socket.inet_pton(socket.AF_INET6, "4321:0:1:2:3:4:567:89ab")) == (
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa")
    with pytest.raises(ValueError):
        dns.reverse_name(b"\1\2\3")


# --- responses built by scapy -----------------------------------------------------------------------

def _rdata(rtype: str) -> st.SearchStrategy:
    return {"A": st.binary(min_size=4, max_size=4), "AAAA": st.binary(min_size=16, max_size=16),
            "CNAME": names, "PTR": names, "NS": names, "TXT": st.text("abc xyz", min_size=1, max_size=20)}[rtype]


records = st.sampled_from(["A", "AAAA", "CNAME", "PTR", "NS", "TXT"]).flatmap(
    lambda rtype: st.tuples(st.just(rtype), names, ttls, _rdata(rtype)))


def scapy_record(rtype: str, owner: str, ttl: int, rdata: object) -> DNSRR:
    if rtype in ("A", "AAAA"):
        rdata = socket.inet_ntop(socket.AF_INET if rtype == "A" else socket.AF_INET6, rdata)  # type: ignore[arg-type]
    elif rtype == "TXT":
        rdata = [rdata]
    return DNSRR(rrname=owner, type=rtype, ttl=ttl, rdata=rdata)


def expected_data(rtype: str, rdata: object) -> object:
    if rtype == "TXT":
        text = str(rdata).encode()
        return bytes([len(text)]) + text          # other types keep their raw rdata
    return rdata


def scapy_view(data: bytes) -> tuple:
    """How scapy reads a message, in our terms: its independent decoder is the reference."""
    theirs = DNS(data)

    def name(raw: bytes) -> str:
        return raw.decode().removesuffix(".")

    def record(rr: DNSRR) -> dns.Record:
        if rr.type in (1, 28):
            data = socket.inet_pton(socket.AF_INET if rr.type == 1 else socket.AF_INET6, rr.rdata)
        elif rr.type == 6:
            data = dns.SOA(name(rr.mname), name(rr.rname), rr.serial, rr.refresh, rr.retry, rr.expire, rr.minimum)
        elif rr.type == 16:
            data = b"".join(bytes([len(t)]) + t for t in rr.rdata)
        else:
            data = name(rr.rdata)
        return dns.Record(name(rr.rrname), rr.type, rr.rclass, rr.ttl, data)

    return (theirs.id, tuple(dns.Question(name(q.qname), q.qtype, q.qclass) for q in theirs.qd),
            tuple(record(rr) for rr in theirs.an), tuple(record(rr) for rr in theirs.ns))


@SETTINGS
@given(ident=u16, rcode=st.integers(0, 5), aa=st.booleans(), ra=st.booleans(), question=names,
       qtype=st.sampled_from([1, 28, 12]), answers=st.lists(records, max_size=6),
       soa=st.none() | st.tuples(names, ttls, st.integers(0, 2**32 - 1)), compress=st.booleans())
def test_responses_built_by_scapy(ident: int, rcode: int, aa: bool, ra: bool, question: str, qtype: int,
                                  answers: list, soa: tuple | None, compress: bool) -> None:
    authority = [] if soa is None else [DNSRRSOA(rrname=soa[0], ttl=soa[1], mname="ns." + soa[0],
                                                 rname="hostmaster." + soa[0], serial=7, refresh=3600,
                                                 retry=600, expire=86400, minimum=soa[2])]
    packet = DNS(id=ident, qr=1, aa=int(aa), rd=1, ra=int(ra), rcode=rcode,
                 qd=[DNSQR(qname=question, qtype=qtype)], an=[scapy_record(*r) for r in answers], ns=authority)
    data = bytes(dns_compress(packet)) if compress else bytes(packet)
    msg = dns.parse(data)
    assert isinstance(msg, dns.Message)
    assert (msg.ident, msg.questions, msg.answers, msg.authority) == scapy_view(data)
    assert (msg.is_response, msg.rcode, msg.truncated, msg.opcode) == (True, rcode, False, 0)
    assert bool(msg.flags & dns.AA) == aa and bool(msg.flags & dns.RA) == ra and msg.flags & dns.RD
    # Uncompressed, the message also holds exactly what was put in. (Compressed, not always: scapy's
    # compressor can point a name's suffix at a longer name, and its own decoder then agrees with us.)
    if not compress:
        assert msg.questions == (dns.Question(question, qtype, dns.CLASS_IN),)
        assert msg.answers == tuple(dns.Record(owner, dns.RRType[rtype] if rtype != "TXT" else 16, dns.CLASS_IN,
                                               ttl, expected_data(rtype, rdata))
                                    for rtype, owner, ttl, rdata in answers)
        expected_soa = [] if soa is None else [
            dns.SOA("ns." + soa[0], "hostmaster." + soa[0], 7, 3600, 600, 86400, soa[2])]
        assert [r.data for r in msg.authority] == expected_soa


def test_matching_a_response_to_its_query() -> None:
    query = dns.build_query("Web.Example.test", dns.RRType.A, 4242)

    def response(**fields: object) -> dns.Message:
        values = {"id": 4242, "qr": 1, "qd": [DNSQR(qname="wEB.example.TEST", qtype="A")], **fields}
        msg = dns.parse(bytes(DNS(**values)))
        assert isinstance(msg, dns.Message)
        return msg

    assert dns.is_response_to(response(), query), "names compare case-insensitively"
    assert not dns.is_response_to(response(id=4243), query)
    assert not dns.is_response_to(response(qr=0), query)
    assert not dns.is_response_to(response(opcode=2), query)
    assert not dns.is_response_to(response(qd=[DNSQR(qname="web.example.test", qtype="AAAA")]), query)
    assert not dns.is_response_to(response(qd=[DNSQR(qname="www.example.test", qtype="A")]), query)
    assert not dns.is_response_to(response(qd=[]), query)


# --- hostile and odd input ----------------------------------------------------------------------------

@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(dns.parse(data), (dns.Message, Malformed))


@SETTINGS
@given(cut=st.integers(0, 200), position=st.integers(0, 200), value=st.integers(0, 255))
def test_damaged_responses_never_raise(cut: int, position: int, value: int) -> None:
    packet = DNS(id=1, qr=1, qd=[DNSQR(qname="www.example.test")],
                 an=[DNSRR(rrname="www.example.test", type="CNAME", rdata="web.example.test"),
                     DNSRR(rrname="web.example.test", type="A", rdata="192.0.2.80")])
    data = bytearray(bytes(dns_compress(packet)))
    data[position % len(data)] = value
    assert isinstance(dns.parse(bytes(data[:cut])), (dns.Message, Malformed))
    assert isinstance(dns.parse(bytes(data)), (dns.Message, Malformed))


def test_compression_pointers_must_point_backwards() -> None:
    at_12 = b"\xc0\x0c"
    assert dns.parse(header(qd=1) + at_12 + b"\0\1\0\1") is Malformed.BAD_FIELD, "a pointer to itself"
    loop = header(qd=1) + b"\x01a\xc0\x0c" + b"\0\1\0\1"    # a label, then back to that label
    assert dns.parse(loop) is Malformed.BAD_FIELD
    forward = header(qd=1) + b"\xc0\x0e" + b"\x01a\0" + b"\0\1\0\1"
    assert dns.parse(forward) is Malformed.BAD_FIELD
    # A chain of pointers, each further back: legitimate.
    chained = header(qd=3) + b"\x04test\0\0\1\0\1" + b"\x07example\xc0\x0c\0\1\0\1" + b"\x03www\xc0\x16\0\1\0\1"
    msg = dns.parse(chained)
    assert isinstance(msg, dns.Message)
    assert [q.name for q in msg.questions] == ["test", "example.test", "www.example.test"]


def test_pointer_into_a_record_is_allowed_but_bounded_by_the_name_length() -> None:
    # Four labels of 63 bytes make 257 bytes of name: two too many.
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\0"
    assert dns.parse(header(qd=1) + long_name + b"\0\1\0\1") is Malformed.BAD_FIELD
    three = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\0"        # 193 bytes, fine
    via_pointer = b"\x3f" + b"b" * 63 + b"\xc0\x0c"                        # 64 more: too long
    assert dns.parse(header(qd=2) + three + b"\0\1\0\1" + via_pointer + b"\0\1\0\1") is Malformed.BAD_FIELD


@pytest.mark.parametrize("label_type", [0x40, 0x80])
def test_reserved_label_types(label_type: int) -> None:
    assert dns.parse(header(qd=1) + bytes([label_type | 1]) + b"a\0\0\1\0\1") is Malformed.BAD_FIELD


def test_rdata_that_does_not_fit_its_type() -> None:
    question = wire_name("a.test") + b"\0\1\0\1"
    a_record = wire_name("a.test") + struct.pack("!HHIH", 1, 1, 60, 5) + b"\1\2\3\4\5"
    assert dns.parse(header(qd=1, an=1) + question + a_record) is Malformed.BAD_FIELD
    target = wire_name("b.test")
    cname = wire_name("a.test") + struct.pack("!HHIH", 5, 1, 60, len(target) + 1) + target + b"\0"
    assert dns.parse(header(qd=1, an=1) + question + cname) is Malformed.BAD_FIELD
    overlong = wire_name("a.test") + struct.pack("!HHIH", 1, 1, 60, 40) + b"\1\2\3\4"
    assert dns.parse(header(qd=1, an=1) + question + overlong) is Malformed.TRUNCATED


def test_a_truncated_message_keeps_its_whole_records_only_when_the_sender_says_so() -> None:
    question = wire_name("a.test") + b"\0\1\0\1"
    record = wire_name("a.test") + struct.pack("!HHIH", 1, 1, 60, 4) + b"\xc0\0\2\1"
    cut = header(qd=1, an=3) + question + record + record[:7]
    assert dns.parse(cut) is Malformed.TRUNCATED
    msg = dns.parse(header(flags=dns.QR | dns.TC, qd=1, an=3) + question + record + record[:7])
    assert isinstance(msg, dns.Message) and msg.truncated
    assert msg.answers == (dns.Record("a.test", 1, 1, 60, b"\xc0\0\2\1"),)
    assert dns.parse(header()[:11]) is Malformed.TRUNCATED


def test_ttls_with_the_top_bit_set_are_zero() -> None:
    question = wire_name("a.test") + b"\0\1\0\1"
    record = wire_name("a.test") + struct.pack("!HHIH", 1, 1, 0x80000001, 4) + b"\xc0\0\2\1"
    msg = dns.parse(header(qd=1, an=1) + question + record)
    assert isinstance(msg, dns.Message) and msg.answers[0].ttl == 0


def test_label_bytes_are_escaped_so_one_label_never_reads_as_two() -> None:
    msg = dns.parse(header(qd=1) + b"\x07a.b\\c d\x02\xff\x00\x04test\0" + b"\0\1\0\1")
    assert isinstance(msg, dns.Message)
    assert msg.questions[0].name == "a\\.b\\\\c\\032d.\\255\\000.test"
    one, two = (dns.parse(header(qd=1) + name + b"\0\1\0\1") for name in (b"\x03a.b\0", b"\x01a\x01b\0"))
    assert isinstance(one, dns.Message) and isinstance(two, dns.Message)
    assert (one.questions[0].name, two.questions[0].name) == ("a\\.b", "a.b")
