"""The few MQTT 3.1.1 packets the load benchmark's reference run needs, with no I/O.

`lmg bench load` drives Mosquitto with the same fleet, each simulated terminal publishing
its punch frames (the same bytes it would send the gateway) as QoS 1 PUBLISH and waiting
for PUBACK, so both servers answer the same number of equally sized messages. Only
CONNECT, CONNACK, PUBLISH (QoS 1, client to server) and PUBACK are spoken; anything else a
broker sends is skipped by length. A library (paho-mqtt, aiomqtt, gmqtt) would bring its
own loop thread or a task per client, which is the cost this benchmark compares, so the
encoder is twenty lines here instead (OASIS MQTT 3.1.1, sections 2 and 3).
"""

from __future__ import annotations

import struct

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
KEEPALIVE_S = 60  # longer than any benchmark phase between two publishes
# A broker's packets to a publisher are CONNACK and PUBACK (4 bytes each); anything larger
# is not ours to parse and a remaining length above this is treated as a broken stream.
MAX_PACKET_BYTES = 1 << 20


class MqttError(Exception):
    """The broker refused the connection or sent something this client cannot frame."""


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, keepalive_s: int = KEEPALIVE_S) -> bytes:
    """CONNECT with a clean session and no credentials."""
    body = _string("MQTT") + bytes((4, 0x02)) + struct.pack("!H", keepalive_s) + _string(client_id)
    return bytes((CONNECT << 4,)) + _remaining_length(len(body)) + body


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    """PUBLISH at QoS 1; `packet_id` is 1..65535 and comes back in the PUBACK."""
    body = _string(topic) + struct.pack("!H", packet_id) + payload
    return bytes(((PUBLISH << 4) | 0x02,)) + _remaining_length(len(body)) + body


class PacketReader:
    """Incremental reader: `feed(data)` returns [(packet_type, body_bytes), ...]."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        packets, pos = [], 0
        while len(buf) - pos >= 2:
            length, shift, i = 0, 0, pos + 1
            while True:
                if i >= len(buf):
                    break
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
                if shift > 21:
                    raise MqttError("remaining length longer than 4 bytes")
            if i >= len(buf) and (buf[i - 1] & 0x80):
                break  # the length itself is not complete yet
            if length > MAX_PACKET_BYTES:
                raise MqttError(f"packet of {length} bytes from the broker")
            if len(buf) - i < length:
                break
            packets.append((buf[pos] >> 4, bytes(buf[i : i + length])))
            pos = i + length
        del buf[:pos]
        return packets


def connack_code(body: bytes) -> int:
    """The CONNACK return code: 0 is accepted."""
    if len(body) != 2:
        raise MqttError(f"CONNACK of {len(body)} bytes")
    return body[1]


def puback_id(body: bytes) -> int:
    if len(body) != 2:
        raise MqttError(f"PUBACK of {len(body)} bytes")
    return struct.unpack("!H", body)[0]
