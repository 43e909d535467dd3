"""Make a model choice on the real dev rows: train one run per variant, keep the best.

    python -m kefu_router.training.choose -c training/configs/real.yaml --variants training/configs/real_choices.yaml \
        -o runs/real [--jobs 2]

A variants file maps a name to a list of `key=value` overrides of the config (data mix, weak sources, ...).
Every run makes its own choices (epoch, trait thresholds, temperatures) on the dev rows of
`selection_sources`; the variants are compared on the same number, the best dev mean macro-F1, and the best run
is copied to OUTPUT with choice.json (every variant's dev headline). The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

from kefu_router.training.config import load_config


def _train(config_path: str, overrides: list[str], reuse: bool = False) -> dict:
    from kefu_router.training.train import train

    config = load_config(config_path, overrides)
    log_path = Path(config.output_dir) / "train_log.json"
    if not (reuse and log_path.is_file()):
        train(config, progress=False)
    return json.loads(log_path.read_text(encoding="utf-8"))


def choose(config_path: str, variants: dict[str, list[str]], output_dir: str | Path, overrides: list[str] = (), jobs: int = 1,
           reuse: bool = False) -> dict:
    """Train every variant (or, with `reuse`, read a finished run of the same name), record and copy the best."""
    out = Path(output_dir)
    runs = out.parent / f"{out.name}-choices"
    todo = {name: [*overrides, *extra, f"output_dir={runs / name}"] for name, extra in variants.items()}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        logs = dict(zip(todo, pool.map(_train, [config_path] * len(todo), todo.values(), [reuse] * len(todo))))
    scores = {name: log["best_dev_score"] for name, log in logs.items()}
    best = max(scores, key=scores.get)
    record = {
        "chosen_on": "dev rows of selection_sources", "metric": "best dev mean macro-F1 over the three heads",
        "variants": {name: {"overrides": variants[name], "dev_score": round(scores[name], 4), "best_epoch": logs[name]["best_epoch"],
                            "dev_headline": logs[name]["dev_headline"], "splits": logs[name]["splits"]} for name in variants},
        "best": best,
    }
    for name in variants:
        print(f"{name:<32} dev mean macro-F1 {scores[name]:.4f}  {logs[name]['dev_headline']}", flush=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(runs / best, out)
    (out / "choice.json").write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"best: {best} -> {out}")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--variants", required=True, help="YAML: name -> list of key=value overrides")
    parser.add_argument("-o", "--output-dir", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (set threads=1 per run on small machines)")
    parser.add_argument("--reuse", action="store_true", help="keep variants whose run already finished (train_log.json)")
    args = parser.parse_args()
    variants = yaml.safe_load(Path(args.variants).read_text(encoding="utf-8"))
    choose(args.config, {k: list(v or []) for k, v in variants.items()}, args.output_dir, args.overrides, args.jobs, args.reuse)


if __name__ == "__main__":
    main()
