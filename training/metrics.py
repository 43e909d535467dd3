"""Metrics on plain arrays: label ids and probabilities in, numbers out. No framework needed."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, f1_score

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, HEADS, INTENT

THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece, n = 0.0, len(confidence)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.sum() / n * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Per trait, the grid threshold with the best F1 on these (dev) labels; 0.5 when a trait is absent."""
    thresholds = {}
    for j, trait in enumerate(CUSTOMER_TYPE.labels):
        if y_true[:, j].sum() == 0:
            thresholds[trait] = 0.5
            continue
        scores = [f1_score(y_true[:, j], probs[:, j] >= t, zero_division=0) for t in THRESHOLD_GRID]
        thresholds[trait] = float(THRESHOLD_GRID[int(np.argmax(scores))])
    return thresholds


def single_label_metrics(head, y_true: np.ndarray, probs: np.ndarray) -> dict:
    y_pred = probs.argmax(axis=1)
    labels = list(range(head.size))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "ece": expected_calibration_error(probs.max(axis=1), (y_pred == y_true).astype(float)),
        "per_class": classification_report(
            y_true, y_pred, labels=labels, target_names=list(head.labels), output_dict=True, zero_division=0
        ),
    }


def multi_label_metrics(y_true: np.ndarray, probs: np.ndarray, thresholds: dict[str, float]) -> dict:
    cut = np.array([thresholds[t] for t in CUSTOMER_TYPE.labels])
    y_pred = (probs >= cut).astype(int)
    return {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "exact_match": float((y_pred == y_true).all(axis=1).mean()),
        # per trait a binary probability: bins of p(trait) against the observed rate of the trait
        "ece": expected_calibration_error(probs.ravel(), y_true.ravel().astype(float)),
        "per_class": classification_report(
            y_true, y_pred, target_names=list(CUSTOMER_TYPE.labels), output_dict=True, zero_division=0
        ),
        "thresholds": thresholds,
    }


def conversation_trait_metrics(conversation_ids, y_true: np.ndarray, probs: np.ndarray, thresholds: dict[str, float]) -> dict:
    """Customer type per conversation: the union of a conversation's predicted traits (each message's
    probabilities cut at `thresholds`, as the router accumulates them) against the union of its gold traits.
    Shapes: `conversation_ids` (n,), `y_true` and `probs` (n, 7). Returns micro/macro-F1 over conversations."""
    cut = np.array([thresholds[t] for t in CUSTOMER_TYPE.labels])
    convs, row_conv = np.unique(np.asarray(conversation_ids), return_inverse=True)
    gold_u = np.zeros((len(convs), CUSTOMER_TYPE.size), dtype=int)
    pred_u = np.zeros_like(gold_u)
    np.maximum.at(gold_u, row_conv, np.asarray(y_true, dtype=int))
    np.maximum.at(pred_u, row_conv, (probs >= cut).astype(int))
    return {
        "conversations": len(convs),
        "micro_f1": float(f1_score(gold_u, pred_u, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold_u, pred_u, average="macro", zero_division=0)),
    }


def all_metrics(targets: dict[str, np.ndarray], probs: dict[str, np.ndarray], thresholds: dict[str, float]) -> dict:
    return {
        EMOTION.name: single_label_metrics(EMOTION, targets[EMOTION.name], probs[EMOTION.name]),
        INTENT.name: single_label_metrics(INTENT, targets[INTENT.name], probs[INTENT.name]),
        CUSTOMER_TYPE.name: multi_label_metrics(targets[CUSTOMER_TYPE.name], probs[CUSTOMER_TYPE.name], thresholds),
    }


def headline(metrics: dict) -> dict[str, float]:
    """The few numbers quoted in model cards, /v1/model and tables."""
    return {
        "emotion_macro_f1": round(metrics["emotion"]["macro_f1"], 4),
        "intent_macro_f1": round(metrics["intent"]["macro_f1"], 4),
        "customer_type_macro_f1": round(metrics["customer_type"]["macro_f1"], 4),
        "customer_type_micro_f1": round(metrics["customer_type"]["micro_f1"], 4),
        **({"customer_type_conversation_micro_f1": round(metrics["customer_type_conversation"]["micro_f1"], 4)}
           if "customer_type_conversation" in metrics else {}),
        "emotion_ece": round(metrics["emotion"]["ece"], 4),
        "intent_ece": round(metrics["intent"]["ece"], 4),
    }


def selection_score(metrics: dict) -> float:
    """Mean macro-F1 over the heads: what early stopping maximises on dev."""
    return float(np.mean([metrics[h.name]["macro_f1"] for h in HEADS]))
