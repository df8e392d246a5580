"""SOL_PACKET options on packet sockets, as Linux's packet_setsockopt / packet_getsockopt answer them
(measured on Linux 6 on kernel packet sockets: the tables below), and what they do: PACKET_AUXDATA's
tpacket_auxdata with each frame, PACKET_IGNORE_OUTGOING, PACKET_STATISTICS, memberships."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import gevent
import pytest

from netsock.adapter import NetsockSocket
from netsock.adapter.runtime import LOOPBACK_NIC_ID

SOL_PACKET = 263
ETH_P_ALL = socket.htons(3)
# option -> (getsockopt's answer, setsockopt(option, that value or 1)'s), as Linux gave them for either kind.
LINUX = {
    6: (0, "ENOPROTOOPT"), 7: (0, None), 8: (0, None), 9: (0, None), 10: (0, None), 11: (32, "ENOPROTOOPT"),
    12: (0, None), 14: (0, None), 17: (0, None), 19: (0, None), 20: (0, None), 23: (0, None),
    1: ("ENOPROTOOPT", "EINVAL"), 2: ("ENOPROTOOPT", "EINVAL"),
}
NOT_IMPLEMENTED = {5: "PACKET_RX_RING", 13: "PACKET_TX_RING", 15: "PACKET_VNET_HDR", 18: "PACKET_FANOUT",
                   21: "PACKET_ROLLOVER_STATS", 22: "PACKET_FANOUT_DATA", 24: "PACKET_VNET_HDR_SZ"}


def answer(call: Any) -> Any:
    try:
        return call()
    except OSError as error:
        return errno.errorcode[error.errno]


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("kind", [socket.SOCK_RAW, socket.SOCK_DGRAM])
def test_options_answer_as_linux(kind: int) -> None:
    with NetsockSocket(socket.AF_PACKET, kind, 0) as sock:
        for name, (got, set_result) in LINUX.items():
            assert answer(lambda: sock.getsockopt(SOL_PACKET, name)) == got, name
            value = got if isinstance(got, int) else 1
            assert answer(lambda: sock.setsockopt(SOL_PACKET, name, value)) == set_result, name
        for name in NOT_IMPLEMENTED:
            assert answer(lambda: sock.setsockopt(SOL_PACKET, name, 1)) == "ENOPROTOOPT"
        for name, bad in ((10, 3), (23, 2), (12, -1)):     # a TPACKET version, a flag, a reserve Linux refuses
            assert answer(lambda: sock.setsockopt(SOL_PACKET, name, bad)) == "EINVAL"
        assert answer(lambda: sock.setsockopt(SOL_PACKET, 10, struct.pack("ii", 1, 0))) == "EINVAL"  # not an int
        sock.setsockopt(SOL_PACKET, 9, 7)
        assert sock.getsockopt(SOL_PACKET, 9) == 1


@pytest.mark.usefixtures("stack")
def test_memberships_are_checked_and_kept() -> None:
    lo = LOOPBACK_NIC_ID
    with NetsockSocket(socket.AF_PACKET, socket.SOCK_RAW, ETH_P_ALL) as sock:
        promiscuous = struct.pack("iHH8s", lo, 1, 0, b"")
        multicast = struct.pack("iHH8s", lo, 0, 6, b"\x01\x00\x5e\x00\x00\x01")
        assert answer(lambda: sock.setsockopt(SOL_PACKET, 1, struct.pack("iHH8s", 99, 1, 0, b""))) == "ENODEV"
        assert answer(lambda: sock.setsockopt(SOL_PACKET, 1, struct.pack("iHH8s", lo, 0, 8, b""))) == "EINVAL"
        assert answer(lambda: sock.setsockopt(SOL_PACKET, 1, promiscuous[:12])) == "EINVAL"
        sock.setsockopt(SOL_PACKET, 1, promiscuous)
        sock.setsockopt(SOL_PACKET, 1, multicast)
        sock.setsockopt(SOL_PACKET, 2, multicast)
        assert answer(lambda: sock.setsockopt(SOL_PACKET, 2, multicast)) == "EADDRNOTAVAIL"
        sock.setsockopt(SOL_PACKET, 2, promiscuous)


def frames_of_one_datagram(auxdata: bool, ignore_outgoing: bool) -> list[list[Any]]:
    """What a SOCK_RAW and a SOCK_DGRAM packet socket on lo read of one 10-byte UDP datagram."""
    readers = [NetsockSocket(socket.AF_PACKET, kind, ETH_P_ALL) for kind in (socket.SOCK_RAW, socket.SOCK_DGRAM)]
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as sender, \
            NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        for reader in readers:
            reader.bind(("lo", 0))
            reader.setsockopt(SOL_PACKET, 8, int(auxdata))
            reader.setsockopt(SOL_PACKET, 23, int(ignore_outgoing))
            reader.setblocking(False)
        sender.sendto(b"z" * 10, receiver.getsockname())
        gevent.sleep(0.05)
        seen = []
        for reader in readers:
            frames = []
            while True:
                try:
                    data, ancdata, _, address = reader.recvmsg(100, 256)
                except BlockingIOError:
                    break
                frames.append((len(data), address[2], [(level, kind, struct.unpack("IIIHHHH", message))
                                                       for level, kind, message in ancdata]))
            seen.append(frames)
            stats = struct.unpack("II", reader.getsockopt(SOL_PACKET, 6, 8))
            assert stats == (len(frames), 0) and reader.getsockopt(SOL_PACKET, 6, 8) == bytes(8)   # then reset
            reader.close()
    return seen


@pytest.mark.usefixtures("stack")
def test_auxdata_as_linux_writes_it() -> None:
    """Linux over lo (measured): SOCK_RAW reads the 52-byte frame leaving and arriving, tpacket_auxdata
    (status, 52, 52, mac 0, net 14, no VLAN); SOCK_DGRAM 38 bytes, net 0. The status's checksum bits say
    what the frame's checksum was (Linux's UDP leaves lo's partial, netsock's fills it in): USER is set."""
    raw, cooked = frames_of_one_datagram(auxdata=True, ignore_outgoing=False)
    for frames, length, network in ((raw, 52, 14), (cooked, 38, 0)):
        assert [(size, kind) for size, kind, _ in frames] == [(length, 4), (length, 0)]     # outgoing, then host
        for _, _, [(level, kind, (status, total, kept, mac, net, tci, tpid))] in frames:
            assert (level, kind, total, kept, mac, net, tci, tpid) == (SOL_PACKET, 8, length, length, 0, network, 0, 0)
            assert status & 1


@pytest.mark.usefixtures("stack")
def test_without_auxdata_and_without_outgoing_frames() -> None:
    raw, cooked = frames_of_one_datagram(auxdata=False, ignore_outgoing=True)
    assert raw == [(52, 0, [])] and cooked == [(38, 0, [])]
