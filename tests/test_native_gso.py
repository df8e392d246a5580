"""Software GSO in C (native/segment.c): the pieces it writes to an fd are those of ``gso.segment_tcp``,
byte for byte, whatever the headers, options, sizes and flags, and wherever the packet is split
between its two buffers; checksums verified by a sum written here; bad input refused unwritten.

The C side exists only where the extension was built (``test_fdbased_offload`` runs the endpoint
over both implementations).
"""

from __future__ import annotations

import errno
import random
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from netsock.link import fdbased
from netsock.header.gso import segment_tcp

FIN, PSH, ACK, CWR = 0x01, 0x08, 0x10, 0x80
TIMESTAMPS = b"\x01\x01\x08\x0a" + bytes(range(1, 9))
SACK = b"\x01\x01\x05\x0a" + bytes(range(8))              # one block
SACK3 = b"\x01\x01\x05\x1a" + bytes(range(24))            # three blocks
TCP_OPTIONS = [b"", TIMESTAMPS, TIMESTAMPS + SACK, SACK3, TIMESTAMPS + SACK3]
IP_OPTIONS = [b"", b"\x01" * 4, b"\x94\x04\x00\x00" + b"\x01" * 36]     # NOPs; router alert, to 60 bytes
ETHERNET = bytes.fromhex("020000000001 020000000002 0800")


