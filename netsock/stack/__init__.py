"""The glue between link, network and transport protocols (netstack's ``stack`` package)."""

from .clock import Clock, ManualClock, Timer, TimerQueue
from .demux import TransportEndpointID
from .interfaces import LinkCapabilities, LinkEndpoint, LinkEndpointBase, NetworkDispatcher, PacketType
from .neighbor import NeighborCache, NeighborState, NUDConfig
from .nic import NIC
from .packet_buffer import PacketBuffer
from .registration import (ControlType, NetworkEndpoint, NetworkProtocol, TransportEndpoint, TransportProtocol,
                           UnknownDestinationDisposition)
from .route import Route
from .stack import Stack

__all__ = ["Clock", "ControlType", "LinkCapabilities", "LinkEndpoint", "LinkEndpointBase", "ManualClock", "NIC",
           "NUDConfig", "NeighborCache", "NeighborState", "NetworkDispatcher", "NetworkEndpoint", "NetworkProtocol",
           "PacketBuffer", "PacketType", "Route", "Stack", "Timer", "TimerQueue", "TransportEndpoint",
           "TransportEndpointID", "TransportProtocol", "UnknownDestinationDisposition"]
