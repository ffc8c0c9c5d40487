"""The promotion gate: forward evaluation of a candidate against the champion on rows neither has trained on.

The rule. The candidate registered by run N is judged when run N+1 has registered version N+1: the candidate and
the champion score version N+1's ``holdout.npz`` (the rows run N+1 held out: never trained by either model, all
newer than both) at threshold 0.5. With ``rows`` rows, accuracies ``a_cand`` and ``a_champ``:

* ``rows < gate_min_rows``: no decision; the candidate waits (``wait``). When a newer candidate can be judged,
  the waiting one is ``superseded`` (never judged);
* ``a_cand >= a_champ - gate_tolerance`` and (no ``gate_floor`` or ``a_cand >= gate_floor``): ``promote``;
* else ``reject`` (and an alert).

Judged on its own run's held-out rows instead, a candidate trained on label-flipped data would win (its held-out
rows are flipped too); judged on the next run's rows it loses. McNemar's exact test (two-sided binomial on the
discordant pairs ``b``: candidate right and champion wrong, ``c``: the reverse) is recorded with the decision, as
evidence for a person; the rule above decides. Only the newest candidate that has a next version is judged; older
candidates still waiting are superseded.

:func:`judge` computes (reads only); :func:`record` applies a judgement through :mod:`include.lifecycle.promotion`
(idempotent: a candidate already decided is left alone); :func:`evaluate` does both until nothing is left. Never
trains and never reads Kafka.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from fractions import Fraction
from math import comb
from typing import Any

import numpy as np

from include.lifecycle import promotion
from include.lifecycle.alerts import record_alert
from include.lifecycle.registry import Registry, VersionInfo
from include.lifecycle.versions import load_holdout

log = logging.getLogger(__name__)

ACTOR = "gate"
THRESHOLD = 0.5
DECISIONS = ("promote", "reject", "wait", "supersede")


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value: ``min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``."""
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2 ** n)))


def decide(candidate_accuracy: float, champion_accuracy: float, rows: int, *, tolerance: float,
           floor: float | None, min_rows: int) -> tuple[str, str]:
    """The gate's rule (module docstring): ``(decision, reason)`` with decision ``promote``, ``reject`` or ``wait``."""
    numbers = f"candidate {candidate_accuracy:.4f} vs champion {champion_accuracy:.4f} on {rows} rows"
    if rows < min_rows:
        return "wait", f"only {rows} held-out rows (the gate needs {min_rows}): waiting for the next run"
    if candidate_accuracy < champion_accuracy - tolerance:
        return "reject", f"{numbers}: more than {tolerance:.4f} below the champion"
    if floor is not None and candidate_accuracy < floor:
        return "reject", f"{numbers}: below the floor {floor:.4f}"
    return "promote", f"{numbers}: within {tolerance:.4f} of the champion or better"


def compare(candidate_correct: np.ndarray, champion_correct: np.ndarray) -> dict[str, Any]:
    """Accuracies and McNemar's discordant pairs of two models' per-row hits on the same rows."""
    cand, champ = np.asarray(candidate_correct, bool), np.asarray(champion_correct, bool)
    rows = int(len(cand))
    b, c = int(np.sum(cand & ~champ)), int(np.sum(~cand & champ))
    return {"candidate_accuracy": float(cand.mean()) if rows else 0.0,
            "champion_accuracy": float(champ.mean()) if rows else 0.0,
            "rows": rows, "mcnemar_b": b, "mcnemar_c": c, "mcnemar_p": mcnemar_p(b, c)}


@dataclass(frozen=True)
class Judgement:
    """What the gate says about one candidate (JSON-able with :meth:`as_dict`)."""

    model_name: str
    version: int
    decision: str  # one of DECISIONS
    reason: str
    gate: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(registry: Registry, model_name: str) -> list[Judgement]:
    """The gate's judgements for the model's waiting candidates now: older ones superseded, the newest judged.

    Reads only. Empty when no candidate has a newer version to be judged on.
    """
    versions = sorted(registry.versions(model_name), key=lambda v: v.version)
    champion = registry.champion_version(model_name)
    newest = versions[-1].version if versions else 0
    judgeable = [v for v in versions if v.status == "candidate" and v.version < newest]
    if not judgeable or champion is None:
        return []
    newest = judgeable[-1].version
    out = [Judgement(model_name, v.version, "supersede", f"not judged: the newer candidate {newest} is judged instead")
           for v in judgeable[:-1]]
    candidate = judgeable[-1]
    if champion > candidate.version:
        return out + [Judgement(model_name, candidate.version, "supersede",
                                f"not judged: version {champion}, newer, is the champion already")]
    following = next(v for v in versions if v.version > candidate.version)
    return out + [judge_against(registry, candidate, registry.get(model_name, champion), following)]


