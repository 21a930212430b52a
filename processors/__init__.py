"""The Faust worker and what it runs, one folder per kind of analysis.

- ``app.py``, ``cli.py``, ``frames_agent.py``, ``faust_fixes.py``, ``watchdog.py``, ``kafka_auth.py``:
  the worker itself (topics, agents, commits, liveness); ``vision.py``: strict frame decoding.
- ``detectors.py``: the detector plug-in point (a new detector is one module + a settings entry).
- ``plates/``, ``faces/``: the two detectors; ``sensors/``: windows, AQI and sensor alerts;
  ``watchlists/``: the watchlist topic, its CLI and hit alerts; ``notifiers.py``: alerts out to people.

Subfolders never import the worker modules (``app``, ``frames_agent``), so they stay usable offline
(the ``plates``/``faces``/``watchlist`` CLIs) and in the console.
"""
