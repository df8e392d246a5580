"""PacketBuffer: headers prepended in front of a payload that is never copied; inbound consumption."""

from netsock.stack.packet_buffer import PacketBuffer


def test_outbound_headers_prepend_in_order_without_copying_payload():
    payload = bytearray(b"payload!")
    pkt = PacketBuffer(reserve=28, data=payload)
    pkt.prepend(8)[:] = b"UDPHDR__"
    pkt.prepend(20)[:] = b"I" * 20
    assert pkt.header_size() == 28 and pkt.size() == 36
    assert pkt.to_bytes() == b"I" * 20 + b"UDPHDR__" + b"payload!"
    views = pkt.views()
    assert [bytes(v) for v in views] == [b"I" * 20 + b"UDPHDR__", b"payload!"]
    payload[0:1] = b"P"
    assert bytes(views[1]) == b"Payload!", "the payload is referenced, not copied"


def test_prepend_grows_when_the_reserve_is_short():
    pkt = PacketBuffer(reserve=4, data=b"x")
    pkt.prepend(4)[:] = b"BBBB"
    pkt.prepend(14)[:] = b"E" * 14
    assert pkt.to_bytes() == b"E" * 14 + b"BBBB" + b"x"


def test_inbound_consume_and_trim():
    frame = bytearray(b"HDR1" + b"HDR2" + b"data" + b"\x00\x00pad")
    pkt = PacketBuffer.inbound(frame)
    assert bytes(pkt.consume(4)) == b"HDR1"
    pkt.trim(8)
    assert bytes(pkt.consume(4)) == b"HDR2" and bytes(pkt.data) == b"data"
    assert pkt.consume(5) is None, "asking for more than is there leaves the packet alone"
    assert bytes(pkt.data) == b"data"
    frame[8:9] = b"D"
    assert bytes(pkt.data) == b"Data", "slices are views of the received frame"


def test_clone_shares_payload_but_not_headers_or_position():
    pkt = PacketBuffer(reserve=8, data=b"abcdef")
    pkt.prepend(8)[:] = b"H" * 8
    pkt.network_protocol = 0x0800
    twin = pkt.clone()
    twin.prepend(2)[:] = b"ZZ"
    assert pkt.to_bytes() == b"H" * 8 + b"abcdef"
    assert twin.to_bytes() == b"ZZ" + b"H" * 8 + b"abcdef" and twin.network_protocol == 0x0800
    inbound = PacketBuffer.inbound(b"0123456789")
    copy = inbound.clone()
    copy.consume(4)
    assert bytes(inbound.data) == b"0123456789" and bytes(copy.data) == b"456789"


def test_a_scattered_payload_stays_in_its_pieces_until_the_link_writes_them():
    pieces = [bytearray(b"first "), memoryview(b"second "), b"third"]
    pkt = PacketBuffer(reserve=4, data=pieces)
    assert pkt.size() == 18 and pkt.tail_size == 12
    pkt.prepend(4)[:] = b"HDR:"
    assert pkt.size() == 22 and pkt.to_bytes() == b"HDR:first second third"
    views = pkt.views()
    assert [bytes(v) for v in views] == [b"HDR:", b"first ", b"second ", b"third"]
    pieces[0][0:1] = b"F"
    assert bytes(views[1]) == b"First ", "the pieces are referenced, not copied"
    twin = pkt.clone()
    assert twin.to_bytes() == b"HDR:First second third" and twin.tail_size == 12


def test_an_inbound_packet_gets_headers_of_its_own_and_earlier_views_stay_valid():
    # Inbound buffers start without header room (they share one empty buffer); forwarding
    # prepends to one: that must neither touch another packet nor invalidate a view handed out.
    first, second = PacketBuffer.inbound(bytearray(b"one")), PacketBuffer.inbound(bytearray(b"two"))
    ip = first.prepend(4)
    ip[:] = b"IPv4"
    eth = first.prepend(14)
    eth[:] = b"E" * 14
    assert bytes(ip) == b"IPv4", "a view of an earlier header survives the buffer growing"
    assert first.to_bytes() == b"E" * 14 + b"IPv4" + b"one"
    assert second.header_size() == 0 and second.to_bytes() == b"two"
    assert [bytes(v) for v in second.views()] == [b"two"]
