"""``citystream bridge``: run one MQTT -> Kafka bridge replica until SIGTERM/SIGINT."""

from __future__ import annotations

import click

from citystream.cli import config_option, fail, settings_of


@click.command("bridge")
@config_option
@click.option("--client-id", default=None, help="MQTT client id of this replica (stable across restarts).")
@click.option("--max-inflight", type=int, default=None, help="Override bridge.max_inflight.")
@click.pass_context
def bridge(ctx: click.Context, config: str | None, client_id: str | None, max_inflight: int | None) -> None:
    """MQTT -> Kafka bridge: acks each device message only after Kafka confirmed it."""
    settings = settings_of(ctx, **{"bridge.client_id": client_id, "bridge.max_inflight": max_inflight})
    from citystream.ingest.bridge.bridge import BridgeError, run_bridge
    from citystream.ingest.bridge.kafka import FatalKafkaError

    try:
        run_bridge(settings)
    except BridgeError as exc:
        fail(str(exc), 1)
    except FatalKafkaError as exc:  # unacked messages stay in Mosquitto: a restart loses nothing
        fail(f"kafka producer failed fatally, restart the bridge: {exc}", 1)
