"""Serving: scoring rows with a model version (the champion unless asked otherwise).

Owns turning requests into the model's raw input (:mod:`requests`: the declared schema's CSV row, the label
optional, read by the one value parser, so a row ingest would refuse is refused here with the same reason),
loading a version to score with (:mod:`model`), choosing it (:mod:`champion`: a fixed version or the champion of
the moment), and the three ways of scoring: a requests topic into ``<requests topic>.predictions`` exactly once
(:mod:`stream`: consume-transform-produce in Kafka transactions; the answers' format in :mod:`answers`), a CSV file
read by the ingest validator itself (:mod:`predict`, behind ``python -m include predict``), and TensorFlow Serving's
REST API (:mod:`http`, behind ``python -m include serve``), which serves what :mod:`servables` holds: the champion,
followed by :mod:`follower`'s thread and swapped only once the new version is loaded, and versions asked for by
number. It reads the registry (:mod:`include.lifecycle.registry`) and never changes it: promotions and rollbacks are
the lifecycle's.
"""
