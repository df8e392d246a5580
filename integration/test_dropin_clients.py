"""Unmodified client programs under ``python -m netsock run`` against the kernel's servers over tun0
(requests over HTTP and verified HTTPS, urllib.request, http.client), and what ``netsock run``
promises a program as the interpreter does: child Python processes patched too, the device it
created removed at exit, the exit status, sys.argv and sys.path[0]."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from integration.conftest import KERNEL_ADDRESS, KERNEL_CIDR
from integration.dropin import (
    DEVICE,
    PROGRAMS,
    NetsockRun,
    Program,
    kernel_side,
    run_plain,
)
from integration.nsutil import NetNS, write_seeded
from netsock.testing.tls import CertificateAuthority

SIZE = 4 * 1024 * 1024
HTTP_PORT = 8080
HTTPS_PORT = 8443
WRONG_HOST_PORT = 8444

# requests.get(URL[, verify=CAFILE]): status, size and SHA-256 of the body.
REQUESTS_GET = """
import hashlib, sys
import requests
verify = sys.argv[2] if len(sys.argv) > 2 else True
response = requests.get(sys.argv[1], verify=verify, timeout=30)
print(response.status_code, len(response.content), hashlib.sha256(response.content).hexdigest())
"""

# requests.get(URL, verify=CAFILE) must fail verification: the ssl.SSLCertVerificationError behind the
# requests.exceptions.SSLError (via urllib3's errors), and whether it is the stdlib's very class.
REQUESTS_VERIFY_FAILS = """
import ssl, sys
import requests
try:
    requests.get(sys.argv[1], verify=sys.argv[2], timeout=30)
except requests.exceptions.SSLError as error:
    pending, seen = [error], set()
    while pending:
        cause = pending.pop(0)
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            print(type(cause) is ssl.SSLCertVerificationError, cause.verify_code, cause.verify_message)
            break
        links = (cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args)
        pending += [link for link in links if isinstance(link, BaseException)]
    else:
        sys.exit(f"no SSLCertVerificationError behind {error!r}")
else:
    sys.exit("verification passed")
"""

# urllib.request.urlopen and http.client.HTTPConnection GET HOST PORT PATH: status, size, SHA-256.
STDLIB_CLIENTS = """
import hashlib, http.client, sys, urllib.request
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=30) as response:
    body = response.read()
    print("urllib", response.status, len(body), hashlib.sha256(body).hexdigest())
connection = http.client.HTTPConnection(host, port, timeout=30)
connection.request("GET", path)
response = connection.getresponse()
body = response.read()
print("http.client", response.status, len(body), hashlib.sha256(body).hexdigest())
connection.close()
"""

# The socket class a program gets, and what connecting to the kernel's closed port 9 gives it.
SOCKET_PROBE = f"""
import errno, socket
sock = socket.socket()
outcome = "connected"
try:
    sock.connect(("{KERNEL_ADDRESS}", 9))
except OSError as error:
    outcome = errno.errorcode[error.errno]
