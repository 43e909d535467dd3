"""Generate a Hugging Face style model card from a run's metrics.json, train_log.json and bundle metadata.

    python -m kefu_router.training.model_card RUN_DIR BUNDLE_DIR model_cards/NAME.md \
        [--notes model_cards/notes/NAME.md] [--compare "random init=runs/random"] [--pretrain models/kefu-mini-encoder]

--notes (status, caveats written by hand) is inserted before Limitations; each --compare adds another
evaluated run or bundle (`kefu-router evaluate`, same test split) as a row of the evaluation tables, the real
test split first; --cases adds the behaviour-test pass rate per kind (`kefu-router cases -o FILE`);
--pretrain adds the encoder's pretraining record (steps, tokens, time, sources, loss curve).

Every figure in the card is read from those files; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from kefu_router.labels import HEADS
from kefu_router.training.evaluate import primary_group

COLUMNS = (
    ("emotion macro-F1", "emotion_macro_f1"),
    ("intent macro-F1", "intent_macro_f1"),
    ("customer_type micro-F1", "customer_type_micro_f1"),
    ("customer_type macro-F1", "customer_type_macro_f1"),
    ("customer_type per conversation micro-F1", "customer_type_conversation_micro_f1"),
    ("emotion ECE", "emotion_ece"),
    ("intent ECE", "intent_ece"),
)


def _table(rows: dict[str, dict]) -> str:
    """One row per model, one column per headline figure."""
    head = "| model | " + " | ".join(label for label, _ in COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS)
    body = "\n".join(f"| {name} | " + " | ".join(f"{h[key]:.3f}" if key in h else "n/a" for _, key in COLUMNS) + " |"
                     for name, h in rows.items())
    return f"{head}\n{body}"


def _group_tables(metrics: dict, others: dict[str, dict], split: str) -> str:
    titles = {"real": "Real buyer messages (headline)", "project": "The project's own corpus", "all": "All test rows"}
    sections = []
    for group in ("real", "project"):
        if group not in metrics["groups"]:
            continue
        mine = metrics["groups"][group]
        rows = {"this model": mine["headline"]}
        for name, m in others.items():
            theirs = m["groups"].get(group)
            if theirs is None or theirs["n"] != mine["n"]:
                raise ValueError(f"--compare {name}: its {group} group is not the same {split} rows (n={mine['n']})")
            rows[name] = theirs["headline"]
        if "baseline_headline" in mine:
            rows["TF-IDF + LR (same training data)"] = mine["baseline_headline"]
        sections.append(f"### {titles[group]}: {split} split, n={mine['n']} messages\n\n{_table(rows)}")
    return "\n\n".join(sections)


def _cases(path: Path) -> str:
    report = json.loads(path.read_text(encoding="utf-8"))
    rows = "\n".join(f"| {kind} | {v['cases']} | {v['pass_rate']:.2f} | {v['all_heads_rate']:.2f} |" for kind, v in report.items())
    return f"""
## Behaviour tests (field cases)
`kefu-router cases --shared ../shared -o FILE`: the project's own cases (`training/data/cases/field_cases.jsonl`)
and `shared/cases/field_cases.jsonl`. A case passes when the last buyer turn gets the expected emotion and
intent (an out-of-scope case also passes when the router asks for human review); "all heads" also needs the
expected customer types.

| kind | cases | pass | all heads |
|---|---:|---:|---:|
{rows}
"""


def _per_class(scored: dict) -> str:
    lines = []
    for head in HEADS:
        report = scored["model"][head.name]["per_class"]
        lines.append(f"\n**{head.name}**\n\n| label | 中文 | precision | recall | F1 | support |\n|---|---|---:|---:|---:|---:|")
        for label, zh in zip(head.labels, head.zh):
            r = report[label]
            lines.append(f"| {label} | {zh} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | {int(r['support'])} |")
    return "\n".join(lines)


def _pretraining(pretrain_dir: Path, plots: Path) -> str:
    log = json.loads((pretrain_dir / "pretrain_log.json").read_text(encoding="utf-8"))
    curve = ""
    if (pretrain_dir / "loss_curve.png").exists():
        shutil.copy(pretrain_dir / "loss_curve.png", plots / "pretrain_loss_curve.png")
        curve = f"\n\n![masked-LM loss]({plots.name}/pretrain_loss_curve.png)"
    losses = [h["loss"] for h in log["history"]]
    return f"""
