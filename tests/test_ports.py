"""Port reservations: conflicts, sharing flags, ephemeral choice (RFC 6056)."""

import pytest

from netsock.ports import PortFlags, PortManager
from netsock.tcpip import ErrNoPortAvailable, ErrPortInUse, FullAddress

V4 = (0x0800,)
UDP = 17
A = b"\xc0\x00\x02\x02"
B = b"\xc0\x00\x02\x03"


def test_same_port_conflicts_unless_addresses_differ():
    pm = PortManager()
    assert pm.reserve(V4, UDP, A, 53) == 53
    with pytest.raises(ErrPortInUse):
        pm.reserve(V4, UDP, A, 53)
    with pytest.raises(ErrPortInUse):
        pm.reserve(V4, UDP, b"", 53), "the wildcard overlaps every address"
    assert pm.reserve(V4, UDP, B, 53) == 53
    assert pm.reserve((0x86DD,), UDP, b"", 53) == 53, "another network protocol does not overlap"
    assert pm.reserve(V4, 6, A, 53) == 53, "another transport does not overlap"


def test_reuse_flags_need_both_sides():
    pm = PortManager()
    ra = PortFlags(reuse_addr=True)
    rp = PortFlags(reuse_port=True)
    pm.reserve(V4, UDP, b"", 5000, ra)
    pm.reserve(V4, UDP, b"", 5000, ra)
    with pytest.raises(ErrPortInUse):
        pm.reserve(V4, UDP, b"", 5000)
    pm.reserve(V4, UDP, b"", 6000, rp)
    pm.reserve(V4, UDP, b"", 6000, rp)
    with pytest.raises(ErrPortInUse):
        pm.reserve(V4, UDP, b"", 6000, ra)


def test_devices_and_destinations_separate_reservations():
    pm = PortManager()
    pm.reserve(V4, UDP, b"", 7000, device=1)
    pm.reserve(V4, UDP, b"", 7000, device=2)
    with pytest.raises(ErrPortInUse):
        pm.reserve(V4, UDP, b"", 7000)
    d1, d2 = FullAddress(0, A, 80), FullAddress(0, B, 80)
    pm.reserve(V4, 6, b"", 8000, dest=d1)
    pm.reserve(V4, 6, b"", 8000, dest=d2)
    with pytest.raises(ErrPortInUse):
        pm.reserve(V4, 6, b"", 8000, dest=d1)


def test_release_frees_exactly_that_reservation():
    pm = PortManager()
    pm.reserve(V4, UDP, A, 53)
    pm.release(V4, UDP, A, 53)
    assert not pm.is_reserved(UDP, 53) and len(pm) == 0
    pm.reserve(V4, UDP, A, 53)
    pm.release(V4, UDP, B, 53)   # not ours: nothing happens
    assert pm.is_reserved(UDP, 53)


def test_ephemeral_ports_are_in_range_random_and_exhaust_cleanly():
    pm = PortManager(first=40000, last=40099)
    got = [pm.reserve(V4, UDP, b"", 0) for _ in range(100)]
    assert sorted(got) == list(range(40000, 40100))
    assert got != sorted(got), "RFC 6056: not sequential"
    with pytest.raises(ErrNoPortAvailable):
        pm.reserve(V4, UDP, b"", 0)
    pm.release(V4, UDP, b"", got[10])
    assert pm.reserve(V4, UDP, b"", 0) == got[10]


def test_connect_ports_vary_per_destination_and_share_across_destinations():
    pm = PortManager(first=50000, last=50009)
    ports = [pm.reserve(V4, 6, A, 0, dest=FullAddress(0, B, p)) for p in range(1, 40)]
    assert len(ports) == 39 and set(ports) <= set(range(50000, 50010)), \
        "ten ports serve 39 connections: each port is shared by connections to different peers"
    assert len(set(ports)) > 1, "offsets differ per destination"
