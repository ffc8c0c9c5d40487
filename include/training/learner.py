"""The compiled incremental learner: the semantics of :mod:`include.training.learner_config`, fast.

:class:`IncrementalLearner` does the whole per-mini-batch work (predict, train in order, replay, update and measure
the window) inside one XLA-compiled TensorFlow function per chunk of up to ``chunk_batches`` mini-batches: fixed
shapes (each mini-batch padded, rows masked), the window and the replay buffer in fixed-size variables, the model's
own Keras optimizer applied in the loop (so its state is the model's and is saved with it), metrics collected in
TensorArrays. Python is paid once per chunk instead of several ``fit``/``evaluate`` calls per mini-batch; the
reference loop that makes those calls is :class:`include.training.seed_loop.SeedLoop`.

Owns the learner's state (window, replay buffer, RNG counter, the anchors and memory of earlier model states:
:meth:`IncrementalLearner.get_state`) and the drift reactions it offers (forget old replay rows, change the learning
rate, re-initialise the model, store and recall an earlier model), which :mod:`include.training.drift` calls. Never
reads Kafka, never writes checkpoints, and imports TensorFlow only when a learner is made.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from include.training.learner_config import BatchMetrics, LearnerConfig, StopRule, split_sizes

_STATE_VERSION = 1


class IncrementalLearner:
    """The compiled incremental learner (see the module docstring for the semantics).

    Args:
        model: A compiled Keras model taking the raw matrix, with one sigmoid output (see
            :func:`include.training.model.build_model`). Its optimizer is used and updated in place.
        config: The stream and training settings.
    """

    def __init__(self, model: Any, config: LearnerConfig | None = None) -> None:
        import tensorflow as tf

        self.model = model
        self.config = config or LearnerConfig()
        cfg = self.config
        self.width = int(model.inputs[0].shape[-1])
        self._bs = cfg.train_batch_size
        self._t_max = cfg.train_rows(cfg.batch_messages)
        self._e_max = cfg.eval_rows(cfg.batch_messages)
        self._s_max = -(-self._t_max // self._bs)
        self._rows_pad = max(cfg.batch_messages, self._s_max * self._bs)
        self._replay = cfg.mode == "replay"
        self._plain = (not self._replay) or cfg.replay_plain_pass  # replay mode may skip the in-order pass
        # Replay steps per loop iteration: two when the count allows (it is replay_steps or 0), the same steps in
        # the same order, bit for bit, at about 30 % less per step on CPU (the loop's own cost is paid half as often).
        self._replay_unroll = 2 if cfg.replay_steps % 2 == 0 else 1
        self.optimizer = model.optimizer
        if self.optimizer is None:
            raise ValueError("the model must be compiled with an optimizer")
        if not self.optimizer.built:
            self.optimizer.build(model.trainable_variables)
        if cfg.learning_rate is not None:
            self.optimizer.learning_rate = cfg.learning_rate

        w, win, rep = self.width, cfg.window_size, (cfg.replay_buffer if cfg.mode == "replay" else 1)
        self._win_x = tf.Variable(tf.zeros((win, w), tf.float32), trainable=False, name="window_x")
        self._win_y = tf.Variable(tf.zeros((win,), tf.float32), trainable=False, name="window_y")
        self._win_count = tf.Variable(0, dtype=tf.int32, trainable=False, name="window_count")
        self._win_pos = tf.Variable(0, dtype=tf.int32, trainable=False, name="window_pos")
        self._rep_x = tf.Variable(tf.zeros((rep, w), tf.float32), trainable=False, name="replay_x")
        self._rep_y = tf.Variable(tf.zeros((rep,), tf.float32), trainable=False, name="replay_y")
        self._rep_count = tf.Variable(0, dtype=tf.int32, trainable=False, name="replay_count")
        self._rep_pos = tf.Variable(0, dtype=tf.int32, trainable=False, name="replay_pos")
        self._rng_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="rng_counter")
        self.batches_seen = 0
        self.rows_seen = 0
        # Concept memory: (batches_seen when taken, weight vector) pairs; see :meth:`take_anchor` and :meth:`recall`.
        self._anchors: list[tuple[int, np.ndarray]] = []
        self._memory: list[tuple[int, np.ndarray, float]] = []  # and the accuracy of its concept
        self._memory_fn: Any = None
        self._chunk_fn = tf.function(self._run_chunk, jit_compile=cfg.jit_compile, reduce_retracing=False)

    # --- public API ------------------------------------------------------------------------------------------

    def process(self, x: np.ndarray, y: np.ndarray, sizes: Sequence[int] | None = None) -> list[BatchMetrics]:
        """Train on consecutive mini-batches and measure each.

        Args:
            x: float32 ``(N, raw width)`` rows in stream order (from :func:`include.training.decode.decode_batch`).
            y: ``(N,)`` labels 0/1.
            sizes: Rows per mini-batch (each at most ``batch_messages``, summing to N); by default a mini-batch every
                ``batch_messages`` rows, the last one possibly partial. Give them when the mini-batches were cut
                by message count and some messages failed to decode.

        Returns:
            One :class:`BatchMetrics` per mini-batch, in order.
        """
        return self.process_until(x, y, None, sizes)[0]

    def process_until(self, x: np.ndarray, y: np.ndarray, stop: StopRule | None,
                      sizes: Sequence[int] | None = None) -> tuple[list[BatchMetrics], bool]:
        """As :meth:`process`, but end right after the first mini-batch that meets ``stop`` (None: never): that
        mini-batch is trained and measured, the ones after it are left untouched. A caller that must act on a
        mini-batch before the next one trains (the drift monitor) describes where it might, and so never has to
        undo training.

        Returns:
            The metrics of the mini-batches trained (all of them, or up to the stopping one) and whether a mini-batch
            met ``stop`` (the last one trained).
        """
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        if x.ndim != 2 or x.shape[1] != self.width or x.shape[0] != y.shape[0]:
            raise ValueError(f"expected x of shape (N, {self.width}) and y of shape (N,), got {x.shape}, {y.shape}")
        sizes = split_sizes(x.shape[0], self.config.batch_messages, sizes)
        if stop is None:
            stop = StopRule(*_never(len(sizes)))
        per_batch = np.array([stop.accuracy_at_most, stop.error_above, stop.alarm_above], np.float32)
        if per_batch.shape != (3, len(sizes)):
            raise ValueError(f"a stop rule needs one value per mini-batch ({len(sizes)}), got {per_batch.shape[1:]}")
        chart = np.asarray(stop.chart(), np.float32)
        out: list[BatchMetrics] = []
        k_max = self.config.chunk_batches
        row = 0
        for c0 in range(0, len(sizes), k_max):
            chunk = sizes[c0:c0 + k_max]
            n_rows = sum(chunk)
            metrics, stopped, chart = self._process_chunk(x[row:row + n_rows], y[row:row + n_rows], chunk,
                                                          per_batch[:, c0:c0 + k_max], chart)
            out.extend(metrics)
            if stopped:
                return out, True
            row += n_rows
        return out, False

    def get_state(self) -> dict[str, Any]:
        """Everything besides the model needed to continue exactly: numpy arrays and JSON-able scalars."""
        return {
            "version": _STATE_VERSION,
            "config": self.config.as_dict(),
            "width": self.width,
            "batches_seen": int(self.batches_seen),
            "rows_seen": int(self.rows_seen),
            "window_x": self._win_x.numpy(),
            "window_y": self._win_y.numpy(),
            "window_count": int(self._win_count.numpy()),
            "window_pos": int(self._win_pos.numpy()),
            "replay_x": self._rep_x.numpy(),
            "replay_y": self._rep_y.numpy(),
            "replay_count": int(self._rep_count.numpy()),
            "replay_pos": int(self._rep_pos.numpy()),
            "rng_counter": int(self._rng_counter.numpy()),
            "anchors": _stack([v for _, v in self._anchors]), "anchors_at": [at for at, _ in self._anchors],
            "memory": _stack([v for _, v, _ in self._memory]), "memory_at": [at for at, _, _ in self._memory],
            "memory_quality": [q for _, _, q in self._memory],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s output (the model, with its optimizer, is restored separately)."""
        if int(state.get("version", -1)) != _STATE_VERSION:
            raise ValueError(f"unsupported learner state version {state.get('version')!r}")
        if int(state["width"]) != self.width:
            raise ValueError(f"state is for raw width {state['width']}, this model takes {self.width}")
        for name, var in (("window_x", self._win_x), ("window_y", self._win_y),
                          ("replay_x", self._rep_x), ("replay_y", self._rep_y)):
            arr = np.asarray(state[name], dtype=np.float32)
            if arr.shape != tuple(var.shape):
                raise ValueError(f"state {name} has shape {arr.shape}, this learner's config needs {tuple(var.shape)}")
            var.assign(arr)
        self._win_count.assign(int(state["window_count"]))
        self._win_pos.assign(int(state["window_pos"]))
        self._rep_count.assign(int(state["replay_count"]))
        self._rep_pos.assign(int(state["replay_pos"]))
        self._rng_counter.assign(int(state["rng_counter"]))
        self.batches_seen = int(state["batches_seen"])
        self.rows_seen = int(state["rows_seen"])
        size = sum(int(np.prod(v.shape)) for v in self.model.weights)
        loaded = {}
        for name in ("anchors", "memory"):  # absent from checkpoints written before the memory existed
            vectors = np.asarray(state.get(name, np.zeros((0, size))), np.float32).reshape(-1, size)
            at = [int(a) for a in state.get(f"{name}_at", [])]
            if len(at) != len(vectors):
                raise ValueError(f"state {name} has {len(vectors)} weight vectors but {len(at)} positions")
            loaded[name] = [(a, v.copy()) for a, v in zip(at, vectors)]
        quality = [float(q) for q in state.get("memory_quality", [])]
        if len(quality) != len(loaded["memory"]):
            raise ValueError(f"state memory has {len(loaded['memory'])} entries but {len(quality)} qualities")
        self._anchors[:] = loaded["anchors"]
        self._memory[:] = [(a, v, q) for (a, v), q in zip(loaded["memory"], quality)]

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out window's rows, oldest first."""
        count, pos = int(self._win_count.numpy()), int(self._win_pos.numpy())
        order = (np.arange(count) + pos - count) % self.config.window_size
        return self._win_x.numpy()[order], self._win_y.numpy()[order]

    def replay_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The replay buffer's rows, oldest first (empty in single-pass mode)."""
        count, pos = int(self._rep_count.numpy()), int(self._rep_pos.numpy())
        size = int(self._rep_x.shape[0])
        order = (np.arange(count) + pos - count) % size
        return self._rep_x.numpy()[order], self._rep_y.numpy()[order]

    # --- concept memory (include.training.drift): earlier model states, to recall when a concept returns -------------

    def weights_vector(self) -> np.ndarray:
        """The model's weights as one flat float32 vector (the order of ``model.weights``)."""
        return np.concatenate([np.asarray(v.numpy(), np.float32).reshape(-1) for v in self.model.weights])

    def take_anchor(self, keep: int = 3) -> None:
        """Remember the model as it is now (after ``batches_seen`` mini-batches) as an anchor; the newest ``keep``
        are kept. Anchors are what :meth:`remember` and :meth:`recall` store: states from before a change."""
        self._anchors.append((self.batches_seen, self.weights_vector()))
        del self._anchors[:-keep]

    def remember(self, before_batch: int, slots: int, skip_rows: int) -> bool:
        """Store the newest anchor taken after at most ``before_batch`` mini-batches in the memory (the oldest entry
        goes when there are more than ``slots``), with its quality: its accuracy on the held-out window but its
        newest ``skip_rows`` rows (those after the change), i.e. on its own concept. Anchors up to it are dropped
        (they are the concept just stored). False if there is no such anchor."""
        anchor = self._pop_anchor(before_batch)
        if anchor is None or slots <= 0:
            return False
        self._memory.append((anchor[0], anchor[1], self._window_accuracy_of(anchor[1], skip_rows)))
        del self._memory[:-slots]
        return True

    def recall(self, slot: int, before_batch: int, slots: int, skip_rows: int) -> None:
        """Make memory entry ``slot`` the live model (weights only: the optimizer goes on with its state and learning
        rate); the live concept's newest anchor from before the change (``before_batch``) takes its place in the
        memory, its quality measured as :meth:`remember` does."""
        _, recalled, _ = self._memory.pop(slot)
        live = self._pop_anchor(before_batch)
        if live is not None and slots > 0:
            self._memory.append((live[0], live[1], self._window_accuracy_of(live[1], skip_rows)))
            del self._memory[:-slots]
        self._set_weights_vector(recalled)

    def memory_size(self) -> int:
        return len(self._memory)

    def memory_quality(self) -> list[float]:
        """Each memory entry's accuracy when it was stored (on its own concept), oldest entry first."""
        return [q for _, _, q in self._memory]

    def memory_accuracy(self, x: np.ndarray, y: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
        """Each memory entry's accuracy on each mini-batch of ``x``, ``y`` (cut by ``sizes``): ``(entries, batches)``.

        The entries do not train, so this is prequential whenever it is computed; NaN for an empty mini-batch."""
        sizes = [int(s) for s in sizes]
        out = np.full((len(self._memory), len(sizes)), np.nan)
        if not self._memory or not sizes:
            return out
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        labels = np.asarray(y, np.float32).reshape(-1) > 0.5
        vectors = np.stack([v for _, v, _ in self._memory])
        pred = self._memory_predict()(np.asarray(x, np.float32), vectors).numpy()  # (entries, rows)
        correct = ((pred > 0.5) == labels[None, :]).astype(np.float64)
        if correct.shape[1]:
            hits = np.add.reduceat(correct, starts, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:] = np.where(np.asarray(sizes) > 0, hits / np.maximum(sizes, 1), np.nan)
        return out

    def _window_accuracy_of(self, vector: np.ndarray, skip_rows: int) -> float:
        """The accuracy of the model ``vector`` on the held-out window without its newest ``skip_rows`` rows (NaN if
        none are left)."""
        x, y = self.window()
        keep = max(0, len(y) - max(0, int(skip_rows)))
        if keep == 0:
            return float("nan")
        pred = self._memory_predict()(x[:keep], vector[None, :]).numpy()[0]
        return float(np.mean((pred > 0.5) == (y[:keep] > 0.5)))

    def _pop_anchor(self, before_batch: int) -> tuple[int, np.ndarray] | None:
        """The newest anchor taken after at most ``before_batch`` mini-batches, removed with the older ones."""
        found = [k for k, (at, _) in enumerate(self._anchors) if at <= before_batch]
        if not found:
            return None
        k = found[-1]
        entry = self._anchors[k]
        del self._anchors[:k + 1]
        return entry

    def _set_weights_vector(self, vector: np.ndarray) -> None:
        self._assign_vector(self.model.weights, vector)

    @staticmethod
    def _assign_vector(variables: Sequence[Any], vector: np.ndarray) -> None:
        at = 0
        for var in variables:
            size = int(np.prod(var.shape))
            var.assign(np.asarray(vector[at:at + size], np.float32).reshape(tuple(var.shape)))
            at += size
        if at != len(vector):
            raise ValueError(f"a weight vector of {len(vector)} values for a model of {at}")

    def _memory_predict(self) -> Any:
        """A compiled forward pass of all memory entries at once: ``(rows, raw) x (entries, weights) -> (entries,
        rows)`` probabilities. The weightless layers (the encoding) run once for all entries, then each entry's
        Dense layers, batched over the entries, with weights sliced from its vector."""
        if self._memory_fn is None:
            import keras
            import tensorflow as tf

            layers = [layer for layer in self.model.layers if not isinstance(layer, keras.layers.InputLayer)]
            first = next((k for k, layer in enumerate(layers) if layer.weights), len(layers))
            shared, dense = layers[:first], layers[first:]
            if not all(isinstance(layer, keras.layers.Dense) for layer in dense):
                raise ValueError("the concept memory scores a model of weightless layers followed by Dense layers")
            shapes = [(tuple(layer.kernel.shape), layer.bias is not None) for layer in dense]

            def predict(x, vectors):  # noqa: ANN001, ANN202 - traced
                h = x
                for layer in shared:
                    h = layer(h)
                h = tf.tile(h[None], [tf.shape(vectors)[0], 1, 1])  # (entries, rows, features)
                at = 0
                for layer, ((d_in, d_out), has_bias) in zip(dense, shapes):
                    kernel = tf.reshape(vectors[:, at:at + d_in * d_out], (-1, d_in, d_out))
                    at += d_in * d_out
                    h = tf.einsum("knd,kde->kne", h, kernel)
                    if has_bias:
                        h += vectors[:, None, at:at + d_out]
                        at += d_out
                    h = layer.activation(h)
                return h[:, :, 0]

            self._memory_fn = tf.function(predict, input_signature=[
                tf.TensorSpec((None, self.width), tf.float32), tf.TensorSpec((None, None), tf.float32)])
        return self._memory_fn

    def _zero_optimizer(self) -> None:
        for var in self.optimizer.variables:
            if var.name != "learning_rate":
                var.assign(np.zeros(tuple(var.shape), dtype=var.dtype))

    # --- drift reactions (include.training.drift): all take effect from the next mini-batch on ------------------------

    def keep_recent_replay(self, rows: int) -> None:
        """Forget all but the newest ``rows`` rows of the replay buffer (no-op in single-pass mode)."""
        if self.config.mode != "replay":
            return
        x, y = self.replay_rows()
        k = max(0, min(int(rows), len(y)))
        # Draws pick uniformly from slots [0, count), so the kept rows move to the front.
        new_x = np.zeros(tuple(self._rep_x.shape), np.float32)
        new_y = np.zeros(tuple(self._rep_y.shape), np.float32)
        new_x[:k], new_y[:k] = x[len(y) - k:], y[len(y) - k:]
        self._rep_x.assign(new_x)
        self._rep_y.assign(new_y)
        self._rep_count.assign(k)
        self._rep_pos.assign(k % self.config.replay_buffer)

    def learning_rate(self) -> float:
        return float(np.asarray(self.optimizer.learning_rate))

    def set_learning_rate(self, value: float) -> None:
        """Assign the optimizer's learning rate (a variable the compiled chunk reads: no retracing)."""
        self.optimizer.learning_rate = float(value)

    def reset_model(self) -> None:
        """Re-initialise the model's weights with their own (seeded) initialisers and zero the optimizer's state.

        The learning rate is kept. A seeded initialiser gives the same values every call, so this is the model
        as :func:`include.training.model.build_model` made it: deterministic, which keeps a resumed run exact.
        """
        for layer in self.model.layers:
            if not layer.weights:
                continue
            if not hasattr(layer, "kernel_initializer"):
                raise ValueError(f"cannot re-initialise layer {layer.name!r} ({type(layer).__name__})")
            layer.kernel.assign(layer.kernel_initializer(tuple(layer.kernel.shape), dtype=layer.kernel.dtype))
            if getattr(layer, "bias", None) is not None:
                layer.bias.assign(layer.bias_initializer(tuple(layer.bias.shape), dtype=layer.bias.dtype))
        self._zero_optimizer()

    def compile(self) -> None:
        """Trace and XLA-compile the chunk now (a call on no mini-batch: nothing is trained, measured or drawn), so
        the first real chunk does not pay for it and a caller can time it apart."""
        k_max, p = self.config.chunk_batches, self._rows_pad
        zeros_i = np.zeros(k_max, dtype=np.int32)
        self._chunk_fn(np.zeros((k_max, p, self.width), np.float32), np.zeros((k_max, p), np.float32),
                       zeros_i, zeros_i, np.array(0, dtype=np.int32), _never(k_max), _NO_CHART)

    def rehearse(self, batches: int) -> None:
        """Run ``batches`` x ``replay_steps`` replay steps on the buffer alone (replay mode; no rows are added,
        nothing is measured or counted)."""
        if self.config.mode != "replay" or batches <= 0 or int(self._rep_count.numpy()) == 0:
            return
        k_max, p = self.config.chunk_batches, self._rows_pad
        for start in range(0, batches, k_max):
            k = min(k_max, batches - start)
            zeros_i = np.zeros(k_max, dtype=np.int32)
            self._chunk_fn(np.zeros((k_max, p, self.width), np.float32), np.zeros((k_max, p), np.float32),
                           zeros_i, zeros_i, np.array(k, dtype=np.int32), _never(k_max), _NO_CHART)

    # --- the compiled chunk ----------------------------------------------------------------------------------

    def _process_chunk(self, x: np.ndarray, y: np.ndarray, sizes: list[int], per_batch: np.ndarray,
                       chart: np.ndarray) -> tuple[list[BatchMetrics], bool, np.ndarray]:
        cfg = self.config
        k_max, p = cfg.chunk_batches, self._rows_pad
        k = len(sizes)
        xb = np.zeros((k_max, p, self.width), dtype=np.float32)
        yb = np.zeros((k_max, p), dtype=np.float32)
        b = cfg.batch_messages
        if all(s == b for s in sizes):
            xb[:k, :b] = x.reshape(k, b, self.width)
            yb[:k, :b] = y.reshape(k, b)
        else:
            row = 0
            for i, s in enumerate(sizes):
                xb[i, :s] = x[row:row + s]
                yb[i, :s] = y[row:row + s]
                row += s
        n_rows = np.zeros(k_max, dtype=np.int32)
        n_rows[:k] = sizes
        n_train = np.zeros(k_max, dtype=np.int32)
        n_train[:k] = [cfg.train_rows(s) for s in sizes]
        stop = _never(k_max)
        stop[:, :k] = per_batch
        metrics, end, hit, chart = self._chunk_fn(xb, yb, n_rows, n_train, np.array(k, dtype=np.int32), stop, chart)
        metrics, end = metrics.numpy(), int(end)
        out = []
        for i, s in enumerate(sizes[:end]):
            loss, tacc, wacc, pacc, wcount, steps = metrics[i].tolist()
            out.append(BatchMetrics(
                index=self.batches_seen, n=s, n_train=int(n_train[i]), n_eval=s - int(n_train[i]),
                loss=loss, train_accuracy=tacc, window_accuracy=wacc, prequential_accuracy=pacc,
                window_size_now=int(wcount), steps=int(steps),
            ))
            self.batches_seen += 1
            self.rows_seen += s
        return out, bool(hit), chart.numpy()

    # --- the traced chunk: every method below runs inside tf.function(jit_compile=True) -----------------------
    # They are steps of one traced computation, not functions called per row: tracing inlines them into the same
    # graph the single function produced (same ops, same while loops and loop variables), so XLA compiles the same
    # program. Python control flow on Python values (``if self._replay``) is resolved while tracing; ``while`` on
    # tensors becomes a tf.while_loop (autograph).

    def _run_chunk(self, xb, yb, n_rows, n_train, n_batches, stop, chart):  # noqa: ANN001, ANN202 - traced
        """The chunk's metrics, ``(chunk_batches, 6)``: loss, train accuracy, window accuracy, prequential accuracy,
        window rows, steps per mini-batch (rows past the mini-batches trained are zeros); how many were trained
        (``n_batches``, or up to the first that met the stop rule: ``stop`` holds its per-mini-batch rows, ``chart``
        its chart, see :class:`StopRule`), whether one met it, and the chart after them."""
        import tensorflow as tf

        nan = tf.constant(float("nan"))
        out = tf.TensorArray(tf.float32, size=self.config.chunk_batches, element_shape=(6,))
        alpha, persist = chart[0], chart[4]
        level, full, run = chart[1], chart[2], chart[3]
        hit = tf.constant(False)
        # `while`, not `for ... in tf.range(n)`: autograph leaves a Range op on n, which XLA would treat as a
        # compile-time constant and recompile for every distinct n.
        i = tf.constant(0)
        end = n_batches
        while i < end:
            # Gathers, not slices: a slice's begin is a compile-time constant input for XLA, so slicing at a
            # position read from an argument would make XLA recompile for every distinct argument value.
            xi, yi, n, nt = tf.gather(xb, i), tf.gather(yb, i), tf.gather(n_rows, i), tf.gather(n_train, i)
            batch = self._run_batch(xi, yi, n, nt, nan)
            out = out.write(i, batch)
            rule = tf.gather(stop, i, axis=1)  # accuracy at most, error above, alarm above
            rows = tf.cast(n, tf.float32)
            has = rows > 0
            err = 1.0 - batch[3]
            new_full = tf.maximum(full, rows)
            w = rows / tf.maximum(new_full, 1.0)
            moved = tf.where(tf.math.is_nan(level), err, level + (1.0 - tf.pow(1.0 - alpha, w)) * (err - level))
            above = err > rule[1]
            new_run = tf.where(above, run + w, 0.0)
            met = has & ((batch[3] <= rule[0]) | (above & (moved > rule[2]) & (new_run >= persist)))
            level, full, run = (tf.where(has, moved, level), tf.where(has, new_full, full),
                                tf.where(has, new_run, run))
            hit = hit | met
            end = tf.where(met, i + 1, end)
            i += 1
        return out.stack(), end, hit, tf.stack([alpha, level, full, run, persist])

    def _run_batch(self, xi, yi, n, nt, nan):  # noqa: ANN001, ANN202 - traced
        """One mini-batch of ``n`` rows (``nt`` trained): predict, train, window; its 6 metrics."""
        import tensorflow as tf

        pre_acc = self._prequential_accuracy(xi, yi, n, nan)
        loss_sum, hit_sum, rows_sum = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
        steps = tf.constant(0)
        if self._plain:
            loss_sum, hit_sum, rows_sum, steps = self._plain_steps(xi, yi, nt, loss_sum, hit_sum, rows_sum, steps)
        if self._replay:
            loss_sum, hit_sum, rows_sum, steps = self._replay_steps(xi, yi, nt, loss_sum, hit_sum, rows_sum, steps)
        w_acc, wcount = self._update_window(xi, yi, n, nt, nan)
        has_rows = rows_sum > 0
        return tf.stack([
            tf.where(has_rows, loss_sum / tf.maximum(rows_sum, 1.0), nan),
            tf.where(has_rows, hit_sum / tf.maximum(rows_sum, 1.0), nan),
            w_acc,
            pre_acc,
            tf.cast(wcount, tf.float32),
            tf.cast(steps, tf.float32),
        ])

    def _prequential_accuracy(self, xi, yi, n, nan):  # noqa: ANN001, ANN202 - traced
        """The whole mini-batch's accuracy, before any training on it."""
        import tensorflow as tf

        rows_mask = tf.cast(tf.range(self._rows_pad) < n, tf.float32)
        pre = tf.reduce_sum(_correct(self.model(xi, training=False), yi) * rows_mask)
        return tf.where(n > 0, pre / tf.cast(tf.maximum(n, 1), tf.float32), nan)

    def _plain_steps(self, xi, yi, nt, loss_sum, hit_sum, rows_sum, steps):  # noqa: ANN001, ANN202 - traced
        """The first ``nt`` rows, once, in order, in steps of ``train_batch_size``; the sums carried on."""
        import tensorflow as tf

        bs = self._bs
        start = tf.constant(0)
        while start < nt:
            rows = start + tf.range(bs)
            mask = tf.cast(rows < nt, tf.float32)
            xs, ys = tf.gather(xi, rows), tf.gather(yi, rows)
            l_sum, h_sum = self._step(xs, ys, mask)
            loss_sum += l_sum
            hit_sum += h_sum
            rows_sum += tf.reduce_sum(mask)
            steps += 1
            start += bs
        return loss_sum, hit_sum, rows_sum, steps

    def _replay_steps(self, xi, yi, nt, loss_sum, hit_sum, rows_sum, steps):  # noqa: ANN001, ANN202 - traced
        """The new training rows join the replay buffer, then ``replay_steps`` steps on draws from it."""
        import tensorflow as tf

        cfg, bs = self.config, self._bs
        self._ring_write(self._rep_x, self._rep_y, self._rep_pos, cfg.replay_buffer, xi[:self._t_max], yi[:self._t_max], nt)
        self._rep_pos.assign((self._rep_pos + nt) % cfg.replay_buffer)
        self._rep_count.assign(tf.minimum(self._rep_count + nt, cfg.replay_buffer))
        count = self._rep_count.read_value()
        n_replay = tf.where(count > 0, cfg.replay_steps, 0)
        ones = tf.ones((bs,), tf.float32)
        r = tf.constant(0)
        while r < n_replay:
            for _ in range(self._replay_unroll):
                # A counter-based RNG: the draws depend only on the seed and the checkpointed counter.
                seed = tf.stack([tf.constant(cfg.seed, tf.int64), self._rng_counter.read_value()])
                self._rng_counter.assign_add(1)
                pick = tf.random.stateless_uniform((bs,), seed=seed, minval=0, maxval=count, dtype=tf.int32)
                l_sum, h_sum = self._step(tf.gather(self._rep_x, pick), tf.gather(self._rep_y, pick), ones)
                loss_sum += l_sum
                hit_sum += h_sum
                rows_sum += float(bs)
                steps += 1
                r += 1
        return loss_sum, hit_sum, rows_sum, steps

    def _update_window(self, xi, yi, n, nt, nan):  # noqa: ANN001, ANN202 - traced
        """The held-out rows join the window; then the window is measured. Its accuracy and row count."""
        import tensorflow as tf

        win_size, e_max = self.config.window_size, self._e_max
        ne = n - nt
        self._ring_write(self._win_x, self._win_y, self._win_pos, win_size,
                         tf.gather(xi, nt + tf.range(e_max)), tf.gather(yi, nt + tf.range(e_max)), ne)
        self._win_pos.assign((self._win_pos + ne) % win_size)
        self._win_count.assign(tf.minimum(self._win_count + ne, win_size))
        wcount = self._win_count.read_value()
        valid = tf.cast(tf.range(win_size) < wcount, tf.float32)
        w_hits = tf.reduce_sum(_correct(self.model(self._win_x.read_value(), training=False), self._win_y) * valid)
        return tf.where(wcount > 0, w_hits / tf.cast(tf.maximum(wcount, 1), tf.float32), nan), wcount

    def _step(self, xs, ys, mask):  # noqa: ANN001, ANN202 - traced
        """One gradient step on the rows where ``mask`` is 1 (mean loss over them); their loss and hit sums."""
        import keras
        import tensorflow as tf

        tvars = self.model.trainable_variables
        with tf.GradientTape() as tape:
            pred = self.model(xs, training=True)
            per_row = keras.losses.binary_crossentropy(ys[:, None], pred)
            per_row = tf.where(mask > 0, per_row, 0.0)
            loss = tf.reduce_sum(per_row) / tf.reduce_sum(mask)
        grads = tape.gradient(loss, tvars)
        self.optimizer.apply(grads, tvars)
        return tf.reduce_sum(per_row), tf.reduce_sum(_correct(pred, ys) * mask)

    @staticmethod
    def _ring_write(var_x, var_y, pos, size, xs, ys, count):  # noqa: ANN001, ANN205 - traced
        """Write rows ``xs[:count]`` at ``pos, pos+1, ...`` (mod ``size``); the padded rows write back what is there."""
        import tensorflow as tf

        rows = int(xs.shape[0])  # static: XLA needs fixed shapes
        idx = (pos + tf.range(rows)) % size
        keep = tf.range(rows) < count
        new_x = tf.where(keep[:, None], xs, tf.gather(var_x, idx))
        new_y = tf.where(keep, ys, tf.gather(var_y, idx))
        var_x.scatter_nd_update(idx[:, None], new_x)
        var_y.scatter_nd_update(idx[:, None], new_y)


def _never(k: int) -> np.ndarray:
    """A stop rule's per-mini-batch rows (accuracy at most, error above, alarm above) that no mini-batch meets."""
    return np.array([[-np.inf] * k, [np.inf] * k, [np.inf] * k], np.float32)


_NO_CHART = np.array([1.0, np.nan, 0.0, 0.0, 0.0], np.float32)


def _stack(vectors: list[np.ndarray]) -> np.ndarray:
    """Weight vectors as one ``(count, size)`` array (``(0, 0)`` when there are none)."""
    return np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)


def _correct(pred, labels):  # noqa: ANN001, ANN202 - traced
    """1.0 where the prediction (threshold 0.5) matches the label, else 0.0."""
    import tensorflow as tf

    return tf.cast(tf.equal(tf.cast(pred[:, 0] > 0.5, tf.float32), labels), tf.float32)
