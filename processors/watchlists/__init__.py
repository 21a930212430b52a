"""Plate and face watchlists (a compacted Kafka topic), their CLI, and the alerts a hit raises.

Used by the worker's detectors and by the console, through the same functions as the CLI.
"""
