"""Export a trained run to a runtime bundle: ONNX (fp32 + static int8), tokenizer, schema, metadata.

The int8 graph is quantised statically (`quantize`): its activation scales are fixed at export from
training messages, so a message gets the same labels and scores alone or in any batch.

Export always ends in a parity check against the PyTorch model on held-out
examples (max |logit difference| and label agreement per head, for both the
fp32 and int8 graphs). It is printed and the export fails below `min_agreement`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from kefu_router.bundle import ONNX_FILES, write_bundle_files
from kefu_router.labels import CUSTOMER_TYPE, HEADS
from kefu_router.predictor import POSITIONS_KEY
from kefu_router.text import encode, pad
from kefu_router.training.evaluate import primary_group
from kefu_router.training.data import to_messages

log = logging.getLogger(__name__)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


class ParityError(RuntimeError):
    pass


def export_onnx(model, path: Path) -> None:
    from kefu_router.training.model import OnnxWrapper

    # The dummy batch must contain padding: with an all-ones mask the tracer may record
    # a graph that skips masking, which then gives wrong logits on padded batches.
    dummy = torch.ones((2, 8), dtype=torch.long)
    mask = dummy.clone()
    mask[1, 5:] = 0
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in INPUTS}
    axes.update({h.name: {0: "batch_size"} for h in HEADS})
    with warnings.catch_warnings():  # the TorchScript exporter warns about traced Python control flow
        warnings.simplefilter("ignore")
        torch.onnx.export(
            OnnxWrapper(model).eval(), (dummy, mask, torch.zeros_like(dummy)), str(path), dynamo=False,
            input_names=list(INPUTS), output_names=[h.name for h in HEADS], dynamic_axes=axes, opset_version=OPSET,
        )


def label_distribution(examples, source: str) -> dict:
    """Label counts per head of `examples` (bundle_files.LabelDistribution): the quality report's drift reference."""
    from collections import Counter

    from kefu_router.bundle_files import NO_TRAIT

    counts = {"emotion": Counter(), "intent": Counter(), "customer_type": Counter()}
    for ex in examples:
        if ex.emotion:
            counts["emotion"][ex.emotion] += 1
        if ex.intent:
            counts["intent"][ex.intent] += 1
        if ex.customer_type is not None:
            counts["customer_type"].update(ex.customer_type or [NO_TRAIT])
    return {"source": source, **{head: dict(c) for head, c in counts.items()}}


def stamp_positions(path: Path, positions: int) -> None:
    """Record the graph's position-embedding count in its ONNX metadata (kefu_router.predictor.check_graph reads it)."""
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {**{p.key: p.value for p in graph.metadata_props}, POSITIONS_KEY: str(positions)})
    onnx.save(graph, str(path))


