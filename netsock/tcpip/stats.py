"""Counters for everything the stack does (netstack's ``tcpip.Stats`` tree).

Every drop has a counter; a packet the stack refuses is never silent. Groups declare their counters
as annotations, and ``StatGroup`` creates them, so the tree reads like netstack's documentation and
``as_dict()`` turns any subtree into plain data for printing or JSON.
"""

from __future__ import annotations

import typing


class StatCounter:
    """One monotonically maintained statistic (a plain int: the stack runs on one thread)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def increment(self, by: int = 1) -> None:
        self.value += by

    def decrement(self) -> None:
        self.value -= 1

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"StatCounter({self.value})"


class StatGroup:
    """A group of counters and subgroups, declared as class annotations.

    Members come into being on first use (``__getattr__`` runs only while the instance lacks the
    name): an endpoint's stats cost nothing for the error counters it never touches, which matters
    when connections are opened thousands of times a second. Reading a member that was never used
    gives a zero counter, as netstack's.
    """

    _fields: typing.ClassVar[dict[str, type]] = {}

    def __init_subclass__(cls) -> None:
        cls._fields = {}  # resolved lazily: annotations name classes defined later in the module

    @classmethod
    def _members(cls) -> dict[str, type]:
        if not cls._fields:
            cls._fields = {n: k for n, k in typing.get_type_hints(cls).items() if n != "_fields"}
        return cls._fields

    def __getattr__(self, name: str) -> typing.Any:
        kind = type(self)._members().get(name)
        if kind is None:
            raise AttributeError(f"{type(self).__name__!r} has no statistic {name!r}")
        member = kind()
        setattr(self, name, member)
        return member

    def as_dict(self) -> dict[str, typing.Any]:
        out: dict[str, typing.Any] = {}
        for name in type(self)._members():
            value = getattr(self, name)
            out[name] = value.value if isinstance(value, StatCounter) else value.as_dict()
        return out

    def nonzero(self) -> dict[str, int]:
        """Flattened 'a.b.c' -> value for every counter that is not zero (for compact printing)."""
        flat: dict[str, int] = {}

        def walk(prefix: str, d: dict[str, typing.Any]) -> None:
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(f"{prefix}{k}.", v)
                elif v:
                    flat[prefix + k] = v

        walk("", self.as_dict())
        return flat


class ICMPv4PacketStats(StatGroup):
    echo: StatCounter
    echo_reply: StatCounter
    dst_unreachable: StatCounter
    src_quench: StatCounter
    redirect: StatCounter
    time_exceeded: StatCounter
    param_problem: StatCounter
    timestamp: StatCounter
    timestamp_reply: StatCounter
    info_request: StatCounter
    info_reply: StatCounter


class ICMPv4SentPacketStats(ICMPv4PacketStats):
    dropped: StatCounter
    rate_limited: StatCounter


class ICMPv4ReceivedPacketStats(ICMPv4PacketStats):
    invalid: StatCounter


class ICMPv6PacketStats(StatGroup):
    echo_request: StatCounter
    echo_reply: StatCounter
    dst_unreachable: StatCounter
    packet_too_big: StatCounter
    time_exceeded: StatCounter
    param_problem: StatCounter
    router_solicit: StatCounter
    router_advert: StatCounter
    neighbor_solicit: StatCounter
    neighbor_advert: StatCounter
    redirect_msg: StatCounter


class ICMPv6SentPacketStats(ICMPv6PacketStats):
    dropped: StatCounter
    rate_limited: StatCounter


class ICMPv6ReceivedPacketStats(ICMPv6PacketStats):
    invalid: StatCounter


class ICMPStats(StatGroup):
    v4_packets_sent: ICMPv4SentPacketStats
    v4_packets_received: ICMPv4ReceivedPacketStats
    v6_packets_sent: ICMPv6SentPacketStats
    v6_packets_received: ICMPv6ReceivedPacketStats


class ReassemblyStats(StatGroup):
    """Datagram counters (completed ... too_many_fragments) and fragment counters (the rest)."""

    completed: StatCounter           # datagrams reassembled from fragments
    timeouts: StatCounter            # datagrams expired incomplete
    evicted: StatCounter             # datagrams dropped to bring memory back under the low threshold
    overlaps: StatCounter            # datagrams abandoned: overlapping fragments
    inconsistent: StatCounter        # datagrams abandoned: fragments disagree on the end
    too_many_fragments: StatCounter  # datagrams abandoned: more than max_fragments_per_datagram
    malformed: StatCounter           # fragments dropped as invalid on their own
    duplicates: StatCounter          # fragments ignored as exact duplicates
    discarded: StatCounter           # fragments dropped because their datagram was abandoned


class IPForwardingStats(StatGroup):
    """Packets routed for others (netstack's IPForwardingStats, IPv4 and IPv6 together): each reason a
    packet could not be forwarded, and in ``errors`` every packet that was not, for one of them or
    because the outgoing link refused it. Packets no router would touch (multicast, loopback and
    broadcast destinations, our own address as source) count as ``IPStats.invalid_addresses_received``."""

    unrouteable: StatCounter                      # no route to the destination
    exhausted_ttl: StatCounter                    # TTL / hop limit would reach 0
    initializing_source: StatCounter              # from 0.0.0.0/8 or ::
    link_local_source: StatCounter                # from 169.254/16 or fe80::/10: never leaves its link
    link_local_destination: StatCounter           # to 169.254/16 or fe80::/10
    packet_too_big: StatCounter                   # larger than the outgoing MTU and not to be fragmented
    extension_header_problem: StatCounter         # IPv6 hop-by-hop options that forbid forwarding
    outgoing_device_no_buffer_space: StatCounter  # the outgoing link's queue was full
    errors: StatCounter
    # Beyond netstack's list: datagrams forwarded (Linux's ForwDatagrams), counted before fragmenting.
    packets_forwarded: StatCounter

    def fail(self, reason: StatCounter) -> None:
        """Count a packet that could not be forwarded, for ``reason`` (one of this group's counters)."""
        reason.value += 1
        self.errors.value += 1


class IPStats(StatGroup):
    packets_received: StatCounter
    invalid_addresses_received: StatCounter
    packets_delivered: StatCounter
    packets_sent: StatCounter
    outgoing_packet_errors: StatCounter
    malformed_packets_received: StatCounter
    malformed_fragments_received: StatCounter
    # Beyond netstack's list: the other reasons an IP packet is dropped.
    checksum_errors: StatCounter
    ttl_exceeded: StatCounter
    unknown_protocol_received: StatCounter
    fragments_received: StatCounter
    reassembly_failures: StatCounter
    no_route: StatCounter
    duplicate_addresses_detected: StatCounter
    # Dropped or rejected by the filter table (netstack's IPTables*Dropped), or the mangle table (PREROUTING:
    # a DROP, or a TPROXY that found no socket).
    iptables_prerouting_dropped: StatCounter
    iptables_input_dropped: StatCounter
    iptables_forward_dropped: StatCounter
    iptables_output_dropped: StatCounter
    reassembly: ReassemblyStats
    forwarding: IPForwardingStats



class ARPStats(StatGroup):
    packets_received: StatCounter
    requests_received: StatCounter
    replies_received: StatCounter
    malformed_packets_received: StatCounter
    requests_sent: StatCounter
    replies_sent: StatCounter
    resolution_failures: StatCounter
    pending_packets_dropped: StatCounter


class TCPStats(StatGroup):
    active_connection_openings: StatCounter
    passive_connection_openings: StatCounter
    current_established: StatCounter
    established_resets: StatCounter
    listen_overflow_syn_drop: StatCounter
    listen_overflow_ack_drop: StatCounter
    listen_overflow_held: StatCounter           # kept for accept() to make room (netsock; see TCPEndpoint._hold)
    listen_overflow_syn_cookie_sent: StatCounter
    listen_overflow_syn_cookie_rcvd: StatCounter
    listen_overflow_invalid_syn_cookie_rcvd: StatCounter
    failed_connection_attempts: StatCounter
    valid_segments_received: StatCounter
    invalid_segments_received: StatCounter
    segments_sent: StatCounter
    segment_send_errors: StatCounter
    resets_sent: StatCounter
    resets_received: StatCounter
    retransmits: StatCounter
    fast_recovery: StatCounter
    sack_recovery: StatCounter
    slow_start_retransmits: StatCounter
    fast_retransmit: StatCounter
    timeouts: StatCounter
    checksum_errors: StatCounter
    # Tail loss probes sent (RFC 8985 §7), and those that repaired a loss (netsock; Linux's TCPLossProbes,
    # TCPLossProbeRecovery).
    loss_probes: StatCounter
    loss_probe_recoveries: StatCounter
    # Recoveries and timeouts found spurious and undone (netstack's SpuriousRecovery, SpuriousRTORecovery):
    # by D-SACKs for all their retransmissions, or by a timestamp echo older than the first of them.
    spurious_recovery: StatCounter
    spurious_rto_recovery: StatCounter
    # Retransmissions found lost again (RACK); D-SACKs received (a retransmission was needless), and
    # undos they brought (netsock; Linux's TCPLostRetransmit, TCPDSACKRecv, TCPDSACKUndo).
    lost_retransmits: StatCounter
    dsacks_received: StatCounter
    dsack_undos: StatCounter
    # Timeouts that found the peer had dropped data it SACKed (Linux's TCPSACKReneging): its SACKs are
    # forgotten and everything is resent.
    sack_reneging: StatCounter
    # TCP_MD5SIG drops (netsock; Linux's TCPMD5NotFound, TCPMD5Unexpected, TCPMD5Failure): no signature
    # from a peer with a key, one from a peer without, a wrong one.
    md5_not_found: StatCounter
    md5_unexpected: StatCounter
    md5_failure: StatCounter
    # Fast Open (RFC 7413; netsock, as Linux's TCPFastOpen* counters): SYNs whose data the peer took and
    # those it did not; SYNs whose cookie we took (those made with a listener's backup key among them),
    # those with a wrong one, cookie requests, and Fast Open SYNs turned away because the listener's
    # TCP_FASTOPEN queue was full.
    fast_open_active: StatCounter
    fast_open_active_fail: StatCounter
    fast_open_passive: StatCounter
    fast_open_passive_fail: StatCounter
    fast_open_passive_alt_key: StatCounter
    fast_open_cookie_requests: StatCounter
    fast_open_listen_overflow: StatCounter


class UDPStats(StatGroup):
    packets_received: StatCounter
    unknown_port_errors: StatCounter
    receive_buffer_errors: StatCounter
    malformed_packets_received: StatCounter
    packets_sent: StatCounter
    packet_send_errors: StatCounter
    checksum_errors: StatCounter


class UDPLiteStats(UDPStats):
    """UDP-Lite's own counters (Linux's UdpLite MIB): UDP's, and the datagrams a receiver refused for
    covering less than its UDPLITE_RECV_CSCOV minimum."""

    coverage_errors: StatCounter


class NICStats(StatGroup):
    """Per-NIC traffic counters (netstack's NICStats)."""

    tx_packets: StatCounter
    tx_bytes: StatCounter
    rx_packets: StatCounter
    rx_bytes: StatCounter
    disabled_rx_packets: StatCounter
    unknown_l3_protocol_rcvd_packets: StatCounter
    malformed_l4_rcvd_packets: StatCounter


class Stats(StatGroup):
    """Everything the stack counts."""

    unknown_protocol_rcvd_packets: StatCounter
    malformed_rcvd_packets: StatCounter
    dropped_packets: StatCounter
    icmp: ICMPStats
    ip: IPStats
    arp: ARPStats
    tcp: TCPStats
    udp: UDPStats
    udplite: UDPLiteStats


# Per-endpoint statistics (netstack's TransportEndpointStats).

class ReceiveErrors(StatGroup):
    receive_buffer_overflow: StatCounter
    malformed_packets_received: StatCounter
    closed_receiver: StatCounter
    checksum_errors: StatCounter
    filtered: StatCounter           # dropped by the socket's filter (SO_ATTACH_FILTER)


class ReadErrors(StatGroup):
    read_closed: StatCounter
    invalid_endpoint_state: StatCounter
    not_connected: StatCounter


class SendErrors(StatGroup):
    send_to_network_failed: StatCounter
    no_route: StatCounter
    no_link_addr: StatCounter


class WriteErrors(StatGroup):
    write_closed: StatCounter
    invalid_endpoint_state: StatCounter
    invalid_args: StatCounter


class TransportEndpointStats(StatGroup):
    packets_received: StatCounter
    packets_sent: StatCounter
    receive_errors: ReceiveErrors
    read_errors: ReadErrors
    send_errors: SendErrors
    write_errors: WriteErrors
