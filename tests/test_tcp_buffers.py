"""TCP's send buffer: bytes addressed by sequence number, handed out as views of what was written."""

from __future__ import annotations

import pytest

from netsock.transport.tcp.buffers import SendBuffer


def filled(*writes: bytes) -> SendBuffer:
    buffer = SendBuffer(1000)
    for data in writes:
        buffer.append(data)
    return buffer


def test_bytes_inside_one_write_are_a_view_of_it() -> None:
    write = bytes(range(256)) * 40
    got = filled(write).get(1100, 5000)
    assert type(got) is memoryview and got.obj is write and bytes(got) == write[100:5100]


@pytest.mark.parametrize("scatter", [False, True], ids=["joined", "scattered"])
def test_bytes_spanning_writes_are_joined_or_handed_as_their_pieces(scatter: bool) -> None:
    writes = [bytes([n]) * 10_000 for n in range(4)]
    buffer = filled(*writes)
    got = buffer.get(1000 + 9_000, 22_000, scatter)
    expected = b"".join(writes)[9_000:31_000]
    if scatter:
        assert type(got) is list and [len(piece) for piece in got] == [1_000, 10_000, 10_000, 1_000]
        assert [piece.obj for piece in got] == writes            # views of the writes: nothing copied
        assert b"".join(got) == expected
    else:
        assert got == expected


def test_acknowledged_bytes_are_forgotten_and_what_follows_is_still_found() -> None:
    buffer = filled(b"a" * 5000, b"b" * 5000, b"c" * 5000)
    buffer.get(1000 + 6000, 1000)
    buffer.trim(1000 + 8000)
    assert len(buffer) == 7000
    assert b"".join(buffer.get(1000 + 8000, 7000, True)) == b"b" * 2000 + b"c" * 5000
