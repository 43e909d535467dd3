"""Training configuration: a YAML file validated by pydantic, with `key=value` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kefu_router.text import DEFAULT_MAX_CONTEXT_TURNS, DEFAULT_MAX_LENGTH


class LossWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")
    emotion: float = 1.0
    intent: float = 1.0
    customer_type: float = 1.0


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[str] = Field(default_factory=list, description="labelled files; rows with a `split` column keep it")
    base_model: str = Field(description="local directory or hub name of a BERT-architecture checkpoint")
    output_dir: str = "runs/latest"
    seed: int = 13
    max_length: int = Field(DEFAULT_MAX_LENGTH, ge=16, le=512)
    max_context_turns: int = Field(DEFAULT_MAX_CONTEXT_TURNS, ge=0, le=32)
    epochs: int = Field(10, ge=1)
    pooling: Literal["cls", "mean"] = Field("cls", description="sentence vector: the [CLS] state, or the mean of the token states (E5's)")
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many optimiser steps (smoke runs)")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    head_learning_rate: Optional[float] = Field(None, gt=0, description="learning rate of the three heads (default: learning_rate); "
                                                "a fresh head on a pretrained encoder learns faster with a larger one")
    weight_decay: float = 0.01
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    patience: int = Field(3, ge=1, description="epochs without a better dev macro-F1 before stopping")
    loss_weights: LossWeights = LossWeights()
    class_weighting: bool = True
    selection_sources: list[str] = Field(
        default_factory=list,
        description="dev rows of these sources (the rows' `source` column, e.g. jddc_uss) choose the epoch, trait "
        "thresholds and temperatures; empty: every dev row",
    )
    dev_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    skip_bad_rows: bool = False
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    # The real labelled set (training/data/real/labels), joined with ../shared/data at load time.
    real_sources: list[str] = Field(default_factory=list, description="real sources to add, e.g. [jddc_uss, dataclue_cic, jddc_baseline]")
    ignore_heads: dict[str, list[str]] = Field(
        default_factory=dict,
        description="source prefix -> heads whose labels its TRAIN rows do not teach (masked in the loss), e.g. "
        "{kefu-corpus: [customer_type]}: the project corpus carries traits forward, the real set labels traits shown",
    )
    # Weak labels from public corpora (training/corpus/weak_labels.py): added to the train split only.
    weak_sources: list[str] = Field(default_factory=list, description="weak-label sources, e.g. [jddc_intent, cped]")
    shared_data: Optional[str] = Field(None, description="../shared/data; None reads $KEFU_SHARED_DATA; needed by real_sources (an error without it); absent -> weak sources skipped")
    weak_max_rows: int = Field(3000, ge=1, description="rows sampled per weak source, balanced across its labels")


    # Distillation (training/distill.py): learn from a fine-tuned teacher run's soft labels as well as gold.
    teacher: Optional[str] = Field(None, description="a train run directory (checkpoint/ and config.yaml) to distil from")
    distill_temperature: float = Field(2.0, gt=0, description="softmax temperature of the distillation loss")
    distill_alpha: float = Field(0.5, ge=0, le=1, description="weight of the gold loss; 1 - alpha weighs the distillation loss")
    distill_heads: list[Literal["emotion", "intent", "customer_type"]] = Field(
        default_factory=lambda: ["emotion", "intent", "customer_type"],
        description="heads that learn from the teacher; the others learn from gold only (unlabelled rows teach them nothing)")
    unlabelled_sources: list[str] = Field(default_factory=list, description="unlabelled real text added to the transfer set "
                                          "(corpus/unlabelled.py: jddc_uss, dataclue_cic, jddc_baseline, atec); needs a teacher")
    unlabelled_max_rows: int = Field(20000, ge=0, description="unlabelled rows in all, an equal share per source")

    @model_validator(mode="after")
    def _teacher_for_unlabelled(self) -> "TrainConfig":
        if self.unlabelled_sources and not self.teacher:
            raise ValueError("unlabelled_sources need a teacher: unlabelled rows only carry the teacher's soft labels")
        return self

    @model_validator(mode="after")
    def _some_data(self) -> "TrainConfig":
        if not self.data and not self.real_sources:
            raise ValueError("no training data: give `data` files and/or `real_sources`")
        return self


class ConfigError(ValueError):
    pass


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`a.b=value` pairs; values are parsed as YAML so numbers and lists keep their types."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    raw: dict = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    raw = apply_overrides(raw, list(overrides))
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid training config: {exc}") from None


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(), allow_unicode=True, sort_keys=False), encoding="utf-8")
