"""Serving: scoring rows with a model version (the champion unless asked otherwise).

Owns turning requests into the model's raw input (:mod:`requests`: the declared schema's CSV row, the label
optional, read by the one value parser, so a row ingest would refuse is refused here with the same reason) and
loading a version to score with (:mod:`model`). It reads the registry (:mod:`include.lifecycle.registry`) and never
changes it: promotions and rollbacks are the lifecycle's.
"""
