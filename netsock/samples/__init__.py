"""Runnable samples, with the same arguments as netstack's (``python -m netsock.samples.NAME``)."""
