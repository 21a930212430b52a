"""End-to-end confirmations: which gateway seqs Kafka has, collected by the bridge, sent to each gateway.

The bridge adds a (tenant, gateway, stream, seq) once Kafka confirmed the record — or the dead letter
that replaces it — and publishes what it collected every ``bridge.confirm_interval_s`` to
``{root}/_bridge/confirm/{tenant}/{gateway}`` as ``{stream: [[first, last], ...]}`` (QoS 0: a lost
confirmation only makes the gateway send those rows again after its next reconnect — duplicates,
removed downstream by ``event_id``). Gateways delete a spool row only when it is confirmed, so a
message Mosquitto acknowledged and then lost (a ``kill -9`` between snapshots) is sent again.
"""

from __future__ import annotations

from collections import defaultdict

import orjson

from citystream.schemas.topics import bridge_confirm_topic, parse_mqtt_topic

MAX_PENDING_GATEWAYS = 100_000


def ranges(seqs: list[int]) -> list[list[int]]:
    """Sorted, merged ``[first, last]`` runs of ``seqs``."""
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def seqs_of(runs: object, limit: int = 1_000_000) -> list[int]:
    """The seqs of a ``[[first, last], ...]`` list from the wire (malformed parts ignored, at most ``limit``)."""
    out: list[int] = []
    if not isinstance(runs, list):
        return out
    for run in runs:
        if (isinstance(run, list) and len(run) == 2 and all(type(v) is int for v in run)
                and 0 <= run[0] <= run[1] and run[1] - run[0] < limit - len(out)):
            out.extend(range(run[0], run[1] + 1))
    return out


class Confirmations:
    """Seqs confirmed since the last ``drain``, per gateway and stream."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._pending: dict[tuple[str, str], dict[str, list[int]]] = {}

    def add(self, tenant: str, gateway: str, stream: str, seq: int) -> None:
        """Remember one confirmed seq."""
        key = (tenant, gateway)
        per = self._pending.get(key)
        if per is None:
            if len(self._pending) >= MAX_PENDING_GATEWAYS:
                return  # bounded: those gateways resend after their next reconnect
            per = self._pending[key] = defaultdict(list)
        per[stream].append(seq)

    def identify(self, topic: str, payload: bytes, props: list[tuple[str, str]]) -> tuple[str, str, str, int] | None:
        """(tenant, gateway, stream, seq) of a rejected message when its topic and seq tell, else None."""
        addr = parse_mqtt_topic(topic, self.root)
        if addr is None:
            return None
        seq: object = None
        if addr.stream == "frame":
            values = [v for k, v in props if k == "seq"]
            seq = int(values[0]) if len(values) == 1 and values[0].isdigit() and len(values[0]) < 20 else None
        else:
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return None
            seq = doc.get("seq") if isinstance(doc, dict) else None
        if type(seq) is int and 0 <= seq < 2**63:
            return addr.tenant, addr.gateway, addr.stream, seq
        return None

    def __len__(self) -> int:
        return len(self._pending)

    def drain(self) -> list[tuple[str, bytes]]:
        """(topic, payload) per gateway with confirmations; forgets them."""
        pending, self._pending = self._pending, {}
        return [(bridge_confirm_topic(self.root, tenant, gateway),
                 orjson.dumps({stream: ranges(seqs) for stream, seqs in per.items()}))
                for (tenant, gateway), per in pending.items()]
