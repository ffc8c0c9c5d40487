"""Streaming model retraining on Airflow: the importable code behind the DAGs, the UI plugin and the command line.

One package per stage of a row's path, each opened by a docstring that says what it owns and what it never does:

- :mod:`include.schema`: the declared CSV layout and the one value parser (what a field string means).
- :mod:`include.ingest`: landed CSV files into Kafka, every valid row exactly once, bad rows set aside.
- :mod:`include.kafka`: every Kafka client, the bounded reader, the tfio reader and the trainer's dead letters.
- :mod:`include.training`: the bounded training task: resume, the read-train loop, durability; model and learner.
- :mod:`include.history`: the project database (ledger, accuracy history) and its migrations.
- :mod:`include.monitoring`: what the UI page and the report show (queries, downsampling, lag, the report).
- :mod:`include.demo`: the demo data generator and the main job behind ``make run``.

Around them: :mod:`include.settings` (the one configuration object), :mod:`include.cli` (``python -m include``),
:mod:`include.assets` (the Airflow Assets the DAGs share), :mod:`include.faults` (crash points for the fault tests).
Importing this package imports nothing else: DAG files are parsed every few seconds.
"""
