"""The local stack: real Mosquitto and Kafka servers run as processes, ClickHouse embedded (chDB)."""
