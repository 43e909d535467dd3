"""Score a trained run (or an exported bundle) on a held-out split.

Writes metrics.json (per head: accuracy, macro-F1, per-class report, ECE;
customer_type micro/macro-F1), confusion-matrix PNGs, and the TF-IDF baseline
on the same split. Model cards and docs are generated from metrics.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT
from kefu_router.training.baseline import baseline_metrics
from kefu_router.training.data import Example, label_arrays, load_examples, to_messages
from kefu_router.training.metrics import all_metrics, headline

log = logging.getLogger(__name__)


def plot_confusion(head, y_true: np.ndarray, probs: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.1 * head.size + 3, 1.0 * head.size + 2.5))
    ConfusionMatrixDisplay.from_predictions(
        y_true, probs.argmax(axis=1), labels=list(range(head.size)), display_labels=list(head.labels),
        ax=ax, colorbar=False, xticks_rotation=45,
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report(name: str, metrics: dict) -> str:
    h = headline(metrics)
    return (
        f"{name:<10} emotion acc {metrics['emotion']['accuracy']:.3f} macro-F1 {h['emotion_macro_f1']:.3f} | "
        f"intent acc {metrics['intent']['accuracy']:.3f} macro-F1 {h['intent_macro_f1']:.3f} | "
        f"customer_type micro-F1 {h['customer_type_micro_f1']:.3f} macro-F1 {h['customer_type_macro_f1']:.3f}"
    )


def evaluate_run(run_dir: str | Path, split: str = "test", with_baseline: bool = True) -> dict:
    """Evaluate the checkpoint of a `train` run on its own split (same data, seed and fractions)."""
    import torch

    from kefu_router.training.train import load_run, predict_probabilities

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    examples = run.splits[split]
    if not examples:
        raise ValueError(f"the {split} split of {run.config.data} is empty")
    with torch.inference_mode():
        probs = predict_probabilities(run.model, run.tokenizer, examples, run.config, temperatures=run.fitted.get("temperature"))
    result = _score(examples, probs, run.fitted[CUSTOMER_TYPE.name], run_dir, split)
    if with_baseline:
        result["baseline"] = baseline_metrics(run.splits, split, run.config.seed)
        result["baseline_headline"] = headline(result["baseline"])
        print(_report("baseline", result["baseline"]))
    (run_dir / "metrics.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return result


def evaluate_bundle(bundle_dir: str | Path, data: str | Path, output_dir: str | Path, split: str | None = "test") -> dict:
    """Evaluate an exported bundle through the runtime predictor on a labelled file."""
    from kefu_router.predictor import Predictor

    examples, report = load_examples(data)
    log.info(report.summary())
    if split and any(ex.split for ex in examples):
        examples = [ex for ex in examples if ex.split == split]
    if not examples:
        raise ValueError(f"no labelled examples in {data} (split {split})")
    predictor = Predictor(bundle_dir)
    probs = predictor.probabilities(to_messages(examples))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = _score(examples, probs, predictor.bundle.thresholds, out, split or "all")
    (out / "metrics.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return result


def _score(examples: list[Example], probs: dict, thresholds: dict, out_dir: Path, split: str) -> dict:
    targets = label_arrays(examples)
    metrics = all_metrics(targets, probs, thresholds)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for head in (EMOTION, INTENT):
        plot_confusion(head, targets[head.name], probs[head.name], plots / f"confusion_{head.name}.png", f"{head.name} ({split}, n={len(examples)})")
    print(_report("model", metrics))
    return {"split": split, "n": len(examples), "model": metrics, "headline": headline(metrics)}
