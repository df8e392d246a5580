"""Two stacks talking TCP to each other over in-memory links: bulk transfers both ways, checked by
SHA-256, over a clean link, a faulty one (seeded loss, duplication, reordering, delay), and from
initial sequence numbers just below 2**32."""

from __future__ import annotations

import pytest

from netsock.link.fault import FaultConfig
from netsock.transport.tcp import TCPEndpoint, TCPState
from tcp_context import MOD, Pair, transfer

MB = 1 << 20


def closed_cleanly(pair: Pair, client: TCPEndpoint, server: TCPEndpoint) -> None:
    """Both sides closed their sending halves; close the sockets and let TIME-WAIT run out."""
    client.close()
    server.close()
    # The endpoints are done once a FIN is both ways through; the stacks, once TIME-WAIT is over.
    pair.run(lambda: client.state is TCPState.CLOSED and server.state is TCPState.CLOSED
             and not len(pair.a.stack.demux) and not len(pair.b.stack.demux), tick=1.0, limit=300)
    for node in (pair.a, pair.b):
        assert len(node.stack.timers) == 0 and len(node.stack.demux) == 0 and len(node.stack.ports) == 0


def test_bulk_transfer_both_directions():
    pair = Pair()
    _, client, server = transfer(pair, 4 * MB, 3 * MB)
    for node in (pair.a, pair.b):
        assert node.proto.tcp_stats.retransmits.value == 0
    closed_cleanly(pair, client, server)


LOSSY = FaultConfig(loss=0.03, duplicate=0.02, corrupt=0.01, reorder=0.1, reorder_hold=0.01, delay=0.005,
                    jitter=0.002)


@pytest.mark.parametrize("congestion,sack,seed", [("cubic", True, 7), ("reno", False, 4), ("cubic", False, 9)])
def test_bulk_transfer_over_a_lossy_corrupting_reordering_duplicating_link(congestion, sack, seed):
    pair = Pair(LOSSY, seed=seed)
    for node in (pair.a, pair.b):
        node.proto.sack_enabled = sack
        node.proto.congestion_control = congestion
    _, client, server = transfer(pair, 2 * MB, 1 * MB)
    stats = [node.proto.tcp_stats for node in (pair.a, pair.b)]
    faults = [node.fault.stats.outbound for node in (pair.a, pair.b)]
    assert all(f.dropped_loss.value and f.corrupted.value and f.reordered.value and f.duplicated.value
               for f in faults)
    assert sum(s.checksum_errors.value for s in stats) > 0
    assert sum(s.retransmits.value for s in stats) > 0
    assert sum((s.sack_recovery if sack else s.fast_recovery).value for s in stats) > 0
    closed_cleanly(pair, client, server)


@pytest.mark.parametrize("isn_a,isn_b,faults", [(MOD - 5000, MOD - 1_000_000, None), (MOD - 1, MOD - 2, None),
                                                 (MOD - 300_000, MOD - 20_000, LOSSY)])
def test_bulk_transfer_across_the_sequence_number_wrap(isn_a, isn_b, faults):
    pair = Pair(faults, seed=3)
    # The ISN function also seeds the timestamp offsets: TSvals start near the wrap as well.
    pair.a.proto.initial_numbers = lambda *args: (isn_a, isn_a)
    pair.b.proto.initial_numbers = lambda *args: (isn_b, isn_b)
    _, client, server = transfer(pair, 2 * MB, 2 * MB)
    assert client.snd.iss == isn_a and server.snd.iss == isn_b
    closed_cleanly(pair, client, server)
