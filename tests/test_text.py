"""Context encoding: the current message survives, the oldest turns go first, token types mark it."""

from __future__ import annotations

import pytest

from kefu_router.text import Message, encode, head_and_tail, pad, prepare_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from tokenizers import Tokenizer

    return prepare_tokenizer(Tokenizer.from_file(str(tiny_bert / "tokenizer.json")))


def decode_parts(tok, ids, types):
    context = [i for i, t in zip(ids, types) if t == 0][1:-1]  # strip [CLS] ... [SEP]
    message = [i for i, t in zip(ids, types) if t == 1][:-1]
    return tok.decode(context).replace(" ", ""), tok.decode(message).replace(" ", "")


def test_layout_marks_the_current_message_with_token_type_one(tokenizer):
    ids, types = encode(tokenizer, [Message.of("好的", [("customer", "在吗"), ("agent", "在的亲")])])[0]
    context, message = decode_parts(tokenizer, ids, types)
    assert message == "好的"
    assert context == "买家：在吗客服：在的亲"
    assert ids[0] == tokenizer.token_to_id("[CLS]") and ids[-1] == tokenizer.token_to_id("[SEP]")


def test_oldest_turns_are_dropped_first_and_the_message_is_kept(tokenizer):
    context = [("customer", "在吗"), ("agent", "在的亲"), ("customer", "这条裙子有L码吗"), ("agent", "亲是纯棉的哦")]
    ids, types = encode(tokenizer, [Message.of("好的", context)], max_length=22)[0]
    assert len(ids) <= 22
    ctx, message = decode_parts(tokenizer, ids, types)
    assert message == "好的"
    assert ctx.endswith("客服：亲是纯棉的哦") and "在吗" not in ctx


def test_an_overlong_message_is_cut_but_never_dropped(tokenizer):
    long_text = "什么破东西" * 100
    ids, types = encode(tokenizer, [Message.of(long_text, [("customer", "在吗")])], max_length=32)[0]
    assert len(ids) == 32 and types.count(1) == 32 - 2  # [CLS] [SEP] then the message and its [SEP]


def test_max_context_turns_limits_history(tokenizer):
    context = [("customer", "在吗"), ("agent", "在的亲")]
    ids, types = encode(tokenizer, [Message.of("好的", context)], max_context_turns=1)[0]
    assert decode_parts(tokenizer, ids, types)[0] == "客服：在的亲"


def test_pad_builds_masks_for_dynamic_batches(tokenizer):
    batch = pad(encode(tokenizer, [Message.of("在吗"), Message.of("我的快递怎么还没到")]), pad_id=0)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum() == batch["input_ids"].shape[1]


def test_unknown_role_is_rejected():
    with pytest.raises(ValueError, match="unknown role"):
        Message.of("好的", [("bot", "hi")])


def test_a_long_message_keeps_its_head_and_its_tail(tokenizer):
    # The request comes last: cut to its head only, the message would lose "我要退货".
    text = "在吗" + "这个东西" * 60 + "我要退货"
    ids, types = encode(tokenizer, [Message.of(text)], max_length=40)[0]
    message = decode_parts(tokenizer, ids, types)[1]
    assert message.startswith("在吗") and message.endswith("我要退货")


def test_head_and_tail_cuts_strings_and_lists_alike():
    assert head_and_tail("0123456789", 4) == "0789" and head_and_tail(list(range(10)), 4) == [0, 7, 8, 9]
    assert head_and_tail("短", 4) == "短"


def test_encode_normalises_the_message_and_its_context(tokenizer):
    # Traditional script, full-width forms and invisible characters encode as their normalised text.
    same = encode(tokenizer, [Message.of("好的", [("customer", "在吗")]), Message.of("好\u200b的", [("customer", "在嗎")])])
    assert same[0] == same[1]
