"""The pytest plugin (netsock.privnet.pytest_plugin), run on small test suites through pytester:
isolation between tests, the marker, threads, the failure report, pytest-socket and pytest-xdist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scapy.all import rdpcap

pytest_plugins = ["pytester"]

# Shared by the suites below: two hosts on one switch.
LAN = '@pytest.mark.netsock(switches={"lan": "192.0.2.0/24"}, hosts={"server.test": "lan", "client.test": "lan"})'


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(source)
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_patching_and_threads_are_netsock_s_only_while_a_test_has_the_fixture(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        import socket, threading, time
        import netsock.patches
        from netsock.adapter import NetsockSocket

        KERNEL = (socket.socket, socket.getaddrinfo, threading.Thread.start, threading.Lock, time.sleep)

        def kernel_state():
            return (socket.socket, socket.getaddrinfo, threading.Thread.start, threading.Lock, time.sleep)

        def thread_native_id():
            found = []
            thread = threading.Thread(target=lambda: found.append(threading.get_native_id()))
            thread.start()
            thread.join()
            return found[0]

        def test_before():
            assert kernel_state() == KERNEL and not netsock.patches.patched()

        def test_with(netsock_network):
            assert netsock.patches.patched()
            with socket.socket() as sock:
                assert isinstance(sock, NetsockSocket)
            assert thread_native_id() == threading.get_native_id()     # a greenlet of this thread
            netsock_network.host("a.test", netsock_network.switch("lan", "192.0.2.0/24"))

        def test_fresh(netsock_network):
            assert not netsock_network.hosts and not netsock_network.switches

        def test_after():
            assert kernel_state() == KERNEL and not netsock.patches.patched()
            with socket.socket() as sock:
                assert type(sock) is socket.socket
            assert thread_native_id() != threading.get_native_id()     # an OS thread again
    """)
    result.assert_outcomes(passed=4)


def test_threads_run_on_the_host_that_started_them_and_are_killed_with_the_test(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        import socket, threading, time
        import pytest

        LEFT_RUNNING = []

        @pytest.mark.netsock(switches={"lan": "192.0.2.0/24"}, hosts={"h.test": "lan"})
        def test_thread_on_a_host(netsock_network):
            host = netsock_network.hosts["h.test"]
            seen = {}
            ready = threading.Event()

            def work():
                with socket.socket() as sock:
                    seen["stack"] = sock._core.stack
                time.sleep(0.01)
                ready.set()

            with host:
                worker = threading.Thread(target=work)
                worker.start()
            assert ready.wait(5)
            worker.join(5)
            assert not worker.is_alive() and seen["stack"] is host.stack
            forever = threading.Thread(target=threading.Event().wait, daemon=True)
            forever.start()
            LEFT_RUNNING.append(forever)

        def test_the_thread_left_running_was_stopped():
            (forever,) = LEFT_RUNNING
            forever.join()
            assert not forever.is_alive()

        def test_an_exception_in_a_thread_reaches_threading_excepthook(netsock_network, monkeypatch):
            caught = []
            monkeypatch.setattr(threading, "excepthook", caught.append)
            failing = threading.Thread(target=lambda: 1 / 0)
            failing.start()
            failing.join()
            assert caught[0].exc_type is ZeroDivisionError and caught[0].thread is failing
    """)
    result.assert_outcomes(passed=3)


def test_the_marker_declares_the_network(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        import socket
        import pytest

        @pytest.mark.netsock(seed=42, switches={"lan": "192.0.2.0/24", "wan": "198.51.100.0/24"},
                             routers={"gw.test": ["lan", "wan"]},
                             hosts={"a.test": "lan", "b.test": {"switches": "wan", "address": "198.51.100.9"},
                                    "c.test": ["lan", "wan"]},
                             faults=[("a.test", "gw.test", {"loss": 0.25, "latency": 0.01})],
                             iptables={"gw.test": ["-t nat -A POSTROUTING -o wan -j MASQUERADE"]},
                             ip6tables={"b.test": ["-A INPUT -p tcp --dport 22 -j DROP", "-P FORWARD DROP"]})
        def test_declared(netsock_network):
            net = netsock_network
            assert net.seed == 42
            assert list(net.hosts) == ["gw.test", "a.test", "b.test", "c.test"]
            assert net.hosts["gw.test"].router and net.hosts["gw.test"].address == "192.0.2.1"
            assert net.hosts["b.test"].address == "198.51.100.9"
            assert sorted(s.name for s in net.hosts["c.test"].ports) == ["lan", "wan"]
            lan = net.switches["lan"]
            faults = lan.config(net.hosts["a.test"].ports[lan], net.hosts["gw.test"].ports[lan])
            assert (faults.loss, faults.delay) == (0.25, 0.01)
            with net.hosts["a.test"]:
                assert socket.gethostbyname("b.test") == "198.51.100.9"
            assert net.hosts["gw.test"].iptables("-t nat -L POSTROUTING").splitlines()[1] == "-o wan -j MASQUERADE"
            assert len(net.hosts["b.test"].stack.iptables.ipv6.chains["INPUT"].rules) == 1

        @pytest.mark.netsock(hosts={"a.test": "nowhere"})
        def test_undeclared_switch(netsock_network):
            pass

        @pytest.mark.netsock(colour="blue")
        def test_unknown_argument(netsock_network):
            pass

        @pytest.mark.netsock(switches={"lan": "192.0.2.0/24"}, hosts={"a.test": "lan"},
                             iptables={"a.test": ["-A INPUT -p tcp ! -m tcp --dport 22 -j DROP"]})
        def test_unsayable_rule(netsock_network):
            pass
    """)
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines(["*a.test joins undeclared switch(es) nowhere*",
                                 "*unknown argument(s) colour*", "*-m cannot be negated*"])