class _Batches(CalibrationDataReader):
    """Padded input batches, one at a time, as onnxruntime's calibration wants them."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def calibration_feeds(tokenizer, messages, max_length: int, max_context_turns: int, batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """Padded int64 input batches ({input name: (batch, tokens)}) of `messages`, for `quantize`."""
    encoded = encode(tokenizer, messages, max_length, max_context_turns)
    pad_id = tokenizer.token_to_id("[PAD]")
    return [pad(encoded[i : i + batch_size], pad_id) for i in range(0, len(encoded), batch_size)]


FFN_OUTPUT = r"/layer\.\d+/output/dense/"  # BERT's feed-forward output projections (torch.onnx node names)


def quantize(fp32: Path, int8: Path, calibration: list[dict[str, np.ndarray]], keep_fp32: str | None = None) -> None:
    """Static int8 quantisation in onnxruntime's QDQ format, so a message's result does not depend on its batch.

    Weights are int8 per output channel. Each quantised activation gets one fixed uint8 scale, fitted
    (min-max) on the `calibration` batches, where dynamic quantisation computes a scale per batch at run
    time. Quantised: the MatMuls and Gathers that read a weight (dense layers, embeddings), inputs only:
    MatMul outputs stay fp32 (requantising them cost label agreement). Kept fp32: attention's
    activation-by-activation MatMuls, the Gemm heads, and the MatMuls that read the embeddings'
    LayerNormalization (the query/key/value of layer 0, the most sensitive in a per-node check).
    `keep_fp32`: a regular expression; nodes whose name it finds stay fp32 too (for a deeper encoder, e.g.
    FFN_OUTPUT: the feed-forward output layers, which read GELU's long-tailed activations).
    """
    graph = onnx.load(str(fp32)).graph
    weights = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    embedded = set(next((n.output for n in graph.node if n.op_type == "LayerNormalization"), ()))
    nodes = [n.name for n in graph.node
             if n.op_type in ("MatMul", "Gather") and weights.intersection(n.input) and not embedded.intersection(n.input)
             and not (keep_fp32 and re.search(keep_fp32, n.name))]
    hint = lambda record: "pre-process" not in record.getMessage()  # its advice to pre-process: not needed here
    logging.getLogger().addFilter(hint)
    try:
        quantize_static(
            str(fp32), str(int8), _Batches(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=["MatMul", "Gather"], nodes_to_quantize=nodes,
            extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]},
        )
    finally:
        logging.getLogger().removeFilter(hint)


def quantize_weights(fp32: Path, int8: Path) -> None:
    """Weight-only int8: every MatMul and the embedding Gather get 8-bit symmetric weights in blocks of 32
    (onnxruntime's MatMulNBits / GatherBlockQuantized); activations stay fp32 but for the MatMuls' own per-row,
    per-block int8 compute (accuracy level 4), so a message's result still does not depend on its batch.
    For deeper encoders, where static activation scales cost too much agreement (the 12-layer E5 teacher:
    intent 0.91 static, 0.99 weight-only on 400 held-out messages)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4,
                                     op_types_to_quantize=("MatMul", "Gather"))
    quantizer.process()
    quantizer.model.save_model_to_file(str(int8), use_external_data_format=False)


INT8_METHODS = ("static", "weight-only")


def parity(model, tokenizer, onnx_path: Path, messages, max_length: int, max_context_turns: int, thresholds: dict[str, float] | None = None) -> dict:
    """Max |logit diff| and label agreement per head between PyTorch and an ONNX graph.

    Trait agreement compares the decisions at the bundle's tuned thresholds (0.5 when none are given).
    """
    probs = np.array([(thresholds or {}).get(t, 0.5) for t in CUSTOMER_TYPE.labels])
    trait_cut = np.log(probs / (1 - probs))  # sigmoid(logit) >= t  <=>  logit >= logit(t)
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pad_id = tokenizer.token_to_id("[PAD]")
    encoded = encode(tokenizer, messages, max_length, max_context_turns)
    report = {h.name: {"max_abs_diff": 0.0, "agree": 0} for h in HEADS}
    for start in range(0, len(encoded), 32):
        feeds = pad(encoded[start : start + 32], pad_id)
        with torch.inference_mode():
            ref = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        got = session.run([h.name for h in HEADS], feeds)
        for h, onnx_logits in zip(HEADS, got):
            torch_logits = ref[h.name].numpy()
            r = report[h.name]
            r["max_abs_diff"] = max(r["max_abs_diff"], float(np.abs(torch_logits - onnx_logits).max()))
            if h.multi_label:  # every trait decision must match
                r["agree"] += int(((torch_logits >= trait_cut) == (onnx_logits >= trait_cut)).all(axis=1).sum())
            else:
                r["agree"] += int((torch_logits.argmax(1) == onnx_logits.argmax(1)).sum())
    for r in report.values():
        r["agreement"] = r.pop("agree") / max(len(encoded), 1)
    return report


def export(
    run_dir: str | Path, output_dir: str | Path, min_agreement: float = 0.98, parity_examples: int = 500,
    version: str | None = None, keep_fp32: bool = True, calibration_examples: int = 512, int8: str = "static",
) -> dict:
    """Write a bundle from `run_dir` to `output_dir`. `int8`: "static" (`quantize`: activation scales fitted on
    `calibration_examples` training messages, a seeded sample) or "weight-only" (`quantize_weights`). Raises
    ParityError when ONNX and PyTorch agree below `min_agreement`, ValueError for an unknown `int8`."""
    if int8 not in INT8_METHODS:
        raise ValueError(f"int8 must be one of {', '.join(INT8_METHODS)}, got {int8!r}")
    from kefu_router.training.train import load_run

    run_dir, out = Path(run_dir), Path(output_dir)
    run = load_run(run_dir)
    config, model, tokenizer = run.config, run.model, run.tokenizer
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    export_onnx(model, out / ONNX_FILES["fp32"])
    train = run.splits["train"]
    sample = np.random.default_rng(config.seed).permutation(len(train))[:calibration_examples]
    calibration = to_messages([train[i] for i in sorted(sample)])
    if int8 == "static":
        quantize(out / ONNX_FILES["fp32"], out / ONNX_FILES["int8"],
                 calibration_feeds(tokenizer, calibration, config.max_length, config.max_context_turns))
    else:
        quantize_weights(out / ONNX_FILES["fp32"], out / ONNX_FILES["int8"])
    for name in ONNX_FILES.values():
        stamp_positions(out / name, model.config.max_position_embeddings)
    tokenizer.save(str(out / "tokenizer.json"))

    thresholds = run.fitted[CUSTOMER_TYPE.name]
    # Parity on held-out messages: the test split, then dev, of the run's own data.
    held_out = (run.splits["test"] + run.splits["dev"])[:parity_examples]
    messages = to_messages(held_out)
    checks = {p: parity(model, tokenizer, out / f, messages, config.max_length, config.max_context_turns, thresholds) for p, f in ONNX_FILES.items()}
    for precision, report in checks.items():
        for head, r in report.items():
            print(f"parity {precision:<4} {head:<13} max|diff| {r['max_abs_diff']:.5f}  agreement {r['agreement']:.4f}  (n={len(messages)})")
    failed = [f"{p}/{h} {r['agreement']:.4f}" for p, rep in checks.items() for h, r in rep.items() if r["agreement"] < min_agreement]
    if failed:
        raise ParityError(f"ONNX export disagrees with PyTorch below {min_agreement}: {', '.join(failed)}")

    train_log = json.loads((run_dir / "train_log.json").read_text(encoding="utf-8"))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else {}
    group, scored = primary_group(metrics) if metrics else ("", {})
    sources = config.data + [f"real set: {source}" for source in config.real_sources]
    metadata = {
        "version": version or f"{out.name}-{train_log['data_fingerprint'][:8]}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": config.base_model,
        "data": sources,
        "data_fingerprint": train_log["data_fingerprint"],
        "max_length": config.max_length,
        "max_context_turns": config.max_context_turns,
        "metrics": {"split": f"{metrics.get('split')}/{group}" if group else None, "n": scored.get("n"), **scored.get("headline", {})},
        "baseline_metrics": scored.get("baseline_headline", {}),
        "quantization": {"int8": "static, QDQ, min-max calibrated", "calibration_examples": len(calibration)} if int8 == "static"
        else {"int8": "weight-only, 8-bit blocks of 32 (MatMulNBits, accuracy level 4)"},
        "parity": {"examples": len(messages), "min_agreement": min_agreement, **checks},
        "label_distribution": label_distribution(train, f"train split of {', '.join(sources)}, {len(train)} messages"
                                                        + (f"; traits not counted for {', '.join(config.ignore_heads)}" if config.ignore_heads else "")),
    }
    write_bundle_files(out, metadata, thresholds, run.fitted.get("temperature"), run.fitted.get("review"))
    if not keep_fp32:  # ship only the int8 graph (the runtime default) to keep the bundle small
        (out / ONNX_FILES["fp32"]).unlink()
    return metadata
