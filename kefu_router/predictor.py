"""Predict emotion, intent and customer type with an exported bundle.

Runtime dependencies only: onnxruntime, tokenizers, numpy. Serving, batch
tagging, evaluation of bundles and the notebooks all go through `Predictor`.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence, Union

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from kefu_router.bundle import Bundle, BundleError, load_bundle
from kefu_router.labels import CUSTOMER_TYPE, EMOTION, HEADS, INTENT, Head
from kefu_router.text import Message, encode, pad, prepare_tokenizer

MessageLike = Union[str, Message]
POSITIONS_KEY = "max_position_embeddings"  # ONNX metadata entry: the longest input the graph accepts, in tokens


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def head_probabilities(head: Head, logits: np.ndarray, temperatures: dict[str, float] | None = None) -> np.ndarray:
    """A head's logits (n, labels) as probabilities: sigmoid per trait, or softmax of logits / T with the
    head's fitted temperature (training/calibration.py; 1 when none), so scores match accuracy."""
    if head.multi_label:
        return sigmoid(logits)
    return softmax(logits / (temperatures or {}).get(head.name, 1.0))


class Predictor:
    """Loads a bundle once; `predict` is safe to call from several threads.

    Raises BundleError (one line naming the file and field) for a bundle that fails its checks.
    """

    def __init__(
        self,
        bundle: str | os.PathLike | Bundle | None = None,
        *,
        precision: str = "int8",
        batch_size: int = 64,
        threads: int | None = None,
        spinning: bool = True,
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.batch_size = batch_size
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if not spinning:  # idle pool threads sleep instead of busy-waiting: leaves the CPU to other work
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = self.bundle.onnx_path(precision)
        where = f"cannot load model bundle {self.bundle.path}"
        try:  # onnxruntime and tokenizers raise their own types for a corrupt file
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BundleError(f"{where}: {path.name}: {' '.join(str(exc).split())}") from exc
        try:
            self.tokenizer = prepare_tokenizer(Tokenizer.from_file(str(self.bundle.path / "tokenizer.json")))
        except Exception as exc:
            raise BundleError(f"{where}: tokenizer.json: {' '.join(str(exc).split())}") from exc
        missing = [t for t in ("[CLS]", "[SEP]", "[PAD]") if self.tokenizer.token_to_id(t) is None]
        if missing:
            raise BundleError(f"{where}: tokenizer.json: no {', '.join(missing)} token")
        self.precision = precision
        self.pad_id = self.tokenizer.token_to_id("[PAD]")
        self._input_names = {i.name for i in self.session.get_inputs()}
        check_graph(self.session, self.bundle, path.name)
        self._thresholds = np.array([self.bundle.thresholds[t] for t in CUSTOMER_TYPE.labels], dtype=np.float32)

    @property
    def version(self) -> str:
        return self.bundle.version

    def probabilities(self, messages: Sequence[MessageLike]) -> dict[str, np.ndarray]:
        """Per head, an array (n_messages, n_labels) of probabilities, in input order."""
        items = [m if isinstance(m, Message) else Message.of(m) for m in messages]
        out = {h.name: np.zeros((len(items), h.size), dtype=np.float32) for h in HEADS}
        if not items:
            return out
        encoded = encode(self.tokenizer, items, self.bundle.max_length, self.bundle.max_context_turns)
        order = np.argsort([len(ids) for ids, _ in encoded], kind="stable")  # similar lengths share a batch
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            feeds = pad([encoded[i] for i in idx], self.pad_id)
            feeds = {k: v for k, v in feeds.items() if k in self._input_names}
            logits = self.session.run([h.name for h in HEADS], feeds)
            for head, head_logits in zip(HEADS, logits):
                out[head.name][idx] = head_probabilities(head, head_logits, self.bundle.temperatures)
        return out

    def predict(self, messages: Sequence[MessageLike]) -> list[dict]:
        """Labels and scores per message: see `format_prediction`."""
        probs = self.probabilities(messages)
        return [
            format_prediction({h: probs[h][i] for h in probs}, self._thresholds) for i in range(len(messages))
        ]

    def predict_one(self, text: str, context: Iterable[tuple[str, str]] | None = None) -> dict:
        return self.predict([Message.of(text, context)])[0]


def check_graph(session: ort.InferenceSession, bundle: Bundle, name: str) -> None:
    """Raise BundleError unless the graph gives one logit per label of each head and takes `max_length` tokens.

    The token limit is the graph's own `max_position_embeddings` entry (written by export); a graph
    without one is probed with a single input of `max_length` tokens.
    """
    where = f"bundle {bundle.path}"
    shapes = {o.name: o.shape for o in session.get_outputs()}
    for head in HEADS:
        if head.name not in shapes or shapes[head.name][-1] != head.size:
            raise BundleError(f"{where}: {name}: output {head.name!r} must give {head.size} logits, the graph gives {shapes.get(head.name)}")
    limit = session.get_modelmeta().custom_metadata_map.get(POSITIONS_KEY)
    if limit is not None:
        if not limit.isdigit() or bundle.max_length > int(limit):
            raise BundleError(f"{where}: metadata.json: max_length {bundle.max_length} exceeds the {limit} position embeddings of {name}")
        return
    ids = np.ones((1, bundle.max_length), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": ids, "token_type_ids": np.zeros_like(ids)}
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the failure is reported below, not logged by onnxruntime
    try:
        session.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}}, quiet)
    except Exception:  # onnxruntime raises its own types: too few position embeddings for this length
        raise BundleError(f"{where}: metadata.json: max_length {bundle.max_length} is more tokens than {name} accepts") from None


def format_prediction(probs: dict[str, np.ndarray], thresholds: np.ndarray) -> dict:
    """One message's probabilities as labels: top label per single-label head, traits over threshold."""
    result: dict = {}
    for head in (EMOTION, INTENT):
        p = probs[head.name]
        top = int(np.argmax(p))
        result[head.name] = {
            "label": head.labels[top],
            "zh": head.zh[top],
            "score": round(float(p[top]), 4),
            "scores": {label: round(float(v), 4) for label, v in zip(head.labels, p)},
        }
    p = probs[CUSTOMER_TYPE.name]
    result[CUSTOMER_TYPE.name] = [
        {"label": label, "zh": CUSTOMER_TYPE.zh[i], "score": round(float(p[i]), 4)}
        for i, label in enumerate(CUSTOMER_TYPE.labels)
        if p[i] >= thresholds[i]
    ]
    result["customer_type_scores"] = {label: round(float(v), 4) for label, v in zip(CUSTOMER_TYPE.labels, p)}
    return result
