"""Choose the fine-tuning learning rate on the dev split; the test split is never read.

    python -m kefu_router.training.sweep -c training/configs/default.yaml --lr 1e-4 3e-4 1e-3 -o runs/default \
        [--set base_model=runs/encoder-3x192 ...]

Trains one run per rate (OUTPUT-sweep/lr-RATE), prints each run's best dev mean macro-F1 (the
early-stopping score), and copies the best run to OUTPUT for `evaluate` and `export`; sweep.json
there records every rate's score.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from kefu_router.training.config import load_config
from kefu_router.training.train import train


def sweep(config_path: str, rates: list[float], output_dir: str | Path, overrides: list[str] = (), progress: bool = True) -> dict:
    out = Path(output_dir)
    runs = out.parent / f"{out.name}-sweep"
    scores: dict[str, float] = {}
    for rate in rates:
        run = runs / f"lr-{rate:g}"
        config = load_config(config_path, [*overrides, f"learning_rate={rate}", f"output_dir={run}"])
        train(config, progress=progress)
        log = json.loads((run / "train_log.json").read_text(encoding="utf-8"))
        scores[f"{rate:g}"] = log["best_dev_score"]
        print(f"learning rate {rate:g}: best dev mean macro-F1 {log['best_dev_score']:.4f} (epoch {log['best_epoch']})", flush=True)
    best = max(scores, key=scores.get)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(runs / f"lr-{best}", out)
    record = {"chosen_on": "dev", "metric": "best dev mean macro-F1", "scores": scores, "best_learning_rate": float(best)}
    (out / "sweep.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"best learning rate {best} -> {out}")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--lr", type=float, nargs="+", required=True)
    parser.add_argument("-o", "--output-dir", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    sweep(args.config, args.lr, args.output_dir, args.overrides)


if __name__ == "__main__":
    main()
