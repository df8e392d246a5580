"""Private networks: hosts on switches, names, faults, partitions, routers, capture (no root, no devices)."""

from __future__ import annotations

import errno
import hashlib
import gc
import socket
import struct
import weakref
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from scapy.all import IP, TCP, Ether, PcapReader, rdpcap

from netsock.adapter import NetsockSocket
from netsock.adapter.socket import UDP_GRO, UDP_SEGMENT
from netsock.privnet import Host, Network


@pytest.fixture
def net() -> Iterator[Network]:
    with Network(seed=7) as network:
        yield network


def sink_server(host: Host, port: int, family: int = socket.AF_INET) -> gevent.Greenlet:
    """Accepts one connection, reads to EOF, answers with the SHA-256 of what it read."""
    listener = NetsockSocket(family, stack=host.stack)
    listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    listener.listen()

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                digest = hashlib.sha256()
                while data := conn.recv(1 << 16):
                    digest.update(data)
                conn.sendall(digest.hexdigest().encode())
    return host.spawn(serve)


def send_and_check(target: str, port: int, size: int, family: int = socket.AF_INET) -> None:
    payload = hashlib.sha256(b"seed").digest() * (size // 32)
    with NetsockSocket(family) as client:
        client.settimeout(60)
        client.connect((target, port))
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        assert client.recv(100).decode() == hashlib.sha256(payload).hexdigest()


def test_hosts_get_addresses_and_names(net: Network) -> None:
    lan = net.switch("lan", "192.0.2.0/24")
    server = net.host("server.test", lan)
    client = net.host("client.test", lan, address="192.0.2.50")
    assert (server.address, client.address) == ("192.0.2.1", "192.0.2.50")
    with client:
        assert socket.getaddrinfo is not None
        assert client.resolver.gethostbyname("server.test") == "192.0.2.1"
    with pytest.raises(ValueError, match="not a free address"):
        net.host("again.test", lan, address="192.0.2.50")


def test_ipv6_hosts_get_addresses_names_and_talk_at_once(net: Network) -> None:
    lan = net.switch("lan", "2001:db8::/64")
    server = net.host("server.test", lan)
    client = net.host("client.test", lan, address="2001:db8::50")
    assert (server.address, client.address) == ("2001:db8::1", "2001:db8::50")
    assert client.resolver.getaddrinfo("server.test", 80, type=socket.SOCK_STREAM)[0][4][:2] == ("2001:db8::1", 80)
    serving = sink_server(server, 9000, socket.AF_INET6)
    with client:
        send_and_check("server.test", 9000, 1 << 20, socket.AF_INET6)     # no DAD to wait for
    serving.get(timeout=10)


def test_a_transfer_through_loss_and_latency_arrives_intact(net: Network) -> None:
    lan = net.switch("lan", "192.0.2.0/24")
    server = net.host("server.test", lan)
    client = net.host("client.test", lan)
    net.faults(client, server, both=True, loss=0.02, latency=0.005, jitter=0.002, reorder=0.01, duplicate=0.01)
    serving = sink_server(server, 9000)
    with client:
        send_and_check("server.test", 9000, 1 << 20)
    serving.get(timeout=10)
    faults = net.counters()["switches"]["lan"]["faults"]
    assert faults["client.test->server.test"]["dropped_loss"] > 0
    assert faults["server.test->client.test"]["packets"] > 0


@pytest.mark.parametrize("mtu", [1500, 9000, 65535])
def test_bulk_transfers_cross_the_switch_whole_and_are_captured_as_wire_frames(
        net: Network, mtu: int, tmp_path: Path) -> None:
    lan = net.switch("lan", "192.0.2.0/24", mtu=mtu)
    server = net.host("server.test", lan)
    client = net.host("client.test", lan)
    serving = sink_server(server, 9000)
    size = 4 << 20
    with client:
        send_and_check("server.test", 9000, size)
    serving.get(timeout=10)
    crossed = net.counters()["switches"]["lan"]["ports"]["client.test"]["tx_packets"]
    assert crossed < 100          # 64 super-segments of 64 KB and the handshake, as over a veth
    frames = [frame for frame in read_pcap(net.pcap(tmp_path / "bulk.pcap"))
              if TCP in frame and frame[TCP].dport == 9000]
    assert max(len(frame) for frame in frames) <= mtu + 14  # the capture shows the wire
    assert sum(len(frame[TCP].payload) for frame in frames) == size
    for frame in frames[::97]:                              # each cut piece carries its own checksum
        stored = frame[TCP].chksum
        del frame[TCP].chksum
        assert IP(bytes(frame[IP]))[TCP].chksum == stored


def test_a_fault_on_the_way_makes_the_switch_cut_super_segments(net: Network) -> None:
    lan = net.switch("lan", "192.0.2.0/24")
    server = net.host("server.test", lan)
    client = net.host("client.test", lan)
    net.faults(client, server, latency=0.001)
    serving = sink_server(server, 9000)
    with client:
        send_and_check("server.test", 9000, 4 << 20)
    serving.get(timeout=10)
    frames = net.counters()["switches"]["lan"]["faults"]["client.test->server.test"]["packets"]
    assert frames >= (4 << 20) // 1500                      # the faults saw wire frames
    assert server.counters()["ip"]["packets_received"] < frames // 4    # coalesced again (GRO)


def read_pcap(path: str) -> list[Ether]:
    """Every frame of a capture, whole (scapy's rdpcap cuts frames at 65,535 bytes)."""
    frames = []
    with PcapReader(path) as reader:
        while True:
            try:
                frames.append(reader.read_packet(size=1 << 18))
            except EOFError:
                return frames


def test_nothing_outside_the_network_is_reachable(net: Network) -> None:
    lan = net.switch("lan", "192.0.2.0/24")
    client = net.host("client.test", lan)
    with client, NetsockSocket() as sock:
        with pytest.raises(OSError) as raised:
            sock.connect(("203.0.113.1", 80))
        assert raised.value.errno == errno.ENETUNREACH
    with pytest.raises(socket.gaierror):
        client.resolver.getaddrinfo("example.com", 80)


def test_partition_times_out_and_heal_lets_connections_through(net: Network) -> None:
    lan = net.switch("lan", "192.0.2.0/24")
    server = net.host("server.test", lan)
    client = net.host("client.test", lan)
    listener = NetsockSocket(stack=server.stack)
    listener.bind(("0.0.0.0", 7))
    listener.listen()
    net.partition(client, server)
    with client:
        with NetsockSocket() as sock:
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.connect(("server.test", 7))
        net.heal(client, server)
        with NetsockSocket() as sock:
            sock.settimeout(5)
            sock.connect(("server.test", 7))
    listener.close()


def udp_workload(seed: int, path: Path) -> tuple[int, int, int, int]:
    """1,000 datagrams over a lossy, duplicating link: (lost, duplicated, UDP datagrams the receiving
    stack got, frames captured)."""
    with Network(seed=seed) as network:
        lan = network.switch("lan", "192.0.2.0/24")
        a, b = network.host("a.test", lan), network.host("b.test", lan)
        receiver = NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM, stack=b.stack)
        receiver.bind(("0.0.0.0", 5000))
        receiver.settimeout(5)
        with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM, stack=a.stack) as sender:
            sender.sendto(b"warm-up", ("b.test", 5000))     # ARP resolved before the faults start
            assert receiver.recv(16) == b"warm-up"
            network.faults(a, b, loss=0.2, duplicate=0.1)
            for index in range(1000):
                sender.sendto(index.to_bytes(4, "big"), ("b.test", 5000))
                gevent.sleep(0)
        gevent.sleep(0.1)
        receiver.close()
        faults = network.counters()["switches"]["lan"]["faults"]["a.test->b.test"]
        received = b.counters()["udp"]["packets_received"]
        network.pcap(path)
        frames = len(rdpcap(str(path)))
        return faults["dropped_loss"], faults["duplicated"], received, frames


