"""Sensor readings in the worker: range checks, tumbling windows by event time, alerts, Thai AQI.

Pure functions and small state classes over ``citystream.schemas`` events; the Faust agents that
drive them live in ``processors/app.py``.
"""