print(type(sock).__module__ + "." + type(sock).__qualname__, outcome)
"""

# Runs the probe itself, then in a child Python process started as any program would.
PARENT_AND_CHILD = """
import subprocess, sys
exec(sys.argv[1])
child = subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True)
print(child.stdout, end="")
sys.stderr.write(child.stderr)
sys.exit(child.returncode)
"""


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, str]:
    """A directory with a seeded file of SIZE bytes, data.bin; its SHA-256."""
    directory = tmp_path / "site"
    directory.mkdir()
    return directory, write_seeded(directory / "data.bin", 61, SIZE)


@pytest.fixture
def kernel_http(netns: NetNS, tmp_path: Path, site: tuple[Path, str]) -> Program:
    """tun0 made by the test, and ``python -m http.server`` on the kernel side (192.0.2.1:8080)
    serving the site: netsock programs attach to the existing tun0."""
    netns.add_tun(DEVICE, KERNEL_CIDR)
    server = Program(netns, tmp_path, "kernel-http", [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind",
                                                      KERNEL_ADDRESS, "--directory", str(site[0])])
    server.wait_port(KERNEL_ADDRESS, HTTP_PORT)
    return server


def _device_exists(netns: NetNS) -> bool:
    return netns.run(["ip", "link", "show", DEVICE], check=False).returncode == 0


def test_requests_gets_a_file_over_http(netns: NetNS, tmp_path: Path, site: tuple[Path, str],
                                        kernel_http: Program) -> None:
    client = NetsockRun(netns, tmp_path, ["-c", REQUESTS_GET, f"http://{KERNEL_ADDRESS}:{HTTP_PORT}/data.bin"],
                        create_device=False)
    assert client.wait() == 0, client.output()
    assert client.stdout() == f"200 {SIZE} {site[1]}\n"
    assert client.stats()["tcp"]["active_connection_openings"] == 1


def test_requests_verifies_https_servers(netns: NetNS, tmp_path: Path, site: tuple[Path, str]) -> None:
    netns.add_tun(DEVICE, KERNEL_CIDR)
    authority = CertificateAuthority(tmp_path / "pki")
    servers = {}
    for port, names in ((HTTPS_PORT, (KERNEL_ADDRESS,)), (WRONG_HOST_PORT, ("wrong.example.test",))):
        certificate = authority.issue(*names)
        servers[port] = kernel_side(netns, tmp_path, f"kernel-https-{port}", "https", f"{KERNEL_ADDRESS}:{port}",
                                    "--cert", str(certificate.cert), "--key", str(certificate.key),
                                    "--directory", str(site[0]))
        servers[port].wait_port(KERNEL_ADDRESS, port)

    good = NetsockRun(netns, tmp_path, ["-c", REQUESTS_GET, f"https://{KERNEL_ADDRESS}:{HTTPS_PORT}/data.bin",
                                        str(authority.cert)], name="good", create_device=False)
    assert good.wait() == 0, good.output() + servers[HTTPS_PORT].output()
    assert good.stdout() == f"200 {SIZE} {site[1]}\n"
    assert good.stats()["tcp"]["active_connection_openings"] == 1

    wrong_host = [f"https://{KERNEL_ADDRESS}:{WRONG_HOST_PORT}/data.bin", str(authority.cert)]
    wrong = NetsockRun(netns, tmp_path, ["-c", REQUESTS_VERIFY_FAILS, *wrong_host], name="wrong",
                       create_device=False)
    assert wrong.wait() == 0, wrong.output()
    kernel = run_plain(netns, ["-c", REQUESTS_VERIFY_FAILS, *wrong_host])
    assert kernel.returncode == 0, kernel.stdout + kernel.stderr
    assert kernel.stdout.startswith("True ") and "mismatch" in kernel.stdout, kernel.stdout
    assert wrong.stdout() == kernel.stdout
    assert wrong.stats()["tcp"]["active_connection_openings"] == 1


def test_urllib_and_http_client_get_a_file(netns: NetNS, tmp_path: Path, site: tuple[Path, str],
                                           kernel_http: Program) -> None:
    client = NetsockRun(netns, tmp_path, ["-c", STDLIB_CLIENTS, KERNEL_ADDRESS, str(HTTP_PORT), "/data.bin"],
                        create_device=False)
    assert client.wait() == 0, client.output()
    assert client.stdout().splitlines() == [f"urllib 200 {SIZE} {site[1]}", f"http.client 200 {SIZE} {site[1]}"]
    assert client.stats()["tcp"]["active_connection_openings"] == 2


def test_child_python_is_patched_and_the_created_device_removed(netns: NetNS, tmp_path: Path) -> None:
    run = NetsockRun(netns, tmp_path, ["-c", PARENT_AND_CHILD, SOCKET_PROBE])
    assert run.wait() == 0, run.output()
    # The parent reaches the kernel over tun0 (which refuses port 9); the child has a stack of its
    # own with loopback only, so no route to the kernel, where the kernel's socket would be refused.
    assert run.stdout().splitlines() == ["netsock.adapter.socket.NetsockSocket ECONNREFUSED",
                                         "netsock.adapter.socket.NetsockSocket ENETUNREACH"], run.output()
    assert not _device_exists(netns)


def test_exit_status_passes_through(netns: NetNS, tmp_path: Path) -> None:
    exits = NetsockRun(netns, tmp_path, ["-c", "raise SystemExit(3)"], name="exits")
    assert exits.wait() == 3, exits.output()
    assert not _device_exists(netns)
    raises = NetsockRun(netns, tmp_path, ["-c", "1 / 0"], name="raises")
    assert raises.wait() == 1, raises.output()
    assert raises.stderr().rstrip().endswith("ZeroDivisionError: division by zero"), raises.output()
    assert not _device_exists(netns)


@pytest.mark.parametrize("program", [["-c", (PROGRAMS / "argv_probe.py").read_text()], ["-m", "argv_probe"],
                                     ["argv_probe.py"]], ids=["-c", "-m", "script"])
def test_program_sees_sys_argv_and_path_as_python_sets_them(netns: NetNS, tmp_path: Path, program: list[str]) -> None:
    arguments = ["one", "--", "-m", "-c", "two"]        # the program's: netsock run must not read them
    run = NetsockRun(netns, tmp_path, [*program, *arguments], cwd=PROGRAMS)
    assert run.wait() == 0, run.output()
    plain = run_plain(netns, [*program, *arguments], cwd=PROGRAMS)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(run.stdout()) == json.loads(plain.stdout)
