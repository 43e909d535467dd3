"""Masked-LM pretraining of the small BERT encoder on unlabelled Chinese text.

The vocabulary projection dominates CPU cost, so the MLM head runs only on the
masked positions (~15% of tokens), not on every position as BertForMaskedLM does.
Lines are packed into fixed-length blocks separated by [SEP]. Checkpoints are
resumable (model, optimiser, scheduler, step, RNG state); the loss curve, steps and
tokens seen are written to pretrain_log.json and loss_curve.png. Uses a GPU when
there is one. Left out: whole-word masking (needs a Chinese word segmenter).

    kefu-router pretrain --encoder runs/encoder -o runs/pretrained --steps 20000 [--resume]
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)
STATE = "pretrain_state.pt"


def pack_blocks(tokenizer, lines: Iterable[str], block: int, batch_lines: int = 10_000) -> np.ndarray:
    """Token ids of all lines, joined by [SEP], cut into rows of `block` (with [CLS] ... [SEP])."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    stream: list[int] = []
    buffer: list[str] = []

    def flush():
        for enc in tokenizer.encode_batch(buffer, add_special_tokens=False):
            stream.extend(enc.ids)
            stream.append(sep)
        buffer.clear()

    for line in lines:
        buffer.append(line)
        if len(buffer) >= batch_lines:
            flush()
    flush()
    width = block - 2
    n = len(stream) // width
    body = np.array(stream[: n * width], dtype=np.int64).reshape(n, width)
    return np.hstack([np.full((n, 1), cls), body, np.full((n, 1), sep)])


def mask_tokens(ids: torch.Tensor, vocab_size: int, mask_id: int, special: torch.Tensor, generator: torch.Generator, rate: float = 0.15):
    """BERT masking: choose `rate` of the non-special tokens; 80% -> [MASK], 10% random, 10% kept."""
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & ~torch.isin(ids, special)
    inputs = ids.clone()
    roll = torch.rand(ids.shape, generator=generator)
    inputs[chosen & (roll < 0.8)] = mask_id
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_ids[swap]
    return inputs, chosen


def pretrain(
    encoder_dir: str | Path,
    output_dir: str | Path,
    lines: Iterable[str],
    steps: int = 20_000,
    batch_size: int = 64,
    block: int = 128,
    learning_rate: float = 5e-4,
    warmup: int = 1_000,
    save_every: int = 500,
    resume: bool = False,
    seed: int = 13,
    progress: bool = True,
    sources: list[str] | None = None,
) -> dict:
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, get_linear_schedule_with_warmup

    from kefu_router.text import prepare_tokenizer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hf_tok = AutoTokenizer.from_pretrained(encoder_dir)
    tokenizer = prepare_tokenizer(hf_tok.backend_tokenizer)
    blocks = torch.from_numpy(pack_blocks(tokenizer, lines, block))
    if len(blocks) == 0:
        raise ValueError("no pretraining text")
    config = BertConfig.from_pretrained(encoder_dir)
    model = BertForMaskedLM.from_pretrained(encoder_dir, config=config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(warmup, steps // 10), steps)
    generator = torch.Generator().manual_seed(seed)
    special = torch.tensor([hf_tok.convert_tokens_to_ids(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]")])
    mask_id = hf_tok.convert_tokens_to_ids("[MASK]")
    history: list[dict] = []
    step, tokens, seconds = 0, 0, 0.0
    state_path = out / STATE
    if resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        step, tokens, seconds, history = state["step"], state["tokens"], state["seconds"], state["history"]
        log.info("resumed at step %d", step)

    def save():
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "generator": generator.get_state(), "step": step, "tokens": tokens, "seconds": seconds, "history": history},
            state_path.with_suffix(".tmp"),
        )
        state_path.with_suffix(".tmp").replace(state_path)  # atomic: a kill mid-save keeps the last state

    model.train()
    bar = tqdm(total=steps, initial=step, desc="pretrain", unit="step", disable=not progress)
    running, started = [], time.time()
    while step < steps:
        idx = torch.randint(len(blocks), (batch_size,), generator=generator)
        batch = blocks[idx]
        inputs, chosen = mask_tokens(batch, config.vocab_size, mask_id, special, generator)
        inputs, chosen, batch = inputs.to(device), chosen.to(device), batch.to(device)
        hidden = model.bert(input_ids=inputs).last_hidden_state
        logits = model.cls(hidden[chosen])  # only the masked positions reach the vocabulary projection
        loss = torch.nn.functional.cross_entropy(logits, batch[chosen])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        tokens += int(batch.numel())
        running.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(running[-50:]):.3f}")
        if step % 50 == 0 or step == steps:
            history.append({"step": step, "tokens": tokens, "loss": float(np.mean(running))})
            running = []
        if step % save_every == 0 or step == steps:
            seconds += time.time() - started
            started = time.time()
            save()
    bar.close()
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    summary = {"steps": step, "tokens_seen": tokens, "seconds": round(seconds, 1), "device": str(device), "sources": sources or [],
               "blocks": len(blocks), "block": block, "batch_size": batch_size, "history": history}
    (out / "pretrain_log.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    plot_loss(history, out / "loss_curve.png")
    return summary


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set_xlabel("step")
    ax.set_ylabel("masked-LM loss")
    ax.set_title("pretraining loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
