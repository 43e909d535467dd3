"""Knowledge distillation: a student learns from a fine-tuned teacher's soft labels as well as gold.

Loss per batch (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"):

    alpha * gold loss  +  (1 - alpha) * sum over heads of the distillation loss

where the distillation loss of a softmax head is T^2 * KL(teacher softmax(z_t / T) || student
softmax(z_s / T)), and of the multi-label head the binary cross-entropy of the student's sigmoid
against the teacher's sigmoid probabilities. Rows of the transfer set without gold labels
(`corpus/unlabelled.py`) contribute only the distillation term.

The teacher's logits are computed once per training row and cached in chunks under the run's
`teacher_logits/` folder, so a killed run resumes without recomputing them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kefu_router.labels import HEADS
from kefu_router.training.config import TrainConfig, load_config
from kefu_router.training.data import Example

log = logging.getLogger(__name__)
CHUNK = 2048


def transfer_set(config: TrainConfig, splits: dict[str, list[Example]]) -> tuple[list[Example], dict]:
    """The labelled train rows plus unlabelled real buyer messages (`config.unlabelled_sources`), and a
    record of what was added."""
    from kefu_router.training.corpus.unlabelled import unlabelled_examples
    from kefu_router.training.corpus.weak_labels import resolve_shared_data

    extra, counts = [], {}
    if config.unlabelled_sources:
        root = resolve_shared_data(config.shared_data)
        if root is None or not root.is_dir():
            raise ValueError(f"unlabelled_sources need the shared data folder (got {root})")
        labelled = [ex for rows in splits.values() for ex in rows]
        extra, counts = unlabelled_examples(root, config.unlabelled_sources, labelled, config.unlabelled_max_rows,
                                            config.max_context_turns, config.seed)
    record = {"teacher": config.teacher, "temperature": config.distill_temperature, "alpha": config.distill_alpha,
              "labelled_rows": len(splits["train"]), "unlabelled_rows": counts}
    log.info("distillation transfer set: %d labelled + %d unlabelled rows %s", len(splits["train"]), len(extra), counts)
    return splits["train"] + extra, record


def teacher_logits(teacher_dir: str | Path, examples: list[Example], cache: Path, batch_size: int = 64) -> dict[str, np.ndarray]:
    """(len(examples), classes) logits per head from the teacher run's checkpoint, with the teacher's own
    input limits. Chunks already in `cache` (same examples, same teacher) are reused."""
    from transformers import AutoTokenizer

    from kefu_router.text import prepare_tokenizer
    from kefu_router.training.model import load_model
    from kefu_router.training.train import CHECKPOINT, predict_logits

    teacher_dir = Path(teacher_dir)
    tconfig = load_config(teacher_dir / "config.yaml")
    model = tokenizer = None
    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for start in range(0, len(examples), CHUNK):
        chunk = examples[start:start + CHUNK]
        digest = hashlib.sha256(("\n".join(ex.id + "\t" + ex.text for ex in chunk) + str(teacher_dir.resolve())).encode()).hexdigest()[:16]
        path = cache / f"{start // CHUNK:05d}-{digest}.npz"
        if not path.is_file():
            if model is None:
                model = load_model(str(teacher_dir / CHECKPOINT)).eval()
                tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(teacher_dir / CHECKPOINT).backend_tokenizer)
            logits = predict_logits(model, tokenizer, chunk, tconfig, batch_size)
            np.savez(path, **logits)
            log.info("teacher logits: %d / %d rows", min(start + CHUNK, len(examples)), len(examples))
        with np.load(path) as part:
            parts.append({h.name: part[h.name] for h in HEADS})
    return {h.name: np.concatenate([p[h.name] for p in parts]) for h in HEADS}


def distillation_loss(head, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """One head's distillation loss, averaged over the batch; (batch, classes) logits in."""
    if head.multi_label:
        return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), log_target=True,
                    reduction="batchmean") * t * t


def slice_layers(checkpoint: str | Path, layers: list[int], output_dir: str | Path) -> Path:
    """A shallower copy of a fine-tuned checkpoint that keeps only the encoder `layers` (0-based, in order) with the
    embeddings and heads, as DistilBERT initialised its student from every other teacher layer (Sanh et al. 2019).
    Writes the model and the tokenizer to `output_dir`. Raises ValueError for a layer index out of range."""
    from transformers import AutoTokenizer

    from kefu_router.training.model import load_model

    model = load_model(str(checkpoint))
    depth = len(model.bert.encoder.layer)
    if not layers or any(not 0 <= i < depth for i in layers):
        raise ValueError(f"layers {layers} must be indices of the {depth} encoder layers")
    model.bert.encoder.layer = torch.nn.ModuleList([model.bert.encoder.layer[i] for i in layers])
    model.config.num_hidden_layers = len(layers)
    out = Path(output_dir)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    return out
