"""Thai licence plates: detection, segmentation, glyph and province classifiers, training and evaluation.

``plates`` is the reader the worker's plate detector calls; ``synth``/``train`` make the shipped
models in ``models/``; ``eval_scenes``/``eval_camera`` are the held-out renderer that only
``evaluate`` uses. Imports ``citystream.schemas`` and ``citystream.settings`` only (plus
``processors.watchlists.alerts`` for plate alerts); no Kafka or Faust.
"""
