"""Patches a child Python process of ``netsock run`` before its program starts.

``netsock run`` puts this directory first on the PYTHONPATH its children inherit and sets
NETSOCK_CHILD=1; the interpreter imports ``sitecustomize`` at startup, so the child's program
starts with netsock patched in (with a loopback-only stack: the device belongs to the parent). A
``sitecustomize`` that this one shadows still runs, after it.
"""

import importlib
import os
import sys

if os.environ.get("NETSOCK_CHILD") == "1":
    import netsock

    netsock.patch_all()


def _run_shadowed() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.pop(__name__)
    saved = sys.path[:]
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        sys.modules[__name__] = ours
    finally:
        sys.path[:] = saved


_run_shadowed()
