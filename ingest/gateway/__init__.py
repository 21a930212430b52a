"""The edge gateway: runs at a junction or canal, one process per site.

Cameras and sensors (plugins chosen by ``type``) -> motion gate -> disk spool -> MQTT v5 publisher,
plus the simulator that runs a city of gateways. Runs on the edge device, so it imports only
``citystream.settings``, ``citystream.schemas``, ``citystream.ingest`` (shared MQTT helpers:
``mqtt_tls``, ``confirm``, ``provision``) and the metrics/log helpers — never the bridge, Kafka,
the worker or the sink.
"""