## Pretraining
Masked-LM pretraining of the encoder (`kefu-router pretrain`; record in `{pretrain_dir}/pretrain_log.json`):
{log['steps']:,} steps of {log['batch_size']} blocks x {log['block']} tokens = **{log['tokens_seen']:,} tokens seen**
({log['blocks']:,} distinct blocks), {log['seconds'] / 3600:.2f} hours on {log['device']}; masked-LM loss
{losses[0]:.2f} (first 50 steps) -> {losses[-1]:.2f} (last 50).
Text sources this checkpoint saw: {', '.join(log.get('sources') or ['not recorded'])}.{curve}
"""


def _summary(path: Path) -> str:
    """The shipped models side by side (benchmarks/model_table.py's JSON)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("model_table", Path(__file__).resolve().parents[1] / "benchmarks" / "model_table.py")
    table = json.loads(path.read_text(encoding="utf-8"))
    if spec is None or not Path(spec.origin).is_file():
        raise ValueError("--summary needs benchmarks/model_table.py (a source checkout)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    n = next(iter(table["rows"].values()))["n"]
    return f"""### Headline: real buyer messages, test split (n={n}), every model as shipped (int8 bundles)
`python benchmarks/model_table.py` (command in `scripts/build_e5_models.sh`): macro-F1 per head, customer-type
micro-F1 per message and per conversation, ECE, the field-case pass rate, messages/s of the int8 Predictor on
{table['messages_timed']:,} real buyer messages with context (2 CPU cores, one model after another in one run)
and the bundle's size on disk.

{module.render(table)}
"""


def render(run_dir: Path, bundle_dir: Path, out: Path, extra_sections: str = "", compare: dict[str, Path] | None = None,
           pretrain_dir: Path | None = None, cases: Path | None = None, summary: Path | None = None) -> str:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    others = {name: json.loads((d / "metrics.json").read_text(encoding="utf-8")) for name, d in (compare or {}).items()}
    group, primary = primary_group(metrics)
    train_log = json.loads((run_dir / "train_log.json").read_text(encoding="utf-8"))
    meta = json.loads((bundle_dir / "metadata.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    plots = out.parent / out.stem
    plots.mkdir(parents=True, exist_ok=True)
    for png in (run_dir / "plots" / group).glob("*.png"):
        shutil.copy(png, plots / png.name)
    header = {
        "language": ["zh"],
        # Fine-tuning on the real set (research-only text) makes the weights research-only too.
        **({"license": "other", "license_name": "research-only"} if config.get("real_sources") else {"license": "apache-2.0"}),
        "library_name": "onnxruntime",
        "pipeline_tag": "text-classification",
        "tags": ["customer-service", "e-commerce", "emotion", "intent", "multi-task", "onnx"],
        "datasets": ["kefu-router/kefu_corpus (training/data/kefu_corpus.jsonl)"]
        + [f"real set: {source} (labels in training/data/real/labels, research-only text)" for source in config.get("real_sources") or []],
        "metrics": ["f1", "accuracy"],
        "model-index": [{"name": meta["version"], "results": [
            {"task": {"type": "text-classification", "name": h},
             "dataset": {"name": f"kefu-router {group} set", "type": f"kefu_{group}", "split": metrics["split"]},
             "metrics": [{"type": "f1", "name": f"{h} macro-F1", "value": primary["headline"][f"{h}_macro_f1"]}]}
            for h in ("emotion", "intent", "customer_type")
        ]}],
    }
    if pretrain_dir:  # the texts the encoder was pretrained on are part of the model's data too
        sources = json.loads((pretrain_dir / "pretrain_log.json").read_text(encoding="utf-8")).get("sources") or []
        header["datasets"] += [f"pretraining: {source}" for source in sources]
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
**customer type** (7 traits, multi-label), read with the turns before the message. Shipped as the
int8 ONNX bundle `models/{bundle_dir.name}`, which `kefu-router predict | tag | serve --model {bundle_dir.name}` load.

## Intended use
Routing live customer-service chats to a queue and a handling playbook, and batch-tagging
historical chats for analysis. A human agent always handles the conversation; the model only
chooses the queue and the guidance shown.

## Out of scope
Decisions about a buyer (refunds, bans, credit), anything outside Chinese e-commerce chat,
and use as the only signal for staff evaluation.

## Labels
Defined in `shared/spec/labels.md`, implemented once in `kefu_router/labels.py`; the annotation
guideline is `training/data/GUIDELINE.md`.

## Training
- Base model: `{meta['base_model']}`
- Data: {', '.join(meta.get('data') or config['data'])} (fingerprint `{meta['data_fingerprint']}`), splits {train_log['splits']} messages after de-duplication
- Config: max_length {config['max_length']}, max_context_turns {config['max_context_turns']}, lr {config['learning_rate']}, batch {config['batch_size']}, best epoch {train_log['best_epoch']} of {len(train_log['history'])} (early stopping on dev mean macro-F1)

## Evaluation
On the held-out **{metrics['split']}** split (never used for any choice: the epoch, trait thresholds and temperatures
were chosen on the dev rows of {', '.join(config.get('selection_sources') or []) or 'every source'}), scored by
`kefu-router evaluate {run_dir}`. The TF-IDF + logistic-regression baseline is trained on the same training rows.
Other rows are earlier models scored on the same rows (`kefu-router evaluate BUNDLE --data ...`).

{_summary(summary) if summary else ""}
{_group_tables(metrics, others, metrics['split'])}

Per class, on the {group} {metrics['split']} rows:
{_per_class(primary)}

{plot_links}
{_cases(cases) if cases else ""}
### ONNX parity (export check on {parity['examples']} held-out messages)
| graph | head | max abs logit diff | label agreement vs PyTorch |
|---|---|---:|---:|
{parity_rows}
{_pretraining(pretrain_dir, plots) if pretrain_dir else ""}
{extra_sections}
## Limitations
- The real test rows come from three public corpora (JD.com 2018 chats, Taobao/Tmall messages); other shops,
  categories and years will differ. The project's own corpus is written here and its figures are optimistic.
- Customer-type traits are sparse and subjective (see the agreement figures in `training/data/DATACARD.md`).
- Context is limited to the last {config['max_context_turns']} turns and {config['max_length']} tokens.

## Privacy
Buyer messages contain names, phone numbers, addresses and order numbers. The corpus uses placeholders
([订单x], [电话x], ...). The service logs no raw text by default and masks personal data when it must.
Do not train on raw production logs without the same anonymisation.
"""
    out.write_text(card, encoding="utf-8")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate a model card from evaluation outputs.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("bundle_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--notes", type=Path, help="hand-written status and caveats")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=RUN_DIR", help="another evaluated run as a column")
    parser.add_argument("--pretrain", type=Path, help="directory with the encoder's pretrain_log.json")
    parser.add_argument("--cases", type=Path, help="`kefu-router cases -o` report: pass rate per kind")
    parser.add_argument("--summary", type=Path, help="benchmarks/model_table.py's JSON: the shipped models side by side")
    args = parser.parse_args()
    compare = dict(item.split("=", 1) for item in args.compare)
    notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
    render(args.run_dir, args.bundle_dir, args.out, notes, {k: Path(v) for k, v in compare.items()}, args.pretrain, args.cases, args.summary)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
