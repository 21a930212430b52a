"""Sinks: Kafka -> ClickHouse."""
