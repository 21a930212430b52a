"""TLS options of an MQTT client, from ``mqtt.tls`` (one helper for gateways, the bridge and the CLI).

With ``mqtt.tls`` set, the client verifies the broker's certificate chain against ``ca_file`` (the
system's trust store when unset) and its host name, and presents ``cert_file``/``key_file`` when the
broker asks for a client certificate. Nothing is ever switched to "insecure".
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt

from citystream.settings import MqttSettings


def configure(client: mqtt.Client, settings: MqttSettings) -> None:
    """Turn on TLS with certificate and host-name verification when ``settings.tls`` is set."""
    tls = settings.tls
    if tls is None:
        return
    client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                   certfile=str(tls.cert_file) if tls.cert_file else None,
                   keyfile=str(tls.key_file) if tls.key_file else None,
                   cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.tls_insecure_set(False)
