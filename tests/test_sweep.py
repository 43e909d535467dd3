"""The learning-rate sweep keeps the run with the best dev score."""

from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("torch")


def test_sweep_keeps_the_run_with_the_best_dev_score(tiny_bert, tmp_path, monkeypatch):
    from kefu_router.training import sweep as sweep_module
    from tests.conftest import MINI_DATA

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "data": [str(MINI_DATA)], "base_model": str(tiny_bert), "epochs": 1, "batch_size": 8, "max_length": 48,
        "dev_fraction": 0.25, "test_fraction": 0.25, "threads": 1,
    }))
    record = sweep_module.sweep(str(config), [1e-4, 3e-3], tmp_path / "best", progress=False)
    assert set(record["scores"]) == {"0.0001", "0.003"}
    best = max(record["scores"], key=record["scores"].get)
    assert record["best_learning_rate"] == float(best)
    log = json.loads((tmp_path / "best" / "train_log.json").read_text())
    assert round(log["best_dev_score"], 4) == record["scores"][best]
    assert yaml.safe_load((tmp_path / "best" / "config.yaml").read_text())["learning_rate"] == float(best)
    assert json.loads((tmp_path / "best" / "sweep.json").read_text()) == record


def test_choose_compares_variants_on_dev_and_keeps_the_best(tiny_bert, tmp_path):
    from kefu_router.training.choose import choose
    from tests.conftest import MINI_DATA

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "data": [str(MINI_DATA)], "base_model": str(tiny_bert), "epochs": 1, "batch_size": 8, "max_length": 48,
        "dev_fraction": 0.25, "test_fraction": 0.25, "threads": 1, "learning_rate": 1e-3,
    }))
    record = choose(str(config), {"short": ["max_length=32"], "long": []}, tmp_path / "best")
    assert set(record["variants"]) == {"short", "long"} and record["variants"]["short"]["overrides"] == ["max_length=32"]
    best = max(record["variants"], key=lambda name: record["variants"][name]["dev_score"])
    assert record["best"] == best
    assert json.loads((tmp_path / "best" / "choice.json").read_text()) == record
    assert yaml.safe_load((tmp_path / "best" / "config.yaml").read_text())["max_length"] == (32 if best == "short" else 48)
