"""``netsock run``: programs run as python would run them, patched, with loopback only (no root)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from netsock.run import _split

ECHO_OVER_LOOPBACK = textwrap.dedent("""
    import socket, threading
    server = socket.create_server(("127.0.0.1", 0))
    def serve():
        conn, _ = server.accept()
        conn.sendall(conn.recv(100)[::-1])
        conn.close()
    threading.Thread(target=serve).start()
    client = socket.create_connection(server.getsockname())
    client.sendall(b"loopback")
    print(type(client).__name__, client.recv(100).decode())
""")


def netsock_run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Never from the source tree: `python -m` puts the working directory first on sys.path, where
    # netsock/ lacks netsock.patches (setup.py maps patches/ there on install).
    return subprocess.run([sys.executable, "-m", "netsock", "run", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd or tempfile.gettempdir())


@pytest.mark.parametrize(("argv", "options", "program"), [
    (["--", "x.py", "-v"], [], ["x.py", "-v"]),
    (["--pcap", "f", "-m", "http.server", "80"], ["--pcap", "f"], ["-m", "http.server", "80"]),
    (["--dns=192.0.2.53", "-c", "pass", "--", "a"], ["--dns=192.0.2.53"], ["-c", "pass", "--", "a"]),
    (["--tun", "tun0", "script.py", "--tun", "x"], ["--tun", "tun0"], ["script.py", "--tun", "x"]),
    (["--pcap", "f"], ["--pcap", "f"], []),
])
def test_the_program_starts_where_python_would_start_it(argv: list[str], options: list[str],
                                                         program: list[str]) -> None:
    assert _split(argv) == (options, program)


def test_code_runs_patched_with_argv_and_exit_code() -> None:
    done = netsock_run("-c", "import sys, socket; print(sys.argv, socket.socket.__module__); sys.exit(3)", "a", "b")
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["['-c', 'a', 'b'] netsock.patches.socket"]


def test_a_script_serves_and_connects_on_netsock_loopback(tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text(ECHO_OVER_LOOPBACK + "import sys; print(sys.argv, sys.path[0])\n")
    stats = tmp_path / "stats.json"
    done = netsock_run("--stats-json", str(stats), "--", str(script), "x")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["NetsockSocket kcabpool", f"[{str(script)!r}, 'x'] {tmp_path}"]
    counters = json.loads(stats.read_text())
    assert counters["tcp"]["active_connection_openings"] == 1
    assert counters["tcp"]["passive_connection_openings"] == 1


def test_a_module_runs_as_main(tmp_path: Path) -> None:
    (tmp_path / "greeter.py").write_text("import sys\nif __name__ == '__main__':\n    print('main', sys.argv[1:])\n")
    done = netsock_run("-m", "greeter", "--flag", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["main ['--flag']"]


def test_child_python_processes_are_patched_too() -> None:
    code = ("import subprocess, sys; print(subprocess.run([sys.executable, '-c', "
            "'import socket; print(type(socket.socket()).__name__)'], capture_output=True, text=True).stdout.strip())")
    done = netsock_run("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "NetsockSocket"


def test_device_options_need_a_device() -> None:
    done = netsock_run("--address", "192.0.2.2/24", "-c", "pass")
    assert done.returncode != 0
    assert "need --tun or --tap" in done.stderr


def test_iptables_commands_configure_the_programs_stack() -> None:
    # The program meets the firewall the commands make: a port redirected, and a refused send.
    code = ECHO_OVER_LOOPBACK.replace('("127.0.0.1", 0)', '("127.0.0.1", 8765)').replace(
        "server.getsockname()", '("127.0.0.1", 80)') + textwrap.dedent("""
        import errno
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.sendto(b"x", ("127.0.0.1", 9))
        except PermissionError as error:
            print("refused", errno.errorcode[error.errno])
    """)
    done = netsock_run("--iptables", "-t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 8765",
                       "--iptables", "-A OUTPUT -p udp --dport 9 -j DROP", "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["NetsockSocket kcabpool", "refused EPERM"]
    done = netsock_run("--iptables", "-A OUTPUT -p tcp -m comment ! --comment x -j DROP", "-c", "pass")
    assert done.returncode != 0 and \
        "--iptables '-A OUTPUT -p tcp -m comment ! --comment x -j DROP': --comment cannot be negated" in done.stderr


def test_a_saved_rule_set_is_the_programs_firewall(tmp_path: Path) -> None:
    rules = tmp_path / "rules.v4"
    rules.write_text("*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp -m udp --dport 9 -j DROP\nCOMMIT\n")
    code = ("import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))\n"
            "except PermissionError:\n    print('refused')")
    done = netsock_run("--iptables-restore", str(rules), "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused"
    rules.write_text("*filter\n-A OUTPUT -j NOWHERE\nCOMMIT\n")
    done = netsock_run("--iptables-restore", str(rules), "-c", "pass")
    assert done.returncode != 0 and "line 2 failed" in done.stderr
