"""Gateway identities on the local stack: provision, revoke, list (``citystream gateway provision | revoke | list``).

``provision`` makes a random password, stores only its Mosquitto hash in the stack home's registry
(``<home>/gateways.json``, 0600), renders the broker's password file and ACL and sends the running
broker SIGHUP; it returns once the new login is accepted by that broker (or immediately when no
broker of this stack home runs: ``stack up`` applies the registry). ``revoke`` removes the gateway
the same way; Mosquitto disconnects it if it is connected. The password is shown once and never
stored in clear. A tenant new to the stack home gets its own random pseudonym key
(:func:`citystream.stack.keys.ensure_tenants`) when its first gateway is provisioned.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citystream.ingest import mqtt_tls
from citystream.settings import MqttSettings, Settings
from citystream.stack import identities, keys, mosquitto
from citystream.stack.identities import GatewayIdentity, IdentityError

log = logging.getLogger(__name__)

APPLY_TIMEOUT_S = 10.0


def login_accepted(host: str, port: int, username: str, password: str, timeout_s: float = 5.0,
                   mqtt_settings: MqttSettings | None = None) -> bool | None:
    """One MQTT v5 CONNECT (over TLS when ``mqtt_settings.tls``): True accepted, False refused, None no answer."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    if mqtt_settings is not None:
        mqtt_tls.configure(client, mqtt_settings)
    answered = threading.Event()
    result: dict[str, bool] = {}

    def on_connect(cl: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result["ok"] = not reason.is_failure
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return None
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return None
        return result["ok"]
    finally:
        client.disconnect()
        client.loop_stop()


def provision(settings: Settings, tenant: str, gateway: str, rotate: bool = False) -> dict[str, str]:
    """Create (or with ``rotate`` replace) a gateway's login; returns username, password, topic_prefix."""
    return provision_many(settings, tenant, [gateway], rotate=rotate)[gateway]


def provision_many(settings: Settings, tenant: str, gateways: list[str], rotate: bool = False
                   ) -> dict[str, dict[str, str]]:
    """Provision several gateways of one tenant with one broker reload; gateway id -> credential."""
    names = {gw: identities.username_of(tenant, gw) for gw in gateways}
    passwords = {gw: secrets.token_urlsafe(24) for gw in gateways}
    home = settings.stack.home
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with identities.locked(home):
        current = identities.load(home)
        taken = sorted(g.gateway for g in current if g.username in names.values())
        if taken and not rotate:
            raise IdentityError(f"gateway {tenant}/{taken[0]} is already provisioned (revoke it, or --rotate)")
        made = [GatewayIdentity(tenant=tenant, gateway=gw, root=settings.mqtt.topic_root, provisioned_at=now,
                                password_hash=identities.password_hash(names[gw], passwords[gw])) for gw in gateways]
        identities.save(home, [*(g for g in current if g.username not in names.values()), *made])
        _tenant_key(settings, tenant)
        pid = mosquitto.apply_identities(settings)
    if pid is not None:
        for gw in gateways:
            _wait_accepted(settings, names[gw], passwords[gw])
    for identity in made:
        log.info("gateway provisioned", extra={"username": identity.username, "topic_prefix": identity.topic_prefix,
                                               "broker_pid": pid})
    return {i.gateway: {"username": i.username, "password": passwords[i.gateway], "topic_prefix": i.topic_prefix}
            for i in made}


def _tenant_key(settings: Settings, tenant: str) -> bool:
    """Give a tenant new to this stack home its own random pseudonym key (credentials and settings file, 0600).

    Returns whether the tenant was new; the worker uses the key after its next start (until then the ``*``
    key pseudonymises the tenant's plates, as for any tenant without a key of its own).
    """
    home = settings.stack.home.resolve()
    path = home / "credentials.json"
    if not path.exists():  # no stack here yet: its first `stack up` keys every registered tenant
        return False
    creds: dict[str, str] = orjson.loads(path.read_bytes())
    if keys.PREFIX + tenant in creds:
        return False
    keys.ensure_tenants(home, creds, [tenant], home / "citystream.yaml")
    log.info("pseudonym key made for a new tenant; restart the worker to use it", extra={"tenant": tenant})
    return True


def revoke(settings: Settings, tenant: str, gateway: str) -> GatewayIdentity:
    """Remove a gateway's login and ACL from the registry and the running broker; returns what was removed."""
    removed = revoke_many(settings, tenant, [gateway])
    if not removed:
        raise IdentityError(f"gateway {tenant}/{gateway} is not provisioned")
    return removed[0]


def revoke_many(settings: Settings, tenant: str, gateways: list[str]) -> list[GatewayIdentity]:
    """Remove those of the gateways that are provisioned, with one broker reload; returns what was removed."""
    names = {identities.username_of(tenant, gw) for gw in gateways}
    home = settings.stack.home
    with identities.locked(home):
        current = identities.load(home)
        removed = [g for g in current if g.username in names]
        if not removed:
            return []
        identities.save(home, [g for g in current if g.username not in names])
        pid = mosquitto.apply_identities(settings)
    for gone in removed:
        log.info("gateway revoked", extra={"username": gone.username, "broker_pid": pid})
    return removed


def is_local_broker(settings: Settings) -> bool:
    """Whether ``settings.mqtt`` points at this stack home's own running Mosquitto (provisioning applies there)."""
    return (settings.mqtt.host in ("127.0.0.1", "localhost") and settings.mqtt.port == settings.stack.mqtt_port
            and (settings.stack.home.resolve() / "mosquitto" / "passwd").exists()
            and mosquitto.server(settings).pid() is not None)


def listing(settings: Settings) -> list[dict[str, str]]:
    """The provisioned gateways of this stack home (no secrets)."""
    return [g.public() for g in identities.load(settings.stack.home)]


def _wait_accepted(settings: Settings, username: str, password: str) -> None:
    """Wait until the broker has reloaded (it accepts the new login); IdentityError after a timeout."""
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while True:
        got = login_accepted("127.0.0.1", settings.stack.mqtt_port, username, password, timeout_s=2.0,
                             mqtt_settings=settings.mqtt)
        if got:
            return
        if time.monotonic() > deadline:
            raise IdentityError(f"the broker on port {settings.stack.mqtt_port} did not apply the change for "
                                f"{username} within {APPLY_TIMEOUT_S:.0f}s (see its log)")
        time.sleep(0.1)
