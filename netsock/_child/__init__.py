"""Start-up hook for the child processes of ``netsock run`` (this directory goes on their PYTHONPATH)."""