def test_without_a_seed_a_test_gets_the_same_one_in_every_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("case", [1, 2])
        def test_seed(netsock_network, case):
            print(f"seed[{case}]={netsock_network.seed}")
    """)

    def seeds() -> dict[str, str]:
        result = pytester.runpytest("-p", "no:cacheprovider", "-s")
        result.assert_outcomes(passed=2)
        return dict(re.findall(r"seed\[(\d)\]=(\d+)", result.stdout.str()))

    first = seeds()
    assert first == seeds()
    assert first["1"] != first["2"]


FAILING_SUITE = f"""
    import socket, time
    import pytest

    @pytest.mark.netsock(seed=1, switches={{"lan": "192.0.2.0/24"}},
                         hosts={{"server.test": "lan", "client.test": "lan"}},
                         faults=[("client.test", "server.test", {{"latency": 0.01, "duplicate": 0.5}})],
                         iptables={{"server.test": ["-A INPUT -p udp --dport 9 -j DROP"]}})
    def test_fails(netsock_network):
        with netsock_network.hosts["client.test"], socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(20):
                sock.sendto(b"x", ("server.test", 9))
        time.sleep(0.2)                 # the switch forwards them meanwhile
        assert False, "the failure"

    {LAN}
    def test_passes(netsock_network):
        pass
