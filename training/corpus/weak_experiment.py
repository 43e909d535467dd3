"""Does a weak-label source help? Train the probe config alone and with each source, compare on DEV.

    python -m kefu_router.training.corpus.weak_experiment --shared-data ../shared/data \\
        --config training/configs/weak_probe.yaml [--sources jddc_intent cped] [--seeds 13 14] [--set epochs=2]

For every seed: the baseline (weak_sources=[]) and baseline + one source at a time, each a full
`train()` run. The numbers are the dev metrics train() reports for its best epoch (picked on dev;
trait thresholds tuned on dev): the same procedure for every row, and the test split is never
read. Writes training/data/weak/weak_label_table.md and weak_label_results.json (--out-dir).
A weak run gets the baseline's number of optimiser steps (its epochs are longer), so a gain
cannot come from training longer; --equal-epochs keeps the config's epochs instead.

A source is kept when it helps at least one head (delta > --min-gain) without lowering any
other number by more than 0.01 (--max-loss). With one seed, deltas of about 0.01 are within
seed noise: pass several --seeds before trusting a small gain.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
from pathlib import Path

from kefu_router.training.config import load_config
from kefu_router.training.metrics import headline
from kefu_router.training.corpus.weak_labels import SOURCES, load_weak, resolve_shared_data

log = logging.getLogger(__name__)
METRICS = ("emotion_macro_f1", "intent_macro_f1", "customer_type_macro_f1", "customer_type_micro_f1")
OUT_DIR = Path(__file__).resolve().parents[1] / "data" / "weak"


def kept(deltas: dict[str, float], min_gain: float = 0.0, max_loss: float = 0.01) -> bool:
    """Helps on at least one head and hurts none by more than max_loss."""
    return any(d > min_gain for d in deltas.values()) and all(d >= -max_loss for d in deltas.values())


def _train_one(config, name: str, seed: int, runs_dir: Path, keep_checkpoints: bool) -> dict:
    from kefu_router.training.train import train

    out = runs_dir / f"seed{seed}" / name
    result = train(config.model_copy(update={"seed": seed, "output_dir": str(out)}), progress=False)
    train_log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    if not keep_checkpoints:
        shutil.rmtree(result.checkpoint, ignore_errors=True)
    return {"dev": headline(result.dev_metrics), "best_epoch": result.best_epoch, "steps": train_log["history"][-1]["step"],
            "splits": result.splits, "data": train_log["data"]}


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4)


def run_experiment(
    config_path: str | Path | None, shared_data: str | Path | None, sources: list[str] = list(SOURCES),
    seeds: list[int] | None = None, overrides: list[str] = (), out_dir: str | Path = OUT_DIR,
    runs_dir: str | Path = "runs/weak_probe", keep_checkpoints: bool = False, min_gain: float = 0.0, max_loss: float = 0.01,
    equal_steps: bool = True,
) -> dict:
    """Baseline and baseline + each source, per seed; writes the table and JSON to out_dir.

    equal_steps: a weak run gets the baseline's number of optimiser steps (its epochs are longer),
    so a gain cannot come from simply training longer; False keeps the config's epochs.
    """
    root = resolve_shared_data(shared_data)
    if root is None or not root.is_dir():
        raise FileNotFoundError(f"shared data folder not found: {root or '(none given; pass --shared-data or set $KEFU_SHARED_DATA)'}")
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown weak source(s) {unknown}; expected some of {', '.join(SOURCES)}")
    base = load_config(config_path, list(overrides))
    if base.base_model.startswith(("runs/", "./", "/")) and not Path(base.base_model).exists():
        raise FileNotFoundError(f"probe encoder {base.base_model} not found: run `kefu-router init-encoder -o runs/encoder` first")
    base = base.model_copy(update={"shared_data": str(root)})
    seeds = seeds or [base.seed]
    runs_dir = Path(runs_dir)

    runs: dict[str, list[dict]] = {"baseline": []}
    for seed in seeds:
        log.info("seed %d: baseline", seed)
        runs["baseline"].append(_train_one(base.model_copy(update={"weak_sources": []}), "baseline", seed, runs_dir, keep_checkpoints))
        gold_train = runs["baseline"][-1]["splits"]["train"]
        step_cap = {"max_steps": runs["baseline"][-1]["steps"]} if equal_steps else {}
        for source in sources:
            if not load_weak(source, root, base.weak_max_rows, seed):
                log.warning("%s gives no rows: not trained", source)
                runs.setdefault(source, [])
                continue
            log.info("seed %d: baseline + %s", seed, source)
            run = _train_one(base.model_copy(update={"weak_sources": [source], **step_cap}), source, seed, runs_dir, keep_checkpoints)
            run["weak_rows"] = run["splits"]["train"] - gold_train
            runs.setdefault(source, []).append(run)

    baseline = {m: _mean([r["dev"][m] for r in runs["baseline"]]) for m in METRICS}
    rows = [{"source": "baseline", "weak_rows": 0, "dev": baseline, "delta": None, "kept": None,
             "spread": {m: round(max(r["dev"][m] for r in runs["baseline"]) - min(r["dev"][m] for r in runs["baseline"]), 4) for m in METRICS}}]
    for source in sources:
        done = runs.get(source) or []
        if not done:
            rows.append({"source": source, "weak_rows": 0, "dev": None, "delta": None, "kept": False, "note": "no rows (files absent or filtered out)"})
            continue
        dev = {m: _mean([r["dev"][m] for r in done]) for m in METRICS}
        delta = {m: round(dev[m] - baseline[m], 4) for m in METRICS}
        rows.append({"source": source, "weak_rows": done[0]["weak_rows"], "dev": dev, "delta": delta, "kept": kept(delta, min_gain, max_loss)})

    results = {
        "probe": {
            "config": str(config_path) if config_path else None, "overrides": list(overrides), "base_model": base.base_model,
            "encoder": _encoder_summary(base.base_model), "epochs": base.epochs, "max_steps": base.max_steps,
            "max_length": base.max_length, "learning_rate": base.learning_rate, "weak_max_rows": base.weak_max_rows, "seeds": seeds,
            "dev_messages": runs["baseline"][0]["splits"]["dev"], "gold_train_messages": runs["baseline"][0]["splits"]["train"],
            "equal_steps": equal_steps, "baseline_steps": [r["steps"] for r in runs["baseline"]],
        },
        "rule": {"min_gain": min_gain, "max_loss": max_loss},
        "rows": rows,
        "kept_sources": [r["source"] for r in rows if r["kept"]],
        "runs": runs,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "weak_label_results.json").write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out_dir / "weak_label_table.md").write_text(render_table(results), encoding="utf-8")
    return results


def _encoder_summary(base_model: str) -> str:
    cfg = Path(base_model) / "config.json"
    if not cfg.is_file():
        return base_model
    c = json.loads(cfg.read_text(encoding="utf-8"))
    return f"{c.get('num_hidden_layers')} layers, hidden {c.get('hidden_size')}, vocab {c.get('vocab_size')}"


def render_table(results: dict) -> str:
    p, rule = results["probe"], results["rule"]
    steps = f", max_steps {p['max_steps']}" if p["max_steps"] else ""
    lines = [
        "# Weak-label sources: dev-split probe",
        "",
        "Generated by `python -m kefu_router.training.corpus.weak_experiment`; do not edit by hand.",
        "",
        f"- Probe model: `{p['base_model']}` ({p['encoder']}), epochs {p['epochs']}{steps}, max_length {p['max_length']}, "
        f"learning rate {p['learning_rate']}, seeds {p['seeds']} (numbers are means over seeds); config `{p['config']}`"
        + (f" with overrides {p['overrides']}" if p["overrides"] else "") + ".",
        f"- Data: {p['gold_train_messages']} gold train messages; each source adds at most {p['weak_max_rows']} weak rows to TRAIN only. "
        + (f"Every weak run gets the baseline's optimiser steps ({p['baseline_steps']}), so no gain comes from training longer."
           if p["equal_steps"] else "Weak runs keep the config's epochs, so they also train for more steps than the baseline."),
        f"- Metrics: DEV split only ({p['dev_messages']} messages; test is never read): macro-F1 per head and customer_type micro-F1, "
        "from train()'s best epoch (chosen on dev, trait thresholds tuned on dev), the same procedure for every row.",
        f"- Kept: helps at least one number (delta > {rule['min_gain']}) without lowering any other by more than {rule['max_loss']}. "
        "A small probe and few seeds make deltas of about 0.01 noise-level; weak sources label one head only, so a change on "
        "another head is indirect (shared encoder).",
        "",
        "| source | weak rows | emotion macro-F1 | Δ | intent macro-F1 | Δ | customer_type macro-F1 | Δ | customer_type micro-F1 | Δ | kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["rows"]:
        cells = [f"`{row['source']}`" if row["source"] != "baseline" else "baseline", str(row["weak_rows"])]
        for m in METRICS:
            if row["dev"] is None:
                cells += ["–", "–"]
            else:
                cells.append(f"{row['dev'][m]:.4f}")
                cells.append("" if row["delta"] is None else f"{row['delta'][m]:+.4f}")
        cells.append("" if row["kept"] is None else ("yes" if row["kept"] else "no" + (f" ({row['note']})" if row.get("note") else "")))
        lines.append("| " + " | ".join(cells) + " |")
    if len(p["seeds"]) > 1:
        spread = results["rows"][0]["spread"]
        lines += ["", "Baseline spread across seeds (max - min): " + ", ".join(f"{m} {spread[m]:.4f}" for m in METRICS) + "."]
    kept_sources = results["kept_sources"]
    lines += ["", f"Kept sources: {', '.join(f'`{s}`' for s in kept_sources) if kept_sources else 'none'}"
              + (f" -> in a training config: `weak_sources: [{', '.join(kept_sources)}]` with `shared_data` set." if kept_sources else "."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kefu_router.training.corpus.weak_experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared-data", default=None, help="../shared/data (default: $KEFU_SHARED_DATA)")
    parser.add_argument("--config", default="training/configs/weak_probe.yaml", help="probe training config")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the config's seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value (repeatable), e.g. --set max_steps=3")
    parser.add_argument("--out-dir", default=str(OUT_DIR), help="where the table and JSON go")
    parser.add_argument("--runs-dir", default="runs/weak_probe", help="where the probe runs go")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--min-gain", type=float, default=0.0)
    parser.add_argument("--max-loss", type=float, default=0.01)
    parser.add_argument("--equal-epochs", action="store_true", help="weak runs keep the config's epochs (more steps) instead of the baseline's step count")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        results = run_experiment(args.config, args.shared_data, args.sources, args.seeds, args.overrides, args.out_dir,
                                 args.runs_dir, args.keep_checkpoints, args.min_gain, args.max_loss, not args.equal_epochs)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