def judge_against(registry: Registry, candidate: VersionInfo, champion: VersionInfo,
                  following: VersionInfo) -> Judgement:
    """Score the candidate and the champion on ``following``'s held-out rows and apply the rule (reads only).

    The three may be of different model names: a rebuild's candidate is judged against the live champion on the live
    lineage's newest held-out rows (:mod:`include.rebuild.decide`)."""
    settings = registry.settings
    holdout = load_holdout(following) if following.on_disk else None
    x, y = holdout if holdout is not None else (np.zeros((0, 0), np.float32), np.zeros(0, np.float32))
    if len(y) and candidate.on_disk and champion.on_disk:
        numbers = compare(_hits(candidate, x, y), _hits(champion, x, y))
    else:
        numbers = compare(np.zeros(0, bool), np.zeros(0, bool))
    decision, reason = decide(numbers["candidate_accuracy"], numbers["champion_accuracy"], numbers["rows"],
                              tolerance=settings.gate_tolerance, floor=settings.gate_floor,
                              min_rows=settings.gate_min_rows)
    gate = {**numbers, "champion_version": champion.version, "evaluated_on_version": following.version,
            **({"candidate_model": candidate.model_name, "champion_model": champion.model_name,
                "evaluated_on_model": following.model_name}
               if len({candidate.model_name, champion.model_name, following.model_name}) > 1 else {}),
            "tolerance": settings.gate_tolerance, "floor": settings.gate_floor, "min_rows": settings.gate_min_rows,
            "decision": decision}
    return Judgement(candidate.model_name, candidate.version, decision, reason, gate)


def _hits(info: VersionInfo, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether ``info``'s model (threshold 0.5) gets each row right."""
    from include.serving.model import LoadedModel

    predicted = LoadedModel(info.keras_path, info.version).predict(np.asarray(x, np.float32)) > THRESHOLD
    return predicted == (np.asarray(y) > THRESHOLD)


def record(registry: Registry, judgement: Judgement) -> bool:
    """Apply a judgement (idempotent); True if it changed the candidate's status."""
    name, version, gate, reason = judgement.model_name, judgement.version, judgement.gate, judgement.reason
    if judgement.decision == "promote":
        if registry.get(name, version).status != "candidate":
            return False
        promotion.promote(registry, name, version, actor=ACTOR, reason=reason, gate=gate,
                          event_key=f"gate:promoted:{version}")
        return True
    if judgement.decision == "reject":
        message = (f"model {name}: candidate version {version} rejected: accuracy {gate['candidate_accuracy']:.4f} vs "
                   f"champion version {gate['champion_version']} {gate['champion_accuracy']:.4f} on "
                   f"{gate['rows']} held-out rows of version {gate['evaluated_on_version']}")
        # The alert first (keyed: recorded once): a crash before the status change is retried whole, never lost.
        record_alert(registry, name, "candidate_rejected", f"rejected:{version}", message, version=version,
                     details=gate)
        return promotion.reject(registry, name, version, actor=ACTOR, reason=reason, gate=gate)
    if judgement.decision == "supersede":
        return promotion.supersede(registry, name, version, actor=ACTOR, reason=reason)
    promotion.defer(registry, name, version, actor=ACTOR, reason=reason, gate=gate)
    return False


def evaluate(registry: Registry, model_name: str) -> list[Judgement]:
    """Judge and record until no waiting candidate can be judged; the judgements recorded (in order)."""
    done: list[Judgement] = []
    while True:
        judgements = judge(registry, model_name)
        for j in judgements:
            record(registry, j)
            log.info("gate: model %s version %d: %s (%s)", model_name, j.version, j.decision, j.reason)
        done.extend(judgements)
        if not judgements or judgements[-1].decision == "wait":
            return done
