"""A WordPiece vocabulary and a randomly initialised small BERT: the starting point when no
pretrained Chinese checkpoint can be downloaded.

The tokenizer is BERT's: lower-casing, accents kept, every CJK character its own token,
Latin and digits as word pieces. Anonymisation placeholders such as [订单x] are added as
whole tokens so they stay stable. Masked-LM pretraining of this encoder is a separate step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Emoji carry emotion in buyer messages; keep the common ones out of [UNK] even if rare in the text.
EMOJI = list("😡😠🤬😤😭😢😥😰😱😓🙏👍👎😊😄😂🤣😅😍🥰❤💔🌹🎉👌💪🤔😒🙄😑😐😞😔😣😖😫😩🥺😳🤦✌🤝💯")
PLACEHOLDERS = ["[订单x]", "[数字x]", "[姓名x]", "[地址x]", "[电话x]", "[金额x]", "[日期x]", "[时间x]", "[链接x]", "[站点x]", "[邮箱x]"]


def train_wordpiece(lines: Iterable[str], vocab_size: int = 12000, min_frequency: int = 2):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS, initial_alphabet=EMOJI
    )
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_special_tokens(PLACEHOLDERS)  # matched before normalisation, so they stay one token each
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def init_encoder(
    output_dir: str | Path,
    lines: Iterable[str],
    vocab_size: int = 12000,
    layers: int = 4,
    hidden: int = 256,
    heads: int = 4,
    max_positions: int = 512,
    seed: int = 13,
) -> Path:
    """Write a tokenizer and a randomly initialised BERT encoder that `from_pretrained` can load."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_wordpiece(lines, vocab_size)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    hf_tok.save_pretrained(out)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=max_positions,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    return out


def export_encoder(pretrained_dir: str | Path, output_dir: str | Path, fp16: bool = True) -> Path:
    """Ship a pretrained encoder for fine-tuning: the BERT body only (no masked-LM head), tokenizer,
    and the pretraining record. fp16 halves the size; `load_model` casts back to fp32."""
    import shutil

    import torch
    from transformers import AutoTokenizer, BertModel

    src, out = Path(pretrained_dir), Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = BertModel.from_pretrained(src, dtype=torch.float32, add_pooling_layer=False)
    (model.half() if fp16 else model).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    for name in ("pretrain_log.json", "loss_curve.png"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out
