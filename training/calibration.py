"""Temperature scaling of the softmax heads, fitted on the dev split.

Class-weighted training leaves emotion and intent scores overconfident, and the
router reads those scores (`confidence_below` sends unsure conversations to
human review). One temperature T per head, chosen to minimise the negative
log-likelihood of softmax(logits / T) on dev, makes a score of 0.6 mean about
60% right without changing any predicted label (Guo et al., 2017). Customer-type
traits are sigmoid outputs with their own dev-tuned thresholds and are left alone.

    python -m kefu_router.training.calibration runs/default   # refit an existing run (temperatures, review threshold)

`train` fits the temperatures itself; they travel in thresholds.json into the
bundle, where `Predictor` applies them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from kefu_router.labels import HEADS
from kefu_router.training.data import MISSING

SOFTMAX_HEADS = [h for h in HEADS if not h.multi_label]


def fit_review_threshold(probs: dict[str, np.ndarray], targets: dict[str, np.ndarray], max_right: float = 0.5) -> dict | None:
    """The review threshold on (calibrated) dev probabilities: flag a message when it is more likely wrong than right.

    confidence = min(emotion score, intent score), as the router reads it; P(emotion or intent wrong | confidence)
    is fitted on dev by isotonic regression (decreasing), and the threshold is just above the highest confidence
    at which that probability is still at least 1 - `max_right`. Returns {"below": t, "flag_rate", "precision",
    "recall", "dev_rows"} (precision: flagged messages that are wrong; recall: wrong messages that are flagged),
    or None without labelled dev rows.
    """
    import math

    from sklearn.isotonic import IsotonicRegression

    known = (targets["emotion"] != MISSING) & (targets["intent"] != MISSING)
    if not known.any():
        return None
    confidence = np.minimum(probs["emotion"].max(axis=1), probs["intent"].max(axis=1))[known]
    wrong = ((probs["emotion"].argmax(axis=1) != targets["emotion"]) | (probs["intent"].argmax(axis=1) != targets["intent"]))[known]
    p_wrong = IsotonicRegression(increasing=False, out_of_bounds="clip").fit(confidence, wrong.astype(float)).predict(confidence)
    unsure = confidence[p_wrong >= 1 - max_right]
    below = min(1.0, math.floor(float(unsure.max()) * 1e4 + 1) / 1e4) if len(unsure) else 0.0
    flagged = confidence < below
    return {"below": below, "flag_rate": float(flagged.mean()),
            "precision": float(wrong[flagged].mean()) if flagged.any() else 0.0,
            "recall": float(flagged[wrong].mean()) if wrong.any() else 0.0, "dev_rows": int(known.sum())}


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under softmax(logits / temperature)."""
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises dev NLL (searched in log space); 1.0 without labelled rows."""
    known = labels != MISSING
    logits, labels = logits[known], labels[known]
    if not len(labels):
        return 1.0
    result = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(20)),
                             method="bounded")
    return round(float(np.exp(result.x)), 4)


def fit_temperatures(logits: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> dict[str, float]:
    return {h.name: fit_temperature(logits[h.name], targets[h.name]) for h in SOFTMAX_HEADS}


def calibrate_run(run_dir: str | Path) -> dict[str, float]:
    """Fit the temperatures of a `train` run's checkpoint on its selection dev rows (the dev rows of
    `selection_sources`, or all of dev); written into its thresholds.json."""
    import torch

    from kefu_router.training.data import label_arrays
    from kefu_router.training.train import load_run, predict_logits

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    dev = run.selection_dev
    with torch.inference_mode():
        logits = predict_logits(run.model, run.tokenizer, dev, run.config)
    targets = label_arrays(dev)
    temperatures = fit_temperatures(logits, targets)
    for head, t in temperatures.items():
        known = targets[head] != MISSING
        print(f"{head}: T = {t:.3f}, dev NLL {nll(logits[head][known], targets[head][known]):.4f} -> "
              f"{nll(logits[head][known], targets[head][known], t):.4f} (n={int(known.sum())})")
    from kefu_router.predictor import head_probabilities

    review = fit_review_threshold({h.name: head_probabilities(h, logits[h.name], temperatures) for h in HEADS}, targets)
    print(f"review below {review['below']}: flags {review['flag_rate']:.1%} of dev, precision {review['precision']:.3f}, "
          f"recall {review['recall']:.3f}" if review else "review: no labelled dev rows")
    fitted = {**run.fitted, "temperature": temperatures, **({"review": review} if review else {})}
    (run_dir / "thresholds.json").write_text(json.dumps(fitted, ensure_ascii=False, indent=2), encoding="utf-8")
    return temperatures


def main() -> None:
    parser = argparse.ArgumentParser(description="Fit softmax temperatures and the review threshold of a train run on its dev split.")
    parser.add_argument("run_dir", type=Path)
    calibrate_run(parser.parse_args().run_dir)


if __name__ == "__main__":
    main()
