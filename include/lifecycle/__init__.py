"""The model lifecycle: immutable versions, the promotion gate, the champion pointer, rollback and alerts.

Owns what happens to a model after training: :mod:`store` (the version folders on disk, in TensorFlow Serving's
layout), :mod:`registry` (the versions and the champion as the database records them: what every reader asks),
:mod:`versions` (registering one), :mod:`pruning` (old folders), :mod:`gate` (the promotion gate: forward evaluation),
:mod:`promotion` (status changes with their audit rows), :mod:`generations` (the topic's generations, each model's
lineage in them, the live-generation pointer and the one-transaction switch), :mod:`alerts` (what a person should
hear, recorded once, delivered as one digest), :mod:`notifiers` (the e-mail notifier: the only module here that imports Airflow, for its
``BaseNotifier``) and :mod:`steps` (the DAG's task bodies).
Training (:mod:`include.training`) only hands over a checkpoint; serving (:mod:`include.serving`) only reads
the registry. This package never trains and never reads Kafka.
"""
