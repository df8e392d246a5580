"""Prints how the interpreter started it (sys.argv, sys.path[0], __name__, __file__, __spec__) as
JSON: run as a script, with -m, and under ``netsock run`` the same way, it must print the same."""

import json
import sys

print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__, "file": globals().get("__file__"),
                  "spec": __spec__.name if __spec__ else None}))
