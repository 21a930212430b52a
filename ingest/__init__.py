"""Ingest: from the device at the junction to Kafka.

- ``gateway/``: the edge process (cameras, sensors, spool, MQTT publisher, simulator);
- ``bridge/``: the server side (MQTT -> validation -> Kafka, acking devices after Kafka);
- shared by both: ``mqtt_tls.py`` (TLS options), ``confirm.py`` (end-to-end confirmations) and
  ``provision.py`` (one Mosquitto identity per gateway).
"""
