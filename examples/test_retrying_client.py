"""An example suite to copy: a client that retries, tested through loss, a partition and a firewall.

``get_with_retries`` stands for the code under test; the server is the standard library's
http.server, unmodified. Each test gets a private network from netsock's pytest plugin
(the ``netsock_network`` fixture), declared by its ``netsock`` marker. See README.md.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from netsock.privnet import Host, Network
from netsock.stack.iptables import DROP, Reject, Rule
from netsock.tcpip import TCP_PROTOCOL_NUMBER

NETWORK = {"switches": {"lan": "192.0.2.0/24"}, "hosts": {"api.test": "lan", "app.test": "lan"}}
URL = "http://api.test:8080/status"


# --- the code under test -------------------------------------------------------------------------

def get_json(url: str, timeout: float) -> Any:
    reply = requests.get(url, timeout=timeout)
    reply.raise_for_status()
    return reply.json()


def get_with_retries(url: str, attempts: int = 5, timeout: float = 0.5, backoff: float = 0.1) -> tuple[Any, int]:
    """GET ``url`` as JSON, trying up to ``attempts`` times: the answer and the attempts it took."""
    for attempt in range(1, attempts):
        try:
            return get_json(url, timeout), attempt
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(backoff * attempt)
    return get_json(url, timeout), attempts


# --- the server --------------------------------------------------------------------------------------

class StatusHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api(netsock_network: Network) -> Iterator[Host]:
    """The status server, running on api.test as it would anywhere: in a thread."""
    host = netsock_network.hosts["api.test"]
    with host:                                  # sockets made here belong to api.test
        httpd = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), StatusHandler)
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    yield host
    httpd.shutdown()
    serving.join()
    httpd.server_close()


# --- the tests ---------------------------------------------------------------------------------------

@pytest.mark.netsock(**NETWORK)
def test_a_clean_network_takes_one_attempt(netsock_network: Network, api: Host) -> None:
    with netsock_network.hosts["app.test"]:     # the client runs on app.test
        answer, attempts = get_with_retries(URL)
    assert (answer, attempts) == ({"status": "ok"}, 1)


@pytest.mark.netsock(**NETWORK, faults=[("app.test", "api.test", {"loss": 0.1, "latency": 0.02, "both": True})])
def test_lossy_links_slow_it_down_but_it_gets_there(netsock_network: Network, api: Host) -> None:
    with netsock_network.hosts["app.test"]:
        for _ in range(3):
            answer, _attempts = get_with_retries(URL, timeout=2)
            assert answer == {"status": "ok"}
    faults = netsock_network.counters()["switches"]["lan"]["faults"]
    lost = faults["app.test->api.test"]["dropped_loss"] + faults["api.test->app.test"]["dropped_loss"]
    assert lost > 0                             # TCP retransmitted what the link lost


@pytest.mark.netsock(**NETWORK)
def test_it_retries_until_a_partition_heals(netsock_network: Network, api: Host) -> None:
    app = netsock_network.hosts["app.test"]
    netsock_network.partition(app, api)
    threading.Timer(1.0, netsock_network.heal, (app, api)).start()
    with app:
        answer, attempts = get_with_retries(URL, attempts=10, timeout=0.3)
    assert answer == {"status": "ok"} and attempts > 1


@pytest.mark.netsock(**NETWORK)
def test_it_gives_up_when_the_server_stays_unreachable(netsock_network: Network, api: Host) -> None:
    app = netsock_network.hosts["app.test"]
    netsock_network.partition(app, api)
    start = time.monotonic()
    with app, pytest.raises(requests.ConnectTimeout):
        get_with_retries(URL, attempts=3, timeout=0.2, backoff=0.05)
    assert time.monotonic() - start >= 3 * 0.2


@pytest.mark.netsock(**NETWORK)
def test_a_firewall_that_refuses_fails_fast_where_one_that_drops_times_out(netsock_network: Network,
                                                                           api: Host) -> None:
    # The server host's own packet filter (iptables' filter table): REJECT answers with ICMP port
    # unreachable, so each attempt is refused at once; DROP answers nothing, so each one times out.
    refuse = Rule(Reject(), protocol=TCP_PROTOCOL_NUMBER, destination_ports=(8080, 8080))
    api.stack.iptables.ipv4.append("INPUT", refuse)
    with netsock_network.hosts["app.test"], pytest.raises(requests.ConnectionError) as refused:
        get_with_retries(URL, attempts=3, timeout=1, backoff=0.01)
    assert not isinstance(refused.value, requests.Timeout)
    assert refuse.packets == 3      # one SYN per attempt, each refused at once: none sent again after a wait
    api.stack.iptables.ipv4.delete("INPUT", refuse)
    api.stack.iptables.ipv4.append("INPUT", Rule(DROP, protocol=TCP_PROTOCOL_NUMBER, destination_ports=(8080, 8080)))
    with netsock_network.hosts["app.test"], pytest.raises(requests.ConnectTimeout):
        get_with_retries(URL, attempts=2, timeout=0.2, backoff=0.01)


BEHIND_A_GATEWAY = {
    "switches": {"lan": "192.0.2.0/24", "wan": "198.51.100.0/24"},
    "routers": {"gw.test": ["lan", "wan"]},
    "hosts": {"api.test": "wan", "app.test": "lan"},
    # Firewall and translation in iptables' own words: the API refuses the office network itself, and
    # the gateway masquerades the office's connections as its own address on the wan.
    "iptables": {"api.test": ["-A INPUT -s 192.0.2.0/24 -p tcp --dport 8080 -j REJECT"],
                 "gw.test": ["-t nat -A POSTROUTING -o wan -j MASQUERADE"]},
}


@pytest.mark.netsock(**BEHIND_A_GATEWAY)
def test_behind_a_masquerading_gateway_the_api_sees_the_gateway(netsock_network: Network, api: Host) -> None:
    gateway = netsock_network.hosts["gw.test"]
    with netsock_network.hosts["app.test"]:
        answer, attempts = get_with_retries(URL)
    assert (answer, attempts) == ({"status": "ok"}, 1)
    masquerade = gateway.iptables("-t nat -L POSTROUTING -v").splitlines()[1]
    assert masquerade.split()[0] == "1"         # one connection, translated: its first packet met the rule
    gateway.iptables("-t nat -F")               # without the translation, the API refuses the office
    with netsock_network.hosts["app.test"], pytest.raises(requests.ConnectionError):
        get_with_retries(URL, attempts=2, timeout=1, backoff=0.01)