def test_the_same_seed_makes_the_same_decisions(tmp_path: Path) -> None:
    first = udp_workload(1, tmp_path / "first.pcap")
    again = udp_workload(1, tmp_path / "again.pcap")
    other = udp_workload(2, tmp_path / "other.pcap")
    assert first == again
    assert first != other
    lost, duplicated, received, _ = first
    assert 150 < lost < 250 and 50 < duplicated < 150
    assert received == 1 + 1000 - lost + duplicated


@pytest.mark.parametrize(("subnets", "family"), [(("192.0.2.0/24", "198.51.100.0/24"), socket.AF_INET),
                                                  (("2001:db8:1::/64", "2001:db8:2::/64"), socket.AF_INET6)],
                         ids=["ipv4", "ipv6"])
def test_a_router_joins_two_subnets(net: Network, subnets: tuple[str, str], family: int) -> None:
    left = net.switch("left", subnets[0])
    right = net.switch("right", subnets[1])
    net.router("router.test", left, right)
    server = net.host("server.test", right)
    client = net.host("client.test", left)
    serving = sink_server(server, 9000, family)
    with client:
        send_and_check("server.test", 9000, 1 << 20, family)
    serving.get(timeout=10)
    with pytest.raises(ValueError, match="share no switch"):
        net.faults(client, server, loss=0.1)


def test_spawned_greenlets_and_their_children_belong_to_the_host(net: Network) -> None:
    lan = net.switch("lan", "192.0.2.0/24")
    host = net.host("h.test", lan)

    def child() -> object:
        with NetsockSocket() as sock:
            return sock._core.stack

    def parent() -> object:
        return gevent.spawn(child).get()

    assert host.spawn(parent).get(timeout=5) is host.stack


def transfer_on_a_new_network(size: int, **options: object) -> tuple[Network, Host, Host, gevent.Greenlet]:
    """A network with a server host and a client host on one switch, ``size`` bytes sent between them:
    (network, server, client, the server's greenlet)."""
    network = Network(**options)    # type: ignore[arg-type]
    lan = network.switch("lan", "192.0.2.0/24")
    server, client = network.host("s.test", lan), network.host("c.test", lan)
    serving = sink_server(server, 9000)
    with client:
        send_and_check("s.test", 9000, size)
    return network, server, client, serving


