"""netsock.patches.threading: under patch_all() (gevent's threads), Thread.start() returns to the creator
before the new thread runs its target, as with OS threads; the thread still runs, joins and reports
as before, and patching is undone cleanly. Run in a child interpreter: gevent's thread patching is
for the whole process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

PROGRAM = textwrap.dedent("""
    import json, threading, netsock
    netsock.patch_all()
    import socketserver
    order = []

    def target(name):
        order.append(name + " runs")

    for name in ("t1", "t2"):
        thread = threading.Thread(target=target, args=(name,))
        thread.start()
        order.append("creator after starting " + name)
    threading.Thread.join(thread)                       # waits for t2, which ran after t1

    class Own(threading.Thread):
        def run(self):
            order.append("subclass run")

    own = Own()
    own.start()
    own.join()
    order.append("run restored: " + str("run" not in vars(own) and not own.is_alive()))
    try:
        own.start()
    except RuntimeError as e:
        order.append("again: " + str(e))
    patched = threading.Thread.start.__module__
    netsock.unpatch_all()
    print(json.dumps({"order": order, "patched": patched, "unpatched": threading.Thread.start.__module__}))
""")


def test_the_creator_goes_on_before_the_new_thread_runs(tmp_path: Path) -> None:
    # (in an empty directory: the installed package, not the source tree, which lacks netsock.patches)
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    order = result["order"]
    for name in ("t1", "t2"):                   # (t1 may run while t2 is being started, as an OS thread could)
        assert order.index(f"creator after starting {name}") < order.index(f"{name} runs"), order
    assert order[4:] == ["subclass run", "run restored: True", "again: threads can only be started once"]
    assert (result["patched"], result["unpatched"]) == ("netsock.patches.threading", "threading")
