"""The vocabulary of the stack: addresses, routes, errors, options, statistics (netstack's ``tcpip``)."""

from typing import NamedTuple

from .address import (ARP_PROTOCOL_NUMBER, ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER, IPV4_ANY,
                      IPV4_BROADCAST, IPV4_PROTOCOL_NUMBER, IPV6_ANY, IPV6_PROTOCOL_NUMBER, NICID,
                      TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, Address, AddressMask, AddressWithPrefix,
                      FullAddress, LinkAddress, NetworkProtocolNumber, ProtocolAddress, Route, Subnet,
                      TransportProtocolNumber, address_str)
from .errors import *  # noqa: F403  (the Err* classes are the public error space)
from .errors import ALL_ERRORS, Error
from .options import (DEFAULT_WRITE_OPTIONS, NO_CONTROL_MESSAGES, NO_SENDABLE_CONTROL_MESSAGES, ControlMessages,
                      IPv6PacketInfo, PacketInfo, SendableControlMessages, ShutdownFlags, SockOpt, WriteOptions)
from .stats import StatCounter, Stats, TransportEndpointStats


class ReadResult(NamedTuple):
    """What one read returns: the bytes, who sent them (datagram endpoints) and control messages."""

    data: bytes
    sender: FullAddress | None = None
    control: ControlMessages = NO_CONTROL_MESSAGES


__all__ = ["ARP_PROTOCOL_NUMBER", "ALL_ERRORS", "Address", "AddressMask", "AddressWithPrefix", "ControlMessages",
           "DEFAULT_WRITE_OPTIONS", "Error", "FullAddress", "ICMPV4_PROTOCOL_NUMBER", "ICMPV6_PROTOCOL_NUMBER",
           "IPv6PacketInfo", "IPV4_ANY", "IPV4_BROADCAST", "IPV4_PROTOCOL_NUMBER", "IPV6_ANY", "IPV6_PROTOCOL_NUMBER",
           "LinkAddress", "NICID", "NO_CONTROL_MESSAGES", "NO_SENDABLE_CONTROL_MESSAGES", "NetworkProtocolNumber",
           "PacketInfo", "ProtocolAddress", "ReadResult", "Route", "SendableControlMessages", "ShutdownFlags",
           "SockOpt", "StatCounter", "Stats", "Subnet", "TCP_PROTOCOL_NUMBER", "TransportEndpointStats",
           "TransportProtocolNumber", "UDP_PROTOCOL_NUMBER", "WriteOptions", "address_str",
           *(e.__name__ for e in ALL_ERRORS)]
