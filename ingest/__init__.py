"""Edge gateways and the MQTT -> Kafka bridge."""
