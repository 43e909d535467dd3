"""Fine-tune the multi-task model on CPU (or GPU when present).

1. load and split the data   2. encode with context   3. weighted multi-task loss
4. train with early stopping on dev macro-F1   5. tune trait thresholds on dev
6. fit softmax temperatures on dev (calibration.py)
7. save an HF checkpoint with tokenizer, schema, thresholds, temperatures and the resolved config
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from kefu_router.labels import CUSTOMER_TYPE, HEADS, schema_dict
from kefu_router.predictor import head_probabilities
from kefu_router.text import encode, pad, prepare_tokenizer
from kefu_router.training.calibration import fit_review_threshold, fit_temperatures
from kefu_router.training.config import TrainConfig, load_config, save_config
from kefu_router.training.distill import distillation_loss
from kefu_router.training.data import MISSING, Example, fingerprint, label_arrays, load_examples, of_sources, split_examples, to_messages
from kefu_router.training.metrics import all_metrics, headline, selection_score, tune_thresholds
from kefu_router.training.model import BertForKefu, load_model

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint"


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path
    best_epoch: int
    dev_metrics: dict
    splits: dict[str, int]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_splits(config: TrainConfig, weak: bool = False) -> tuple[dict[str, list[Example]], list[str]]:
    """All data files, validated, de-duplicated and split; also the load reports as text.

    weak=True (training) appends config.weak_sources to the train split only; evaluation and
    export read the gold splits.
    """
    examples, reports = [], []
    for path in config.data:
        ex, report = load_examples(path, skip_bad=config.skip_bad_rows)
        examples += ex
        reports.append(report.summary())
    if config.real_sources:  # the real labelled set: committed labels joined with ../shared/data
        from kefu_router.training.corpus.real_set import load_real

        real, report = load_real(config.real_sources, config.shared_data, config.skip_bad_rows)
        examples += real
        reports.append(report)
    splits = split_examples(examples, config.dev_fraction, config.test_fraction, config.seed)
    if config.ignore_heads:
        splits["train"] = [mask_heads(ex, config.ignore_heads) for ex in splits["train"]]
    if weak and config.weak_sources:  # weak labels from ../shared/data (training/corpus/weak_labels.py)
        from kefu_router.training.corpus.weak_labels import add_weak_examples

        reports += add_weak_examples(splits, config)
    return splits, reports


def mask_heads(ex: Example, ignore: dict[str, list[str]]) -> Example:
    """`ex` without the labels of the heads its source's entry in `ignore` lists (None: masked in the loss)."""
    heads = [h for prefix, names in ignore.items() if ex.source.startswith(prefix) for h in names]
    return dataclasses.replace(ex, **{h: None for h in heads}) if heads else ex


@dataclass
class Run:
    """A finished `train` run as evaluate, calibrate and export read it."""

    config: TrainConfig
    splits: dict[str, list[Example]]  # gold splits, as in training
    model: BertForKefu  # the best checkpoint, in eval mode
    tokenizer: object  # `tokenizers.Tokenizer`, prepared as at runtime
    fitted: dict  # thresholds.json: customer_type thresholds and softmax temperatures

    @property
    def selection_dev(self) -> list[Example]:
        """The dev rows that made the run's choices (those of `config.selection_sources`, or all of dev)."""
        return of_sources(self.splits["dev"], self.config.selection_sources)


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    checkpoint = run_dir / CHECKPOINT
    return Run(
        config=config,
        splits=load_splits(config)[0],
        model=load_model(str(checkpoint)).eval(),
        tokenizer=prepare_tokenizer(AutoTokenizer.from_pretrained(checkpoint).backend_tokenizer),
        fitted=json.loads((run_dir / "thresholds.json").read_text(encoding="utf-8")),
    )


