"""How the stream is cut into mini-batches and trained: the semantics both learners implement, and what they report.

The semantics are the blog's (``mode="single_pass"``, this class's default): the stream is cut into mini-batches of
``batch_messages`` rows; each is first predicted whole (prequential accuracy, before any training on it); its first
``floor(train_fraction * n)`` rows are trained once in order in steps of ``train_batch_size`` (80 rows -> steps of 32,
32, 16, each step's loss the mean over its rows, exactly as ``model.fit`` with ``shuffle=False`` would); its other rows
join a held-out window that keeps the latest ``window_size`` rows, and the window's accuracy is measured after every
mini-batch. ``mode="replay"`` adds a bounded buffer of the most recent training rows and, per mini-batch,
``replay_steps`` extra steps on random batches drawn from it, which is what makes the accuracy climb on drifting data.

Owns: :class:`LearnerConfig`, :class:`BatchMetrics` and :func:`split_sizes`, shared by the compiled
:class:`include.training.learner.IncrementalLearner` and the reference :class:`include.training.seed_loop.SeedLoop`.
Plain data: never imports TensorFlow, never trains.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

MODES = ("single_pass", "replay")
# The product's default (the trainer, the command line, the DAG): the mode that learns. A model keeps the mode it
# was created with; only a new model gets this one.
DEFAULT_MODE = "replay"
# Older names, still read from checkpoints and accepted from callers.
_MODE_ALIASES = {"seed": "single_pass"}


def normalise_mode(mode: str) -> str:
    """A mode's current name (``seed``, its name before, is ``single_pass``)."""
    return _MODE_ALIASES.get(mode, mode)


