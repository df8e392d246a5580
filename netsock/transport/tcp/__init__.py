"""TCP (RFC 9293) with window scaling and timestamps (RFC 7323), SACK (RFC 2018, RFC 6675), NewReno
(RFC 6582), CUBIC (RFC 9438), SYN cookies (RFC 4987) and the blind-attack defences of RFC 5961."""

from .endpoint import TCPEndpoint, TCPInfo, TCPState
from .protocol import PROTOCOL_NUMBER, TCPProtocol

__all__ = ["PROTOCOL_NUMBER", "TCPEndpoint", "TCPInfo", "TCPProtocol", "TCPState"]
