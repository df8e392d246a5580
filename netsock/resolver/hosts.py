"""The hosts table: the names a stack knows without asking DNS.

Three sources, in this order: the resolver's own entries (``add``: a private network names its
machines there), the hosts file (re-read whenever it changes, as glibc reads /etc/hosts on every
lookup), and RFC 6761 §6.3: "localhost" and the names under it are the loopback addresses, whatever
the other two say, and are never sent to DNS. A name that a source knows only under the other
address family is looked for further on, as glibc's files backend lets DNS answer it.
"""

from __future__ import annotations

import os
from socket import AF_INET, AF_INET6, inet_pton
from typing import NamedTuple

LOOPBACK_V4 = bytes((127, 0, 0, 1))
LOOPBACK_V6 = bytes(15) + b"\x01"
LOCALHOST = "localhost"


class HostEntry(NamedTuple):
    canonical: str
    aliases: tuple[str, ...]
    addresses: tuple[bytes, ...]     # wire form (4 or 16 bytes), in table order


def family_of(address: bytes) -> int:
    return AF_INET if len(address) == 4 else AF_INET6


def parse_address(text: str) -> bytes:
    """Strict numeric form (inet_pton's, as the hosts file is read); ValueError otherwise."""
    for family in (AF_INET6, AF_INET):
        try:
            return inet_pton(family, text)
        except (OSError, ValueError):
            continue
    raise ValueError(f"not an IP address: {text!r}")


def is_localhost(name: str) -> bool:
    name = name.lower().removesuffix(".")
    return name == LOCALHOST or name.endswith("." + LOCALHOST)


class _HostsFile:
    """/etc/hosts, parsed again whenever its size, inode or modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._lines: list[tuple[bytes, tuple[str, ...]]] = []
        self._by_name: dict[str, list[int]] = {}

    def lines(self) -> list[tuple[bytes, tuple[str, ...]]]:
        self._refresh()
        return self._lines

    def lines_naming(self, name: str) -> list[tuple[bytes, tuple[str, ...]]]:
        self._refresh()
        return [self._lines[i] for i in self._by_name.get(name.lower(), ())]

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._lines = []
        self._by_name = {}
        if stamp is None:
            return
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError:
            return
        for raw in text.splitlines():
            fields = raw.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            try:
                address = parse_address(fields[0])
            except ValueError:
                continue        # glibc skips lines it cannot parse
            index = len(self._lines)
            self._lines.append((address, tuple(fields[1:])))
            for name in fields[1:]:
                self._by_name.setdefault(name.lower(), []).append(index)


class HostsTable:
    def __init__(self, entries: dict[str, list[str]] | None = None, path: str | None = None) -> None:
        self._own: dict[str, tuple[str, list[bytes]]] = {}
        self._own_reverse: dict[bytes, list[str]] = {}
        self._file = _HostsFile(path) if path else None
        for name, addresses in (entries or {}).items():
            for address in addresses:
                self.add(name, address)

    def add(self, name: str, address: str) -> None:
        """Map ``name`` (any case) to ``address`` as well as to those it already has."""
        wire = parse_address(address)
        canonical, addresses = self._own.setdefault(name.lower(), (name, []))
        if wire not in addresses:
            addresses.append(wire)
        names = self._own_reverse.setdefault(wire, [])
        if canonical not in names:
            names.append(canonical)

    def lookup(self, name: str, families: frozenset[int]) -> HostEntry | None:
        """The entry for ``name`` with its addresses of ``families``; None if no source has one."""
        entry = self._lookup_own(name, families) or self._lookup_file(name, families)
        if not is_localhost(name):
            return entry
        loopback = [a for a in (LOOPBACK_V4, LOOPBACK_V6) if family_of(a) in families]
        if entry is None:
            return HostEntry(LOCALHOST, (), tuple(loopback))
        missing = tuple(a for a in loopback if a not in entry.addresses)
        return entry._replace(addresses=entry.addresses + missing)

    def reverse(self, address: bytes) -> HostEntry | None:
        names = self._own_reverse.get(address)
        if names:
            return HostEntry(names[0], tuple(names[1:]), (address,))
        if self._file is not None:
            for line_address, line_names in self._file.lines():
                if line_address == address:
                    return HostEntry(line_names[0], line_names[1:], (address,))
        if address in (LOOPBACK_V4, LOOPBACK_V6):
            return HostEntry(LOCALHOST, (), (address,))
        return None

    def _lookup_own(self, name: str, families: frozenset[int]) -> HostEntry | None:
        own = self._own.get(name.lower())
        if own is None:
            return None
        addresses = tuple(a for a in own[1] if family_of(a) in families)
        return HostEntry(own[0], (), addresses) if addresses else None

    def _lookup_file(self, name: str, families: frozenset[int]) -> HostEntry | None:
        """Every line naming ``name`` contributes its address; the first such line gives the
        canonical name, and the other names of those lines are the aliases."""
        if self._file is None:
            return None
        canonical = ""
        aliases: list[str] = []
        addresses: list[bytes] = []
        for address, names in self._file.lines_naming(name):
            if family_of(address) not in families:
                continue
            if not canonical:
                canonical = names[0]
            if address not in addresses:
                addresses.append(address)
            aliases.extend(n for n in names if n != canonical and n not in aliases)
        return HostEntry(canonical, tuple(aliases), tuple(addresses)) if addresses else None
