"""Classic pcap capture files (the format tcpdump, Wireshark and scapy read), microsecond timestamps."""

from __future__ import annotations

import os
import struct
import time
from typing import BinaryIO

from ..stack.packet_buffer import Buffer

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101      # raw IPv4 or IPv6, told apart by the version nibble

_MAGIC = 0xA1B2C3D4
_VERSION = (2, 4)
_FILE_HEADER = struct.Struct("<IHHiIII")   # magic, version major/minor, thiszone, sigfigs, snaplen, linktype
_RECORD_HEADER = struct.Struct("<IIII")    # ts_sec, ts_usec, captured length, original length


class PcapWriter:
    """Writes packets to a pcap file.

    ``file`` is a path (opened, and closed by ``close``) or a binary file object (left open).
    Packets longer than ``snaplen`` are recorded truncated, with their original length (the default
    is tcpdump's, so that a 64 KB packet with its link header is recorded whole). With
    ``autoflush`` every record is flushed as it is written, so a capture is complete up to the last
    packet even if the process dies; without, call ``flush``/``close``.
    """

    def __init__(self, file: str | os.PathLike[str] | BinaryIO, linktype: int, snaplen: int = 262144,
                 autoflush: bool = True) -> None:
        if isinstance(file, (str, os.PathLike)):
            self._file: BinaryIO = open(file, "wb")
            self._owns_file = True
        else:
            self._file = file
            self._owns_file = False
        self.linktype = linktype
        self.snaplen = snaplen
        self._autoflush = autoflush
        self._closed = False
        self._file.write(_FILE_HEADER.pack(_MAGIC, *_VERSION, 0, 0, snaplen, linktype))
        if autoflush:
            self._file.flush()

    def write(self, *parts: Buffer, timestamp_ns: int | None = None) -> None:
        """Record one packet, given as the buffers it is made of in order (e.g. header, payload)."""
        if timestamp_ns is None:
            timestamp_ns = time.time_ns()
        seconds, ns = divmod(timestamp_ns, 1_000_000_000)
        original = sum(map(len, parts))
        remaining = min(original, self.snaplen)
        file = self._file
        file.write(_RECORD_HEADER.pack(seconds, ns // 1000, remaining, original))
        for part in parts:
            if len(part) >= remaining:
                file.write(part[:remaining])
                break
            file.write(part)
            remaining -= len(part)
        if self._autoflush:
            file.flush()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_file:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
