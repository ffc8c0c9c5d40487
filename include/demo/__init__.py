"""The demo: generated observations with a known rule, and the main job behind ``make run``.

Owns: the deterministic generator (CSV files plus ``.meta.json`` sidecars with the Bayes-optimal accuracy) and the
job that backfills the demo weeks through the real DAGs and prints an accuracy table. Nothing else depends on it.
"""
