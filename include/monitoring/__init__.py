"""What the Model accuracy page and the report show.

Owns: read-only queries over the history database (:mod:`~include.monitoring.queries` for runs and the ingest
ledger, :mod:`~include.monitoring.curve` for the accuracy chart, :mod:`~include.monitoring.bayes` for the
Bayes-optimal line, :mod:`~include.monitoring.lifecycle` for the model versions, alerts and the chart's promotion
markers, :mod:`~include.monitoring.generations` for the generations and rebuilds), downsampling of long curves (:mod:`~include.monitoring.downsample`), consumer lag from the
broker (:mod:`~include.monitoring.lag`), and the PNG/markdown report (:mod:`~include.monitoring.report`, the only
module that imports matplotlib). Never writes a row, never migrates a database, never imports Airflow or
TensorFlow (the UI plugin imports it in every Airflow process). Importing the package gives the read API below.
"""

from include.monitoring.bayes import bayes_accuracy
from include.monitoring.curve import DEFAULT_MAX_POINTS, MAX_DRIFT_EVENTS, SERIES, accuracy_curve
from include.monitoring.downsample import downsample, lttb_indices
from include.monitoring.generations import generations_view
from include.monitoring.lag import KAFKA_TIMEOUT_S, kafka_status
from include.monitoring.lifecycle import alerts_view, chart_overlays, versions_view
from include.monitoring.queries import (
    BASELINE_KIND,
    XAxis,
    format_offsets,
    ingest_ledger,
    list_models,
    list_runs,
    sessions_for,
)

__all__ = [
    "BASELINE_KIND", "DEFAULT_MAX_POINTS", "KAFKA_TIMEOUT_S", "MAX_DRIFT_EVENTS", "SERIES", "XAxis", "accuracy_curve",
    "alerts_view", "bayes_accuracy", "chart_overlays", "downsample", "format_offsets", "generations_view",
    "ingest_ledger",
    "kafka_status", "list_models", "list_runs", "lttb_indices", "sessions_for", "versions_view",
]