def ones_sum(data: bytes) -> int:
    """RFC 1071 by the book: 16-bit big-endian words, end-around carry (independent of netsock)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header(packet: bytes) -> bytes:
    """The TCP pseudo-header of a raw IPv4/IPv6 TCP packet (RFC 9293 §3.1, RFC 8200 §8.1)."""
    if packet[0] >> 4 == 4:
        return packet[12:20] + struct.pack(">BBH", 0, 6, len(packet) - (packet[0] & 0x0F) * 4)
    return packet[8:40] + struct.pack(">IxxxB", len(packet) - 40, 6)


def tcp_checksum_ok(packet: bytes) -> bool:
    ip_len = (packet[0] & 0x0F) * 4 if packet[0] >> 4 == 4 else 40
    return ones_sum(pseudo_header(packet) + packet[ip_len:]) == 0xFFFF


def super_segment(v6: bool, ip_options: bytes, tcp_options: bytes, payload: bytes, seq: int, flags: int,
                  ident: int) -> bytes:
    """A TCP packet as TCP hands it to a GSO link: lengths of the whole, the TCP checksum field the
    pseudo-header sum (which the cut ignores), the IPv4 header checksum stale."""
    tcp_len = 20 + len(tcp_options)
    tcp = struct.pack(">HHIIBBHHH", 40000, 5001, seq, 77, (tcp_len // 4) << 4, flags, 512, 0x1234, 0) + tcp_options
    if v6:
        src, dst = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")
        ip = struct.pack(">IHBB", 6 << 28, (tcp_len + len(payload)) & 0xFFFF, 6, 64) + src + dst
    else:
        ip_len = 20 + len(ip_options)
        ip = struct.pack(">BBHHHBBH4s4s", 0x40 | ip_len // 4, 0, (ip_len + tcp_len + len(payload)) & 0xFFFF, ident,
                         0x4000, 64, 6, 0xBEEF, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])) + ip_options
    return ip + tcp + payload


if fdbased._native is not None:
    ffi, lib = fdbased._native.ffi, fdbased._native.lib

    @contextmanager
    def seqpacket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
        """Boundary-preserving like a TUN fd; room for 64 KB of pieces; reads that don't block."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b:
            for sock in (a, b):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
                sock.setblocking(False)
            yield a, b

    @pytest.fixture
    def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
        with seqpacket_pair() as sockets:
            yield sockets

    def gso_write(fd: int, frame: bytes, split: int, link_len: int, gso_size: int,
                  mtu: int = 65535) -> tuple[int, object]:
        """ns_gso_write with ``frame`` held as two buffers, the first ``split`` bytes long."""
        result = ffi.new("ns_gso_result *")
        head, data = frame[:split], frame[split:]
        return lib.ns_gso_write(fd, head, len(head), data, len(data), link_len, gso_size, mtu, result), result

    def drain(sock: socket.socket) -> list[bytes]:
        frames = []
        while True:
            try:
                frames.append(sock.recv(1 << 17))
            except BlockingIOError:
                return frames

    @st.composite
    def cases(draw: st.DrawFn) -> tuple[bytes, bytes, int, int]:
        """(link header, packet, split, gso_size): any IPv4/IPv6 TCP super-segment, cut at most ~60 ways."""
        v6 = draw(st.booleans())
        size = draw(st.one_of(st.integers(0, 3000), st.integers(3000, 65535 - 120)))
        payload = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
        packet = super_segment(v6, b"" if v6 else draw(st.sampled_from(IP_OPTIONS)), draw(st.sampled_from(TCP_OPTIONS)),
                               payload, draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 255)),
                               draw(st.integers(0, 0xFFFF)))
        gso_size = draw(st.integers(max(1, size // 60), max(1, size // 60) + 2000))
        link = draw(st.sampled_from([b"", ETHERNET]))
        headers_end = len(link) + len(packet) - size
        split = draw(st.one_of(st.just(headers_end), st.integers(0, len(link) + len(packet))))
        return link, packet, split, gso_size

    @settings(max_examples=300, deadline=None)
    @given(cases())
    # Across the sequence-number and identification wraps; the headers split between the buffers;
    # a piece split between them after an odd number of bytes.
    @example((b"", super_segment(False, b"", TIMESTAMPS, bytes(range(256)) * 20, 2**32 - 2000,
                                 CWR | PSH | FIN | ACK, 0xFFFF), 52, 1448))
    @example((ETHERNET, super_segment(True, b"", TIMESTAMPS + SACK, b"\xff" * 4097, 0, PSH | ACK, 0), 14 + 61, 1427))
    @example((b"", super_segment(False, b"", b"", bytes(range(256)) * 20, 7, ACK, 1), 40 + 1000, 999))
    def test_the_c_cut_is_segment_tcp_byte_for_byte(case: tuple[bytes, bytes, int, int]) -> None:
        link, packet, split, gso_size = case
        expected = [link + piece for piece in segment_tcp(packet, gso_size)]
        with seqpacket_pair() as (a, b):
            status, result = gso_write(a.fileno(), link + packet, split, len(link), gso_size)
            frames = drain(b)
        assert status == lib.NS_GSO_OK
        assert frames == expected
        assert (result.pieces, result.sent, result.bytes, result.error) == (
            len(expected), len(expected), sum(map(len, expected)), 0)

    @settings(max_examples=100, deadline=None)
    @given(cases())
    def test_every_piece_is_a_valid_segment_of_the_original(case: tuple[bytes, bytes, int, int]) -> None:
        """Checked against the original, not against segment_tcp: lengths, sequence numbers,
        identification, flags on the first/last piece only, checksums by ``ones_sum``."""
        link, packet, split, gso_size = case
        with seqpacket_pair() as (a, b):
            gso_write(a.fileno(), link + packet, split, len(link), gso_size)
            pieces = drain(b)
        v4 = packet[0] >> 4 == 4
        ip_len = (packet[0] & 0x0F) * 4 if v4 else 40
        tcp_len = (packet[ip_len + 12] >> 4) * 4
        headers = ip_len + tcp_len
        seq, flags = struct.unpack_from(">I", packet, ip_len + 4)[0], packet[ip_len + 13]
        payload = b""
        for index, frame in enumerate(pieces):
            assert frame[:len(link)] == link
            piece = frame[len(link):]
            chunk = piece[headers:]
            assert 0 < len(chunk) <= gso_size or len(packet) == headers
            if v4:
                assert struct.unpack_from(">H", piece, 2)[0] == len(piece)
                ident = struct.unpack_from(">H", packet, 4)[0]
                assert struct.unpack_from(">H", piece, 4)[0] == (ident + index) & 0xFFFF
                assert ones_sum(piece[:ip_len]) == 0xFFFF
                unchanged = [(0, 2), (6, 10), (12, ip_len)]
            else:
                assert struct.unpack_from(">H", piece, 4)[0] == len(piece) - 40
                unchanged = [(0, 4), (6, 40)]
            for start, end in unchanged + [(ip_len, ip_len + 4), (ip_len + 8, ip_len + 13),
                                           (ip_len + 14, ip_len + 16), (ip_len + 18, headers)]:
                assert piece[start:end] == packet[start:end]
            assert struct.unpack_from(">I", piece, ip_len + 4)[0] == (seq + len(payload)) & 0xFFFFFFFF
            last = index == len(pieces) - 1
            mask = (0xFF if last else ~(FIN | PSH)) & (0xFF if index == 0 else ~CWR)
            assert piece[ip_len + 13] == flags & mask
            assert tcp_checksum_ok(piece)
            payload += chunk
        assert payload == packet[headers:]

    def test_a_piece_whose_checksum_sums_to_zero_is_stored_as_zero(pair: tuple[socket.socket, socket.socket]) -> None:
        """TCP has no "no checksum" value: ~0xffff is sent as 0, as segment_tcp and Linux send it."""
        packet = bytearray(super_segment(False, b"", b"", bytes(4), 1, ACK, 0))
        packet[36:38] = bytes(2)
        # The last payload word brings the sum over the pseudo-header and segment to 0xffff.
        packet[-2:] = (0xFFFF - ones_sum(pseudo_header(bytes(packet)) + packet[20:])).to_bytes(2, "big")
        status, _ = gso_write(pair[0].fileno(), bytes(packet), 40, 0, 100)
        assert status == lib.NS_GSO_OK
        (piece,) = drain(pair[1])
        assert piece[36:38] == b"\x00\x00"
        assert [piece] == segment_tcp(bytes(packet), 100)
        assert tcp_checksum_ok(piece)

    def test_no_payload_is_one_segment_with_all_its_flags(pair: tuple[socket.socket, socket.socket]) -> None:
        packet = super_segment(True, b"", TIMESTAMPS, b"", 5, FIN | PSH | ACK | CWR, 0)
        status, result = gso_write(pair[0].fileno(), packet, len(packet), 0, 1000)
        assert (status, result.pieces, result.sent) == (lib.NS_GSO_OK, 1, 1)
        (piece,) = drain(pair[1])
        assert [piece] == segment_tcp(packet, 1000)
        assert piece[:56] == packet[:56] and piece[58:] == packet[58:]     # all but the checksum
        assert tcp_checksum_ok(piece)

    V4 = super_segment(False, b"", b"", bytes(3000), 1, ACK, 0)
    V6 = super_segment(True, b"", b"", bytes(3000), 1, ACK, 0)
    MALFORMED = {
        "empty": (b"", 1448),
        "not IP": (b"\x50" + V4[1:], 1448),
        "IPv4 header under 20 bytes": (b"\x44" + V4[1:], 1448),
        "UDP": (V4[:9] + b"\x11" + V4[10:], 1448),
        "IPv6 extension header": (V6[:6] + b"\x00" + V6[7:], 1448),
        "truncated IPv4 header": (V4[:19], 1448),
        "truncated TCP header": (V4[:30], 1448),
        "TCP offset under 5": (V4[:32] + b"\x40" + V4[33:], 1448),
        "TCP options past the end": (V4[:20 + 12] + b"\xf0" + V4[33:40], 1448),
        "segment size 0": (V4, 0),
        "negative segment size": (V4, -1448),
    }

    @pytest.mark.parametrize("packet, gso_size", MALFORMED.values(), ids=MALFORMED.keys())
    def test_bad_input_is_refused_and_nothing_written(pair: tuple[socket.socket, socket.socket], packet: bytes,
                                                      gso_size: int) -> None:
        status, result = gso_write(pair[0].fileno(), packet, min(len(packet), 40), 0, gso_size)
        assert status == lib.NS_GSO_MALFORMED
        assert (result.pieces, result.sent, result.bytes) == (0, 0, 0)
        assert drain(pair[1]) == []
        with pytest.raises(ValueError):     # the reference refuses the same
            segment_tcp(packet, gso_size)

    def test_a_link_header_longer_than_copied_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
        link = bytes(lib.NS_GSO_MAX_LINK_HEADER + 1)
        status, _ = gso_write(pair[0].fileno(), link + V4, len(link) + 40, len(link), 1448)
        assert status == lib.NS_GSO_MALFORMED
        assert drain(pair[1]) == []

    @pytest.mark.parametrize("packet, gso_size", [(V4, 1461), (V6, 1441)], ids=["v4", "v6"])
    def test_pieces_over_the_mtu_are_refused(pair: tuple[socket.socket, socket.socket], packet: bytes,
                                             gso_size: int) -> None:
        status, _ = gso_write(pair[0].fileno(), packet, 40, 0, gso_size, 1500)
        assert status == lib.NS_GSO_TOO_LONG
        assert drain(pair[1]) == []
        status, _ = gso_write(pair[0].fileno(), packet, 40, 0, gso_size - 1, 1500)   # one byte less fits
        assert status == lib.NS_GSO_OK

    @pytest.mark.parametrize("v6", [False, True], ids=["v4 total length", "v6 payload length"])
    def test_the_longest_pieces_fill_their_length_field(pair: tuple[socket.socket, socket.socket], v6: bool) -> None:
        packet = super_segment(v6, b"", b"", random.randbytes(70000), 1, ACK, 0)
        longest = 0xFFFF - 20 - (0 if v6 else 20)
        for gso_size in (longest + 1, 1 << 20):
            status, _ = gso_write(pair[0].fileno(), packet, 40, 0, gso_size, 1 << 20)
            assert status == lib.NS_GSO_MALFORMED
            with pytest.raises(ValueError):
                segment_tcp(packet, gso_size)
        status, result = gso_write(pair[0].fileno(), packet, 40, 0, longest, 1 << 20)
        assert (status, result.sent) == (lib.NS_GSO_OK, 2)
        assert drain(pair[1]) == segment_tcp(packet, longest)

    def test_writing_stops_at_the_first_failure_and_says_why(pair: tuple[socket.socket, socket.socket]) -> None:
        a, b = pair
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)       # room for a few frames only
        packet = super_segment(False, b"", b"", bytes(60000), 1, ACK, 0)
        status, result = gso_write(a.fileno(), packet, 40, 0, 1000)
        assert status == lib.NS_GSO_OK
        assert result.pieces == 60
        assert 0 < result.sent < 60 and result.error == errno.EAGAIN
        frames = drain(b)
        assert frames == segment_tcp(packet, 1000)[:result.sent]
        assert result.bytes == sum(map(len, frames))
        status, result = gso_write(-1, packet, 40, 0, 1000)
        assert (status, result.pieces, result.sent, result.bytes, result.error) == (
            lib.NS_GSO_OK, 60, 0, 0, errno.EBADF)
