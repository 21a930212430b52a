"""The MQTT -> Kafka bridge: runs in the city's data centre, one or more replicas.

Takes gateway messages from Mosquitto, validates them against the contracts (``validate``), tracks
per-gateway sequence numbers (``seqtrack``), produces to Kafka (``kafka``) and acknowledges MQTT only
once Kafka has the record (``inflight``). Imports ``citystream.settings``, ``citystream.schemas`` and
the shared ``citystream.ingest`` helpers; never the gateway package, the worker or the sink.
"""
