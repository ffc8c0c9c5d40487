"""What a checkpoint carries for the version made from it: the coverage :class:`Progress` keeps over runs."""

from __future__ import annotations

from include.training.durability import Progress


class RecordedBatches:
    """Stands in for the history's recorded mini-batches (their event-time range)."""

    def event_time_range(self):
        return 1_000, 5_000


def row(t_min, t_max, n_eval, acc):
    return {"event_time_min": t_min, "event_time_max": t_max, "n_eval": n_eval, "window_accuracy": acc,
            "prequential_accuracy": acc}


def test_coverage_spans_all_runs_and_counts_this_runs_held_out_rows():
    first = Progress.resumed({0: 0}, {}, register=True)
    first.add_batch(row(2_000, 3_000, 20, 0.5))
    first.add_batch(row(3_000, 4_000, 20, 0.6))
    assert first.coverage == {"event_time_min": 2_000, "event_time_max": 4_000, "held_out_this_run": 40,
                              "window_accuracy": 0.6, "prequential_accuracy": 0.6, "register": True}
    meta = {"checkpoint_id": "c1", "records_total": 200, "coverage": first.coverage}
    second = Progress.resumed({0: 200}, meta, register=False, history=RecordedBatches())
    assert second.records_total == 200 and second.coverage["held_out_this_run"] == 0
    second.add_batch(row(4_500, 6_000, 10, 0.7))
    assert (second.coverage["event_time_min"], second.coverage["event_time_max"]) == (2_000, 6_000)
    assert second.coverage["held_out_this_run"] == 10 and second.coverage["register"] is False


def test_a_checkpoint_without_coverage_takes_the_range_from_the_recorded_batches():
    resumed = Progress.resumed({0: 500}, {"checkpoint_id": "old", "records_total": 500}, register=True,
                               history=RecordedBatches())
    assert (resumed.coverage["event_time_min"], resumed.coverage["event_time_max"]) == (1_000, 5_000)
