"""paho-mqtt 2.2 client tuned for the bridge's hot path (readings in, PUBACKs out).

``BridgeClient`` overrides three private paho 2.2 methods (paho is pinned; the unit tests in
``tests/ingest/test_bridge_units.py`` compare its decoding with paho's own and would catch a change):
buffered socket reads, a direct decoder for QoS 1 PUBLISH packets whose only properties are user
properties (anything else goes through paho), and PUBACKs written in one batch. Acks still come only
from the bridge, after Kafka's delivery report.
"""

from __future__ import annotations

import ssl
import struct
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MessageType, MQTTErrorCode, MQTTProtocolVersion

RECV_CHUNK = 65536
_PUBACK = struct.Struct("!BBH")


class FastMessage(mqtt.MQTTMessage):
    """A PUBLISH decoded by ``BridgeClient``: its user properties as a list, ``properties`` left None."""

    __slots__ = ("user_properties",)
    user_properties: list[tuple[str, str]]


def _mqtt_text(raw: bytes | bytearray) -> str | None:
    """An MQTT UTF-8 string as paho accepts it (no NUL, no U+FEFF; UTF-8 rules out surrogates), else None."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text or "\ufeff" in text else text


def _user_properties(packet: bytearray, pos: int) -> tuple[list[tuple[str, str]], bytes] | None:
    """(user properties, payload) of a PUBLISH whose properties (from ``pos``) are all user properties; else None."""
    length = shift = 0
    for _ in range(4):  # the properties length, a variable byte integer
        if pos >= len(packet):
            return None
        byte = packet[pos]
        pos += 1
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        return None
    end = pos + length
    if end > len(packet):
        return None
    pairs: list[tuple[str, str]] = []
    while pos < end:
        if packet[pos] != 0x26 or pos + 3 > end:  # 0x26: User Property
            return None
        key_end = pos + 3 + ((packet[pos + 1] << 8) | packet[pos + 2])
        if key_end + 2 > end:
            return None
        value_end = key_end + 2 + ((packet[key_end] << 8) | packet[key_end + 1])
        if value_end > end:
            return None
        key, value = _mqtt_text(packet[pos + 3:key_end]), _mqtt_text(packet[key_end + 2:value_end])
        if key is None or value is None:
            return None
        pairs.append((key, value))
        pos = value_end
    return pairs, bytes(packet[end:])


class BridgeClient(mqtt.Client):
    """paho's client with the bridge's hot-path shortcuts (written against paho-mqtt 2.2's internals, pinned).

    - Reads the socket in ``RECV_CHUNK`` pieces and serves paho's small reads from them (paho asks
      for the command byte, each remaining-length byte and the body separately: four syscalls for a
      reading otherwise). ``buffered()`` tells the loop that bytes wait here, unseen by ``select``.
    - Decodes a QoS 1 PUBLISH whose properties are only user properties (or none) itself into a
      ``FastMessage`` (paho's ``Properties`` parsing is most of its per-message cost); everything
      else goes through paho's own code.
    - ``ack_many`` queues the due PUBACKs as one write instead of one ``send`` each.
    """

    _rbuf: bytes = b""
    _rpos: int = 0

    def buffered(self) -> int:
        """Bytes read from the socket that paho has not consumed yet (also TLS plaintext ``select`` cannot see)."""
        waiting = len(self._rbuf) - self._rpos
        if not waiting and isinstance(self._sock, ssl.SSLSocket):
            waiting = self._sock.pending()  # decrypted, held by the TLS layer: the socket itself is not readable
        return waiting

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            if bufsize >= RECV_CHUNK:
                return super()._sock_recv(bufsize)
            data = super()._sock_recv(RECV_CHUNK)
            if len(data) <= bufsize:  # also EOF (b"")
                return data
            buf, pos = data, 0
            self._rbuf = data
        end = min(pos + bufsize, len(buf))
        self._rpos = end
        return buf[pos:end]

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0  # bytes of a closed connection are never parsed
        super()._sock_close()

    def reconnect(self) -> MQTTErrorCode:
        """Reconnect on a fresh socket (and a fresh read buffer)."""
        self._rbuf, self._rpos = b"", 0
        return super().reconnect()

    def _handle_publish(self) -> MQTTErrorCode:
        cmd, packet = self._in_packet["command"], self._in_packet["packet"]
        if (cmd & 0x06) != 0x02 or not self._manual_ack or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()  # QoS 0/2, or paho would ack by itself
        topic_end = 2 + ((packet[0] << 8) | packet[1]) if len(packet) >= 2 else 0
        decoded = _user_properties(packet, topic_end + 2) if topic_end > 2 else None
        if decoded is None:
            return super()._handle_publish()  # other properties, alias topic or malformed: paho decides
        message = FastMessage(mid=(packet[topic_end] << 8) | packet[topic_end + 1], topic=bytes(packet[2:topic_end]))
        message.dup = bool(cmd & 0x08)
        message.qos = 1
        message.retain = bool(cmd & 0x01)
        message.user_properties, message.payload = decoded
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, acks: list[tuple[int, int]]) -> None:
        """Send the PUBACKs of these (mid, qos) pairs, QoS 1 ones coalesced into one write."""
        blob = b"".join([_PUBACK.pack(MessageType.PUBACK, 2, mid) for mid, qos in acks if qos == 1])
        if blob and self._manual_ack:
            self._packet_queue(MessageType.PUBACK, blob, 0, 0)
        for mid, qos in acks:
            if qos > 1:
                self.ack(mid, qos)
