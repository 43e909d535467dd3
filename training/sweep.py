"""Choose the fine-tuning learning rate on the dev split; the test split is never read.

    python -m kefu_router.training.sweep -c training/configs/default.yaml --lr 1e-4 3e-4 1e-3 -o runs/default \
        [--set base_model=runs/encoder-3x192 ...]

Trains one run per rate (OUTPUT-choices/RATE, through `training/choose.py`), prints each run's best dev
mean macro-F1 (the early-stopping score), and copies the best run to OUTPUT for `evaluate` and `export`;
sweep.json there records every rate's score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kefu_router.training.choose import choose


def sweep(config_path: str, rates: list[float], output_dir: str | Path, overrides: list[str] = (), progress: bool = True) -> dict:
    """One `choose` variant per learning rate; the best run is copied to `output_dir` with sweep.json."""
    out = Path(output_dir)
    chosen = choose(config_path, {f"{rate:g}": [f"learning_rate={rate}"] for rate in rates}, out, overrides)
    scores = {name: v["dev_score"] for name, v in chosen["variants"].items()}
    record = {"chosen_on": "dev", "metric": "best dev mean macro-F1", "scores": scores, "best_learning_rate": float(chosen["best"])}
    (out / "sweep.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"best learning rate {chosen['best']} -> {out}")
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