def test_close_kills_spawned_greenlets_and_leaves_no_timers() -> None:
    network, server, client, serving = transfer_on_a_new_network(1 << 16)
    forever = server.spawn(gevent.sleep, 3600)
    network.close()
    assert serving.dead and forever.dead
    assert not server.stack.timers._live and not client.stack.timers._live


def test_a_closed_network_is_freed_with_everything_it_captured() -> None:
    """Nothing the network armed may keep it alive after close: the ARP entries' timers left heap
    entries that the scheduler's wake-up held, and with them the hosts, switches and capture."""
    network, server, client, serving = transfer_on_a_new_network(1 << 20)
    serving.get(timeout=10)
    # ARP resolved the peer: its entry's timer is armed.
    assert any(len(cache) for nic in server.stack.nics.values() for cache in nic.neighbors.values())
    network.close()
    freed = weakref.ref(network)
    del network, server, client, serving
    gevent.sleep(0.01)  # (callbacks still queued in the hub, a switch delivery, an owed ACK, run and let go)
    gc.collect()
    assert freed() is None


def test_the_capture_keeps_the_most_recent_frames_within_its_bytes(tmp_path: Path) -> None:
    network, _, _, serving = transfer_on_a_new_network(8 << 20, capture_bytes=1 << 20)
    with network:
        serving.get(timeout=10)
        assert network._captured_bytes <= 1 << 20
        frames = read_pcap(network.pcap(tmp_path / "ring.pcap"))
    # (written as wire frames: each 1448-byte segment cut from a super-segment gets its own headers)
    assert 0 < sum(len(frame) for frame in frames) <= (1 << 20) * 1514 // 1448
    assert any(TCP in frame and frame[TCP].flags.F for frame in frames)     # the end of the transfer is there
    assert not any(TCP in frame and frame[TCP].flags.S for frame in frames)     # its start is gone


def test_hosts_send_no_ipv6_autoconfiguration(net: Network, tmp_path: Path) -> None:
    lan = net.switch("lan", "192.0.2.0/24")
    net.host("a.test", lan)
    net.host("b.test", lan)
    gevent.sleep(1.2)                       # past RFC 4861's first router solicitation delay
    assert len(rdpcap(net.pcap(tmp_path / "idle.pcap"))) == 0


@pytest.mark.parametrize(("subnet", "family"), [("192.0.2.0/24", socket.AF_INET), ("2001:db8::/64", socket.AF_INET6)],
                         ids=["ipv4", "ipv6"])
def test_reset_injection_kills_connections_with_the_stdlib_exceptions(net: Network, subnet: str, family: int) -> None:
    lan = net.switch("lan", subnet)
    server = net.host("server.test", lan)
    client = net.host("client.test", lan)
    listener = NetsockSocket(family, stack=server.stack)
    listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 7))
    listener.listen()
    with client:
        established = NetsockSocket(family)
        established.settimeout(5)
        established.connect(("server.test", 7))
        net.faults(client, server, reset=True)
        with NetsockSocket(family) as fresh:
            fresh.settimeout(5)
            with pytest.raises(ConnectionRefusedError):      # the SYN is answered with RST|ACK
                fresh.connect(("server.test", 7))
        established.send(b"doomed")                          # answered with a reset
        with pytest.raises(ConnectionResetError):
            established.recv(10)
        established.close()
        net.faults(client, server, reset=False)
        with NetsockSocket(family) as healed:
            healed.settimeout(5)
            healed.connect(("server.test", 7))
    listener.close()


def test_a_udp_gro_socket_reads_a_segmented_write_as_one_across_a_switch() -> None:
    """UDP_SEGMENT's datagrams, cut by the sending host (its port takes no super-datagrams), reach a UDP_GRO
    socket on another host joined again: the switch's delivery marks each flow's consecutive datagrams, as
    Linux's GRO joins them for such a socket; a socket without UDP_GRO still reads them one by one."""
    reads = {}
    for gro in (True, False):
        with Network(seed=1) as network:
            lan = network.switch("lan", "192.0.2.0/24")
            a, b = network.host("a.test", lan), network.host("b.test", lan)
            with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM, stack=b.stack) as receiver, \
                    NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM, stack=a.stack) as sender:
                receiver.bind(("0.0.0.0", 5000))
                receiver.setsockopt(socket.IPPROTO_UDP, UDP_GRO, int(gro))
                receiver.settimeout(5)
                sender.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)
                sender.sendto(bytes(range(250)) * 20, ("b.test", 5000))
                got = []
                while sum(len(data) for data, _ in got) < 5000:
                    data, ancdata = receiver.recvmsg(70000, 64)[:2]
                    got.append((data, ancdata))
                reads[gro] = got
    assert [(len(data), ancdata) for data, ancdata in reads[True]] == [
        (5000, [(socket.IPPROTO_UDP, UDP_GRO, struct.pack("i", 1000))])]
    assert b"".join(data for data, _ in reads[True]) == bytes(range(250)) * 20
    assert [len(data) for data, _ in reads[False]] == [1000] * 5