@dataclass(frozen=True)
class LearnerConfig:
    """How the stream is cut and trained.

    Attributes:
        batch_messages: Rows per mini-batch (the last one of a ``process`` call may be shorter).
        train_fraction: The first ``floor(train_fraction * n)`` rows of a mini-batch are trained, the rest held out.
        train_batch_size: Rows per gradient step.
        window_size: Held-out rows kept for the window accuracy (the latest ones).
        mode: ``single_pass`` (the blog's: each training row trained once, in order; ``seed`` before) or ``replay``
            (plus steps on a buffer of recent training rows: the mode that learns, the trainer's default).
        replay_buffer: Recent training rows kept for replay (memory bound: ``replay_buffer * raw width`` floats).
            The default, 4,000, spans the same 50 mini-batches as the default 1,000-row window (80 + 20 rows each):
            the model is fitted to the stretch of stream it is judged on, and forgets a rule that changed within
            that stretch (a longer buffer keeps training on the old rule after a drift).
        replay_steps: Extra gradient steps per mini-batch in replay mode, each on ``train_batch_size`` rows drawn
            uniformly (with replacement) from the buffer, which already holds the new rows. The default, 64, is
            about half a pass over a full default buffer per mini-batch (4,000 / 32 = 125 steps), so each row is
            revisited about 25 times while it is buffered. 128 (50 revisits) fitted label noise and took ~1.4x as
            long (``bench/results/generalise.md``; 15 % noise: 4.2 points under the batch ceiling, 0.9 with 64).
        replay_plain_pass: In replay mode, also train on the new rows in order first, as single-pass mode does.
        seed: Seeds the replay draws (a counter-based RNG, so the draws are part of the checkpointed state).
        learning_rate: If set, assigned to the model optimizer's learning rate; None keeps the optimizer's own.
        chunk_batches: Mini-batches per compiled call (the compiled function's fixed shape; a call may stop early,
            see :meth:`IncrementalLearner.process_until`). 32 by default, the drift monitor's anchor period, which
            cuts its calls anyway (``bench/bench_learner.py``, 200k rows through the monitor: 151 calls with 32 or
            64, 211 with 16; records/s within the noise of each other).
        jit_compile: Compile the chunk with XLA (much faster on CPU for this small model).
    """

    batch_messages: int = 100
    train_fraction: float = 0.8
    train_batch_size: int = 32
    window_size: int = 1000
    mode: str = "single_pass"
    replay_buffer: int = 4000
    replay_steps: int = 64
    replay_plain_pass: bool = True
    seed: int = 0
    learning_rate: float | None = None
    chunk_batches: int = 32
    jit_compile: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", normalise_mode(self.mode))  # checkpoints written before the rename
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.batch_messages < 1 or self.train_batch_size < 1 or self.chunk_batches < 1:
            raise ValueError("batch_messages, train_batch_size and chunk_batches must be positive")
        if not 0.0 <= self.train_fraction <= 1.0:
            raise ValueError("train_fraction must be within [0, 1]")
        if self.window_size < self.eval_rows(self.batch_messages):
            raise ValueError(f"window_size must hold at least one mini-batch's held-out rows "
                             f"({self.eval_rows(self.batch_messages)})")
        if self.mode == "replay" and self.replay_buffer < self.train_rows(self.batch_messages):
            raise ValueError(f"replay_buffer must hold at least one mini-batch's training rows "
                             f"({self.train_rows(self.batch_messages)})")
        if self.replay_steps < 0:
            raise ValueError("replay_steps must be >= 0")

    def train_rows(self, n: int) -> int:
        """Rows of an ``n``-row mini-batch that are trained: ``floor(train_fraction * n)``."""
        # The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 at 29.
        return min(n, int(math.floor(self.train_fraction * n + 1e-9)))

    def eval_rows(self, n: int) -> int:
        return n - self.train_rows(n)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "LearnerConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class BatchMetrics:
    """What one mini-batch did.

    ``loss``/``train_accuracy`` are over the rows of this mini-batch's gradient steps (as ``fit`` reports them: each
    row's loss at the weights of its own step); ``prequential_accuracy`` is over all ``n`` rows, predicted before
    training on them; ``window_accuracy`` is over the held-out window (``window_size_now`` rows) after training.
    NaN where there was nothing to measure.
    """

    index: int
    n: int
    n_train: int
    n_eval: int
    loss: float
    train_accuracy: float
    window_accuracy: float
    prequential_accuracy: float
    window_size_now: int
    steps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StopRule:
    """Where a call of :meth:`IncrementalLearner.process_until` ends: right after the first mini-batch (with rows)
    that meets it. Sequences hold one value per mini-batch of the call; ``e`` is the mini-batch's prequential error
    (``1 - accuracy``) and ``w`` its rows.

    A mini-batch meets the rule when its accuracy is at most ``accuracy_at_most``, or when an EWMA control chart
    carried through the call would alarm: with ``full = max(full, w)``, the chart's ``level`` moves towards ``e`` by
    ``1 - (1 - alpha) ** (w / full)`` (it starts at ``e`` when NaN), ``run`` grows by ``w / full`` while ``e`` is
    above ``error_above`` and drops to 0 otherwise, and the mini-batch alarms when ``e > error_above``,
    ``level > alarm_above`` and ``run >= persist``. (``error_above`` of -inf with ``alarm_above`` of -inf and
    ``persist`` 0: any mini-batch stops; ``alarm_above`` of inf: none alarms.)
    """

    accuracy_at_most: Sequence[float]
    error_above: Sequence[float]
    alarm_above: Sequence[float]
    alpha: float = 1.0
    level: float = math.nan
    full: float = 0.0
    run: float = 0.0
    persist: float = 0.0

    def chart(self) -> list[float]:
        """The chart's parameters and starting state: alpha, level, full, run, persist."""
        return [self.alpha, self.level, self.full, self.run, self.persist]


def split_sizes(total: int, batch_messages: int, sizes: Sequence[int] | None = None) -> list[int]:
    """Mini-batch sizes for ``total`` rows: every ``batch_messages`` rows (the last may be shorter), or ``sizes``."""
    if sizes is None:
        full, rest = divmod(total, batch_messages)
        return [batch_messages] * full + ([rest] if rest else [])
    sizes = [int(s) for s in sizes]
    if sum(sizes) != total:
        raise ValueError(f"sizes add up to {sum(sizes)} rows, but {total} were given")
    if any(s < 0 or s > batch_messages for s in sizes):
        raise ValueError(f"each mini-batch must have 0..{batch_messages} rows")
    return sizes
