"""Thai licence plates: detection, segmentation, glyph and province classifiers, training and evaluation.

``plates`` is the reader the worker's plate detector calls; ``synth``/``synth_wide``/``train`` make the
shipped models in ``models/`` (``synth_wide`` is the wide training renderer); ``eval_scenes``/``eval_camera``
are the held-out renderer that only ``evaluate`` uses. Imports ``citystream.schemas`` and
``citystream.settings`` only (plus ``processors.watchlists.alerts`` for plate alerts); no Kafka or Faust.
"""