"""


def test_a_failing_test_reports_its_seed_pcap_and_counters(pytester: pytest.Pytester) -> None:
    result = run(pytester, FAILING_SUITE, "--basetemp", str(pytester.path / "tmp"))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*- netsock network -*",
        "seed: 1 (the same again: @pytest.mark.netsock(seed=1))",
        "pcap: *netsock-network.pcap",
        "host server.test: 192.0.2.1 on lan",
        "host client.test: 192.0.2.2 on lan",
        "switch lan port client.test: *tx_packets=*",
        "switch lan faults client.test->server.test: packets=* duplicated=* delayed=*",
        "host client.test counters: *udp.packets_sent=20*",
        "host server.test iptables -t filter (packets bytes rule):",
        "  Chain INPUT (policy ACCEPT * packets, * bytes)",
        "  * * -p udp -m udp --dport 9 -j DROP",
    ])
    assert result.stdout.str().count("- netsock network -") == 1
    pcap = Path(re.search(r"^pcap: (.*)$", result.stdout.str(), re.MULTILINE).group(1))
    assert pcap.parent.name.startswith("test_fails")
    udp = [frame for frame in rdpcap(str(pcap)) if frame.haslayer("UDP") and frame["UDP"].dport == 9]
    assert len(udp) == 20                       # as they entered the switch: before the faults
    assert sorted(p.name for p in (pytester.path / "tmp").rglob("*.pcap")) == ["netsock-network.pcap"]


def test_the_pcap_goes_to_netsock_pcap_dir(pytester: pytest.Pytester) -> None:
    pcaps = pytester.path / "pcaps"
    result = run(pytester, FAILING_SUITE, f"--netsock-pcap-dir={pcaps}")
    result.assert_outcomes(passed=1, failed=1)
    assert [p.name for p in pcaps.iterdir()] == ["test_the_pcap_goes_to_netsock_pcap_dir.py_test_fails.pcap"]
    result.stdout.fnmatch_lines([f"pcap: {pcaps}/test_the_pcap_goes_to_netsock_pcap_dir.py_test_fails.pcap"])


def test_pytest_socket_cannot_undo_netsock_and_gets_its_own_state_back(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        import socket
        import pytest
        import pytest_socket
        from netsock.adapter import NetsockSocket

        @pytest.fixture
        def server_reached_at_teardown(netsock_network):
            lan = netsock_network.switch("lan", "192.0.2.0/24")
            server = netsock_network.host("server.test", lan)
            client = netsock_network.host("client.test", lan)
            with server:
                listener = socket.create_server(("0.0.0.0", 80))
            yield client
            # pytest-socket's teardown hook has restored its socket class by now
            with client, socket.socket() as sock:
                assert isinstance(sock, NetsockSocket)
                sock.settimeout(5)
                sock.connect(("server.test", 80))
            listener.close()

        def test_kernel_sockets_are_blocked():
            with pytest.raises(pytest_socket.SocketBlockedError):
                socket.socket()

        def test_netsock_is_not_the_internet(server_reached_at_teardown):
            with server_reached_at_teardown, socket.socket() as sock:
                assert isinstance(sock, NetsockSocket)

        def test_socket_enabled_after_the_network_does_not_undo_it(netsock_network, socket_enabled):
            with socket.socket() as sock:
                assert isinstance(sock, NetsockSocket)

        def test_kernel_sockets_are_blocked_again():
            with pytest.raises(pytest_socket.SocketBlockedError):
                socket.socket()

        @pytest.mark.enable_socket
        def test_then_pytest_socket_restores_the_kernel_s_class():
            assert socket.socket is pytest_socket._true_socket
    """, "--disable-socket")
    result.assert_outcomes(passed=5)


def test_a_netsock_object_put_back_after_the_test_is_reset_with_a_warning(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
        import socket

        KERNEL = socket.getaddrinfo

        def test_monkeypatch_saves_netsock_s_getaddrinfo(monkeypatch, netsock_network):
            monkeypatch.setattr(socket, "getaddrinfo", lambda *args: [])

        def test_next():
            assert socket.getaddrinfo is KERNEL
    """)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*socket.getaddrinfo held netsock's replacement after the test*"])


def test_each_xdist_worker_has_its_own_networks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f"""
        import os, socket
        import pytest

        @pytest.mark.parametrize("case", range(6))
        {LAN}
        def test_exchange(netsock_network, case):
            server, client = netsock_network.hosts["server.test"], netsock_network.hosts["client.test"]
            with server:
                listener = socket.create_server(("0.0.0.0", 80))
            with client, socket.create_connection(("server.test", 80), timeout=5) as sock:
                conn, _ = listener.accept()
                sock.sendall(b"%d" % case)
                assert conn.recv(8) == b"%d" % case
            with open(os.path.join(os.path.dirname(__file__), "workers.txt"), "a") as out:
                out.write(f"{{os.getpid()}}\\n")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=6)
    assert len(set((pytester.path / "workers.txt").read_text().split())) == 2
