"""Faces: dlib detection and templates, matching against a tenant's watchlist, the offline CLI.

Imports ``citystream.schemas``, ``citystream.settings`` and ``processors.watchlists``; no Kafka or Faust.
"""
