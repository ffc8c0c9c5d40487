"""The bounded training task and what it trains.

Owns: planning a run and resuming it from the newest checkpoint and its offsets, the read-train loop, durability
(checkpoint, then history, then the consumer group's offsets), the decoder from messages to the model's raw input,
the Keras model, the compiled incremental learner, drift detection and the batch baseline. Never ingests, never
serves predictions, and never reads the environment (settings arrive as an object).

Where to start: :mod:`include.training.trainer` runs one task top to bottom. Its parts:

- :mod:`~include.training.options`: what a run is asked (``TrainOptions``) and reports (``TrainSummary``).
- :mod:`~include.training.lock`: one trainer per model folder.
- :mod:`~include.training.resume`: finish a crashed predecessor's work, check and rebuild model + learner.
- :mod:`~include.training.loop`: fetches -> mini-batches, dead-letter, learn, history rows, next offsets.
- :mod:`~include.training.chunks`: the fetches waiting to be trained, and the next chunk cut from them.
- :mod:`~include.training.prefetch`: the bounded reader read (and decoded) ahead in a thread.
- :mod:`~include.training.durability`: dead letters -> checkpoint -> history -> group offsets, and the seq check.
- :mod:`~include.training.history_rows`: the history rows a run writes, and the transaction that writes them.
- :mod:`~include.training.checkpoint`: atomic checkpoint bundles on disk.
- :mod:`~include.training.versioning`: the run's newest checkpoint handed to the lifecycle as a model version
  (and a killed run's caught up).

What is trained: :mod:`~include.training.framing` (message values -> CSV records) and
:mod:`~include.training.decode` (records -> raw matrix, with the one value parser), :mod:`~include.training.model`,
:mod:`~include.training.learner_config` (the stream's semantics), :mod:`~include.training.learner` (compiled),
:mod:`~include.training.seed_loop` (the blog's loop, the reference), :mod:`~include.training.drift_detectors` and
:mod:`~include.training.drift` (detection and reaction), :mod:`~include.training.baseline` (the batch line).
"""
