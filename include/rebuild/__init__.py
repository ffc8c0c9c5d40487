"""Rebuilds: a topic's next generation filled with every file in date order, a model lineage trained on it from
scratch, then the promotion gate against the live champion and one atomic switch (Kappa-style reprocessing).

Owns what happens when a file older than the live data lands (or a person asks): :mod:`records` (the rebuild
records: request, join, progress, decision), :mod:`fill` (which files the new generation lacks, in date order, and
ingesting them exactly once; new live files appended to the generations that follow the live one),
:mod:`training` (the lineage's bounded runs, up to the gate's point and to the end), :mod:`decide` (the gate and the
switch), :mod:`retention` (deleting retired generations' topics) and :mod:`steps` (the ``rebuild_model`` DAG's task
bodies and the command line's). The generations themselves and the switch are :mod:`include.lifecycle.generations`.
Reuses ingest (one transaction per file), the trainer and the gate; never serves.
"""
