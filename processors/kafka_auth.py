"""Kafka security for the worker's Faust app, from the same ``KafkaSettings`` as every librdkafka client.

Faust (aiokafka underneath) does not read librdkafka options: it takes ``broker_credentials``.
``SASL_PLAINTEXT`` / ``SASL_SSL`` become :class:`faust.SASLCredentials` (PLAIN or SCRAM-SHA-256/512,
with the verifying TLS context for ``SASL_SSL``), ``SSL`` becomes :class:`faust.SSLCredentials`
(CA, and the client certificate for mutual TLS), ``PLAINTEXT`` none.
"""

from __future__ import annotations

import faust
from faust.types.auth import CredentialsT

from citystream.settings import KafkaSettings


def broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """The Faust ``broker_credentials`` for these settings (None for PLAINTEXT)."""
    context = kafka.ssl_context()
    if kafka.security_protocol.startswith("SASL_"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        return faust.SASLCredentials(username=kafka.sasl_username, password=password, ssl_context=context,
                                     mechanism=kafka.sasl_mechanism)
    if context is not None:
        return faust.SSLCredentials(context)
    return None
