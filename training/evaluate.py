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
from kefu_router.training.baseline import TfidfBaseline
from kefu_router.training.corpus.real_sources import SOURCES as REAL_SOURCES
from kefu_router.training.data import Example, label_arrays, load_examples, to_messages
from kefu_router.training.metrics import all_metrics, conversation_trait_metrics, headline

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
    conv = f" conversation micro-F1 {h['customer_type_conversation_micro_f1']:.3f}" if "customer_type_conversation_micro_f1" in h else ""
    return (
        f"{name:<18} emotion acc {metrics['emotion']['accuracy']:.3f} macro-F1 {h['emotion_macro_f1']:.3f} | "
        f"intent acc {metrics['intent']['accuracy']:.3f} macro-F1 {h['intent_macro_f1']:.3f} | "
        f"customer_type micro-F1 {h['customer_type_micro_f1']:.3f} macro-F1 {h['customer_type_macro_f1']:.3f}{conv}"
    )


def split_groups(examples: list[Example]) -> dict[str, np.ndarray]:
    """Row indices of the groups a split is scored on: `real` (rows of the real sources: buyers' own text,
    labelled by this team), `project` (the project's own corpus) and `all`. Empty groups are left out."""
    real = np.array([ex.source in REAL_SOURCES for ex in examples], dtype=bool)
    groups = {"real": np.flatnonzero(real), "project": np.flatnonzero(~real), "all": np.arange(len(examples))}
    return {name: rows for name, rows in groups.items() if len(rows)}


def evaluate_run(run_dir: str | Path, split: str = "test", with_baseline: bool = True) -> dict:
    """Evaluate the checkpoint of a `train` run on its own split (same data, seed and fractions), per group
    (real, project, all); the TF-IDF + LR baseline is trained on the same train split, its trait thresholds
    tuned on the same selection dev rows, and scored on the same groups."""
    import torch

    from kefu_router.training.train import load_run, predict_probabilities

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    examples = run.splits[split]
    if not examples:
        raise ValueError(f"the {split} split of {run.config.data} is empty")
    with torch.inference_mode():
        probs = predict_probabilities(run.model, run.tokenizer, examples, run.config, temperatures=run.fitted.get("temperature"))
    baseline = TfidfBaseline(run.config.seed).fit(run.splits["train"]) if with_baseline else None
    baseline_thresholds = baseline.dev_thresholds(run.selection_dev) if baseline else None
    result = {"split": split, "groups": {}}
    for name, rows in split_groups(examples).items():
        items = [examples[i] for i in rows]
        group_probs = {head: p[rows] for head, p in probs.items()}
        scored = _score(items, group_probs, run.fitted[CUSTOMER_TYPE.name], run_dir / "plots" / name, f"{split}/{name}")
        if baseline:
            scored["baseline"] = score_examples(items, baseline.probabilities(items), baseline_thresholds)
            scored["baseline_headline"] = headline(scored["baseline"])
            print(_report(f"{split}/{name} TF-IDF", scored["baseline"]))
        result["groups"][name] = scored
    (run_dir / "metrics.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return result


def evaluate_bundle(bundle_dir: str | Path, data: str | Path | list, output_dir: str | Path, split: str | None = "test") -> dict:
    """Evaluate an exported bundle through the runtime predictor on labelled files (each loaded and
    de-duplicated on its own, as `train` loads them), per group like a run."""
    from kefu_router.predictor import Predictor

    examples = []
    for path in data if isinstance(data, list) else [data]:
        loaded, report = load_examples(path)
        log.info(report.summary())
        examples += loaded
    if split and any(ex.split for ex in examples):
        examples = [ex for ex in examples if ex.split == split]
    if not examples:
        raise ValueError(f"no labelled examples in {data} (split {split})")
    predictor = Predictor(bundle_dir)
    probs = predictor.probabilities(to_messages(examples))
    out = Path(output_dir)
    result = {"split": split or "all", "model_version": predictor.version, "groups": {}}
    for name, rows in split_groups(examples).items():
        group_probs = {head: p[rows] for head, p in probs.items()}
        result["groups"][name] = _score([examples[i] for i in rows], group_probs, predictor.bundle.thresholds,
                                        out / "plots" / name, f"{split or 'all'}/{name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return result


def primary_group(metrics: dict) -> tuple[str, dict]:
    """The group a headline quotes: the real split when there is one, else all."""
    groups = metrics["groups"]
    name = "real" if "real" in groups else "all"
    return name, groups[name]


def score_examples(examples: list[Example], probs: dict, thresholds: dict, targets: dict | None = None) -> dict:
    """Every metric of `all_metrics`, plus customer type per conversation (`targets`: their label_arrays)."""
    targets = label_arrays(examples) if targets is None else targets
    metrics = all_metrics(targets, probs, thresholds)
    metrics["customer_type_conversation"] = conversation_trait_metrics(
        [ex.conversation_id for ex in examples], targets[CUSTOMER_TYPE.name], probs[CUSTOMER_TYPE.name], thresholds)
    return metrics


def _score(examples: list[Example], probs: dict, thresholds: dict, plots: Path, split: str) -> dict:
    targets = label_arrays(examples)
    metrics = score_examples(examples, probs, thresholds, targets)
    plots.mkdir(parents=True, exist_ok=True)
    for head in (EMOTION, INTENT):
        plot_confusion(head, targets[head.name], probs[head.name], plots / f"confusion_{head.name}.png", f"{head.name} ({split}, n={len(examples)})")
    print(_report(f"{split} model", metrics))
    return {"split": split, "n": len(examples), "model": metrics, "headline": headline(metrics)}
