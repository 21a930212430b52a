"""citystream: edge gateways -> MQTT -> Kafka -> Faust -> ClickHouse for smart cities."""

__version__ = "0.1.0"