def batches(n: int, batch_size: int, shuffle: bool, rng: np.random.Generator):
    order = rng.permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def predict_logits(model: BertForKefu, tokenizer, examples: list[Example], config: TrainConfig, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Raw logits per head from the PyTorch model, in example order."""
    model.eval()
    encoded = encode(tokenizer, to_messages(examples), config.max_length, config.max_context_turns)
    pad_id = tokenizer.token_to_id("[PAD]")
    out = {h.name: [] for h in HEADS}
    for start in range(0, len(encoded), batch_size):
        feeds = {k: torch.from_numpy(v) for k, v in pad(encoded[start : start + batch_size], pad_id).items()}
        logits = model(**feeds)
        for h in HEADS:
            out[h.name].append(logits[h.name].detach().numpy())
    return {h.name: np.concatenate(out[h.name]) if out[h.name] else np.zeros((0, h.size), dtype=np.float32) for h in HEADS}


def predict_probabilities(model: BertForKefu, tokenizer, examples: list[Example], config: TrainConfig, batch_size: int = 64,
                          temperatures: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Probabilities per head from the PyTorch model (dev scoring, evaluation, export parity), softmax
    heads divided by their fitted temperatures when given, as `Predictor` does."""
    logits = predict_logits(model, tokenizer, examples, config, batch_size)
    return {h.name: head_probabilities(h, logits[h.name], temperatures) for h in HEADS}


MAX_UNKNOWN_SHARE = 0.2


def check_vocabulary(encoded: list[tuple[list[int], list[int]]], tokenizer) -> float:
    """Share of [UNK] tokens in the training inputs; fail when the vocabulary clearly misses the data."""
    unk = tokenizer.token_to_id("[UNK]")
    total = sum(len(ids) - 3 for ids, _ in encoded) or 1
    share = sum(ids.count(unk) for ids, _ in encoded) / total
    log.info("unknown-token share of the training inputs: %.2f%%", 100 * share)
    if share > MAX_UNKNOWN_SHARE:
        raise ValueError(
            f"{share:.0%} of training tokens are [UNK]: the base model's vocabulary does not cover this data "
            "(wrong tokenizer files, or a non-Chinese model?)"
        )
    return share


def class_weights(targets: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Square-root inverse-frequency weights (softmax heads) and positive weights (traits), clipped.

    Rows without a label for a head (weak data) are left out of that head's counts.
    """
    weights = {}
    for h in HEADS:
        y = targets[h.name]
        if h.multi_label:
            y = y[targets["customer_type_mask"] > 0]
            pos = y.sum(axis=0).clip(min=1)
            weights[h.name] = torch.tensor(np.sqrt((len(y) - pos) / pos).clip(1.0, 10.0), dtype=torch.float32)
        else:
            counts = np.bincount(y[y != MISSING], minlength=h.size).clip(min=1)
            w = np.sqrt(counts.sum() / (h.size * counts)).clip(0.2, 5.0)
            weights[h.name] = torch.tensor(w / w.mean(), dtype=torch.float32)
    return weights


def head_loss(head, loss_fn, logits: torch.Tensor, y: torch.Tensor, trait_mask: torch.Tensor) -> torch.Tensor:
    """One head's loss; rows that carry no label for the head contribute nothing."""
    if head.multi_label:
        per_row = loss_fn(logits, y.float()).mean(dim=1)
        return (per_row * trait_mask).sum() / trait_mask.sum().clamp(min=1.0)
    if (y == MISSING).all():
        return logits.sum() * 0.0
    return loss_fn(logits, y)


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits, reports = load_splits(config, weak=True)
    for line in reports:
        log.info(line)
    if not splits["train"] or not splits["dev"]:
        raise ValueError(f"need train and dev examples, got {({k: len(v) for k, v in splits.items()})}")

    hf_tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    tokenizer = prepare_tokenizer(copy.deepcopy(hf_tokenizer.backend_tokenizer))
    pad_id = tokenizer.token_to_id("[PAD]")
    model = load_model(config.base_model, config.pooling)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)

    train_ex, distillation, soft = splits["train"], None, None
    if config.teacher:
        from kefu_router.training.distill import teacher_logits, transfer_set

        train_ex, distillation = transfer_set(config, splits)
        soft = teacher_logits(config.teacher, train_ex, out_dir / "teacher_logits")
    dev_ex = of_sources(splits["dev"], config.selection_sources)  # the dev rows that make every choice
    if not dev_ex:
        raise ValueError(f"no dev rows of the selection sources {config.selection_sources}")
    log.info("choices are made on %d dev rows (%s)", len(dev_ex), ", ".join(config.selection_sources) or "all sources")
    encoded = encode(tokenizer, to_messages(train_ex), config.max_length, config.max_context_turns)
    check_vocabulary(encoded, tokenizer)
    targets = label_arrays(train_ex)
    dev_targets = label_arrays(dev_ex)
    weights = class_weights(targets) if config.class_weighting else {}
    losses = {
        h.name: (
            nn.BCEWithLogitsLoss(pos_weight=weights.get(h.name), reduction="none") if h.multi_label
            else nn.CrossEntropyLoss(weight=weights.get(h.name), ignore_index=MISSING)
        ).to(device)
        for h in HEADS
    }
    loss_weights = config.loss_weights.model_dump()

    steps_per_epoch = -(-len(encoded) // config.batch_size)
    total_steps = min(config.max_steps or 10**12, steps_per_epoch * config.epochs)
    heads = [p for name, p in model.named_parameters() if not name.startswith("bert.")]
    encoder = [p for name, p in model.named_parameters() if name.startswith("bert.")]
    optimizer = torch.optim.AdamW([{"params": encoder}, {"params": heads, "lr": config.head_learning_rate or config.learning_rate}],
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    rng = np.random.default_rng(config.seed)

    best = {"score": -1.0, "epoch": 0, "state": None, "metrics": None}
    history, step = [], 0
    bar = tqdm(total=total_steps, desc="train", disable=not progress, unit="step")
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_loss = 0.0
        for idx in batches(len(encoded), config.batch_size, True, rng):
            feeds = {k: torch.from_numpy(v).to(device) for k, v in pad([encoded[i] for i in idx], pad_id).items()}
            logits = model(**feeds)
            loss = 0.0
            trait_mask = torch.from_numpy(targets["customer_type_mask"][idx]).to(device)
            for h in HEADS:
                y = torch.from_numpy(targets[h.name][idx]).to(device)
                loss = loss + loss_weights[h.name] * head_loss(h, losses[h.name], logits[h.name], y, trait_mask)
            if soft is not None:
                kd = sum(loss_weights[h.name] * distillation_loss(h, logits[h.name], torch.from_numpy(soft[h.name][idx]).to(device),
                                                                  config.distill_temperature) for h in HEADS if h.name in config.distill_heads)
                loss = config.distill_alpha * loss + (1 - config.distill_alpha) * kd
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            epoch_loss += loss.item()
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
            if step >= total_steps:
                break
        model.cpu()
        dev_probs = predict_probabilities(model, tokenizer, dev_ex, config)
        model.to(device)
        dev_metrics = all_metrics(dev_targets, dev_probs, tune_thresholds(dev_targets["customer_type"], dev_probs["customer_type"]))
        score = selection_score(dev_metrics)
        history.append({"epoch": epoch, "step": step, "train_loss": epoch_loss / steps_per_epoch, "dev_score": score, **headline(dev_metrics)})
        log.info("epoch %d: train loss %.4f, dev mean macro-F1 %.4f", epoch, epoch_loss / steps_per_epoch, score)
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "state": copy.deepcopy(model.state_dict()), "metrics": dev_metrics}
        elif epoch - best["epoch"] >= config.patience:
            log.info("early stop: no dev improvement for %d epochs", config.patience)
            break
        if step >= total_steps:
            break
    bar.close()

    model.load_state_dict(best["state"])
    model.cpu()
    thresholds = best["metrics"]["customer_type"]["thresholds"]
    checkpoint = out_dir / CHECKPOINT
    model.save_pretrained(checkpoint)
    hf_tokenizer.save_pretrained(checkpoint)
    save_config(config, out_dir / "config.yaml")
    write_json(out_dir / "schema.json", schema_dict())
    dev_logits = predict_logits(model, tokenizer, dev_ex, config)  # one pass serves both fits
    temperatures = fit_temperatures(dev_logits, dev_targets)
    review = fit_review_threshold({h.name: head_probabilities(h, dev_logits[h.name], temperatures) for h in HEADS}, dev_targets)
    write_json(out_dir / "thresholds.json", {CUSTOMER_TYPE.name: thresholds, "temperature": temperatures,
                                             **({"review": review} if review else {})})
    all_examples = [ex for s in splits.values() for ex in s]
    write_json(
        out_dir / "train_log.json",
        {
            "best_epoch": best["epoch"],
            "best_dev_score": best["score"],
            "dev_headline": headline(best["metrics"]),
            "history": history,
            "data": reports,
            "splits": {k: len(v) for k, v in splits.items()},
            "data_fingerprint": fingerprint(all_examples),
            "base_model": config.base_model,
            **({"distillation": distillation} if distillation else {}),
        },
    )
    return TrainResult(out_dir, checkpoint, best["epoch"], best["metrics"], {k: len(v) for k, v in splits.items()})


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
