"""A BERT encoder shared by three heads: emotion and intent (softmax), customer type (sigmoid).

It is a regular `transformers` model: `from_pretrained` takes a local directory or a
hub name of any BERT-architecture checkpoint (bert-base-chinese,
hfl/chinese-roberta-wwm-ext, our own mini-BERT); encoder weights load and the
heads start fresh. `save_pretrained` writes an HF-format checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertPreTrainedModel

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, HEADS, INTENT


class BertForKefu(BertPreTrainedModel):
    config_class = BertConfig

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.emotion = nn.Linear(config.hidden_size, EMOTION.size)
        self.intent = nn.Linear(config.hidden_size, INTENT.size)
        self.customer_type = nn.Linear(config.hidden_size, CUSTOMER_TYPE.size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> dict[str, torch.Tensor]:
        """Logits per head, (batch, classes), from (batch, tokens) ids. The sentence vector is the [CLS]
        state, or with `config.kefu_pooling == "mean"` the mean of the unpadded states (E5's pooling)."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        if getattr(self.config, "kefu_pooling", "cls") == "mean":
            mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        else:
            pooled = hidden[:, 0]
        pooled = self.dropout(pooled)
        return {head.name: getattr(self, head.name)(pooled) for head in HEADS}


class OnnxWrapper(nn.Module):
    """Returns the three logit tensors as a tuple, the form the ONNX exporter wants."""

    def __init__(self, model: BertForKefu):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids, attention_mask, token_type_ids)
        return tuple(out[head.name] for head in HEADS)


POOLINGS = ("cls", "mean")


def load_model(name_or_path: str, pooling: str | None = None) -> BertForKefu:
    """Encoder weights from a local directory or hub name; missing heads are initialised.
    Always fp32: a shipped fp16 encoder is cast up for training. `pooling` ("cls" or "mean") is set
    on a fresh model and saved with it; None keeps the checkpoint's (default "cls")."""
    model = BertForKefu.from_pretrained(name_or_path, dtype=torch.float32)
    if pooling is not None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
        model.config.kefu_pooling = pooling
    return model
