"""Generate a Hugging Face style model card from a run's metrics.json, train_log.json and bundle metadata.

    python -m kefu_router.training.model_card RUN_DIR BUNDLE_DIR model_cards/NAME.md [model_cards/notes/NAME.md]

The optional notes file (status, caveats written by hand) is inserted before Limitations.

Every figure in the card is read from those files; nothing is typed by hand.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

from kefu_router.labels import HEADS

ROWS = (
    ("emotion macro-F1", "emotion_macro_f1"),
    ("intent macro-F1", "intent_macro_f1"),
    ("customer_type macro-F1", "customer_type_macro_f1"),
    ("customer_type micro-F1", "customer_type_micro_f1"),
)


def _table(columns: dict[str, dict]) -> str:
    head = "| metric | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns)
    body = "\n".join(f"| {label} | " + " | ".join(f"{c.get(key, float('nan')):.3f}" for c in columns.values()) + " |" for label, key in ROWS)
    return f"{head}\n{body}"


def _per_class(metrics: dict) -> str:
    lines = []
    for head in HEADS:
        report = metrics["model"][head.name]["per_class"]
        lines.append(f"\n**{head.name}**\n\n| label | 中文 | precision | recall | F1 | support |\n|---|---|---:|---:|---:|---:|")
        for label, zh in zip(head.labels, head.zh):
            r = report[label]
            lines.append(f"| {label} | {zh} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | {int(r['support'])} |")
    return "\n".join(lines)


def render(run_dir: Path, bundle_dir: Path, out: Path, extra_sections: str = "") -> str:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    train_log = json.loads((run_dir / "train_log.json").read_text(encoding="utf-8"))
    meta = json.loads((bundle_dir / "metadata.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    plots = out.parent / out.stem
    plots.mkdir(parents=True, exist_ok=True)
    for png in (run_dir / "plots").glob("*.png"):
        shutil.copy(png, plots / png.name)
    header = {
        "language": ["zh"],
        "license": "apache-2.0",
        "library_name": "onnxruntime",
        "pipeline_tag": "text-classification",
        "tags": ["customer-service", "e-commerce", "emotion", "intent", "multi-task", "onnx"],
        "datasets": ["kefu-router/kefu_corpus (training/data/kefu_corpus.jsonl)"],
        "metrics": ["f1", "accuracy"],
        "model-index": [{"name": meta["version"], "results": [
            {"task": {"type": "text-classification", "name": h}, "dataset": {"name": "kefu_corpus", "type": "kefu_corpus", "split": metrics["split"]},
             "metrics": [{"type": "f1", "name": f"{h} macro-F1", "value": metrics["headline"][f"{h}_macro_f1"]}]}
            for h in ("emotion", "intent", "customer_type")
        ]}],
    }
    parity = meta["parity"]
    parity_rows = "\n".join(
        f"| {p} | {h} | {parity[p][h]['max_abs_diff']:.4f} | {parity[p][h]['agreement']:.4f} |" for p in ("fp32", "int8") for h in ("emotion", "intent", "customer_type")
    )
    plot_links = "\n".join(f"![{p.stem}]({plots.name}/{p.name})" for p in sorted(plots.glob("*.png")))
    card = f"""---
{yaml.safe_dump(header, allow_unicode=True, sort_keys=False).strip()}
---

# {meta['version']}

Multi-task classifier for Chinese e-commerce buyer messages: **emotion** (4), **intent** (8) and
**customer type** (7 traits, multi-label), read with the turns before the message. Shipped as an
int8 ONNX bundle that `kefu-router predict | tag | serve` load by default.

## Intended use
Routing live customer-service chats to a queue and a handling playbook, and batch-tagging
historical chats for analysis. A human agent always handles the conversation; the model only
chooses the queue and the guidance shown.

## Out of scope
Decisions about a buyer (refunds, bans, credit), anything outside Chinese e-commerce chat,
and use as the only signal for staff evaluation. Not evaluated on real shop logs (see Limitations).

## Labels
Defined in `shared/spec/labels.md`, implemented once in `kefu_router/labels.py`; the annotation
guideline is `training/data/GUIDELINE.md`.

## Training
- Base model: `{meta['base_model']}`
- Data: {', '.join(config['data'])} (fingerprint `{meta['data_fingerprint']}`), splits {train_log['splits']} messages after de-duplication
- Config: max_length {config['max_length']}, max_context_turns {config['max_context_turns']}, lr {config['learning_rate']}, batch {config['batch_size']}, best epoch {train_log['best_epoch']} of {len(train_log['history'])} (early stopping on dev mean macro-F1)

## Evaluation
On the held-out **{metrics['split']}** split of the corpus (n={metrics['n']} messages, never used for any choice),
against a TF-IDF + logistic-regression baseline trained on the same train split
(`kefu-router evaluate {run_dir}`):

{_table({'this model': metrics['headline'], 'TF-IDF + LR': metrics.get('baseline_headline', {})})}

Expected calibration error: emotion {metrics['model']['emotion']['ece']:.3f}, intent {metrics['model']['intent']['ece']:.3f}, customer_type {metrics['model']['customer_type']['ece']:.3f}.
{_per_class(metrics)}

{plot_links}

### ONNX parity (export check on {parity['examples']} held-out messages)
| graph | head | max abs logit diff | label agreement vs PyTorch |
|---|---|---:|---:|
{parity_rows}
{extra_sections}
## Limitations
- The corpus is written and labelled in this project; real buyer logs differ in vocabulary, length and noise.
  Figures above are in-distribution and will be optimistic for real traffic.
- Customer-type traits are sparse and subjective (see the agreement figures in `training/data/DATACARD.md`).
- Context is limited to the last {config['max_context_turns']} turns and {config['max_length']} tokens.

## Privacy
Buyer messages contain names, phone numbers, addresses and order numbers. The corpus uses placeholders
([订单x], [电话x], ...). The service logs no raw text by default and masks personal data when it must.
Do not train on raw production logs without the same anonymisation.
"""
    out.write_text(card, encoding="utf-8")
    return card


if __name__ == "__main__":
    notes = Path(sys.argv[4]).read_text(encoding="utf-8") if len(sys.argv) > 4 else ""
    render(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), notes)
    print(f"wrote {sys.argv[3]}")
