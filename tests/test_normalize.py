"""Text normalisation: one function, read by training and runtime through text.encode."""

from __future__ import annotations

import pytest

from kefu_router.normalize import normalize_text


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("ＲＥＦＵＮＤ退款１２３", "REFUND退款123"),  # NFKC: full-width Latin and digits
        ("這個質量太差了，我要退貨", "这个质量太差了,我要退货"),  # OpenCC t2s (and NFKC on the comma)
        ("怎么还没发货！！！！！！", "怎么还没发货!!!"),  # a run of one mark is cut to three
        ("什么情况？？？？", "什么情况???"),
        ("好的。。。", "好的。。。"),  # three stay three
        ("在吗\u200b\u200d\ufeff", "在吗"),  # zero-width and BOM
        ("a\tb\n\nc", "a b c"),
        ("订单号 123456789012345 怎么还没到", "订单号 [订单x] 怎么还没到"),
        ("运单SF1234567890123查一下", "运单[订单x]查一下"),
        ("[ORDERID_10124449]", "[订单x]"),
        ("电话13812345678，或者 138-1234-5678", "电话[电话x],或者 [电话x]"),
        ("看这个 https://item.jd.com/210322.html 有货吗", "看这个 [链接] 有货吗"),
        ("买了2件，共99元", "买了2件,共99元"),  # short numbers are not identifiers
        ("", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_normalisation_is_idempotent():
    for raw in ("這個質量太差了！！！！", "订单号 123456789012345", "ＲＥＦＵＮＤ", "https://a.com/x?y=1"):
        once = normalize_text(raw)
        assert normalize_text(once) == once


@pytest.mark.parametrize("unit", ["a", "1", "a1", "a.", "ab-", "x.com", "http://a", "1-", "！", "在吗"])
def test_normalisation_time_grows_linearly_with_the_text(unit):
    """Twice the text takes at most about twice the time (a backtracking pattern took 14 s on 100k letters)."""
    import time

    def cpu_seconds(n: int) -> float:
        text = unit * (n // len(unit))
        start = time.process_time()
        for _ in range(3):
            normalize_text(text)
        return time.process_time() - start

    ratio = cpu_seconds(40_000) / max(cpu_seconds(20_000), 1e-4)
    if ratio > 3:  # one slow measurement on a busy machine; quadratic time is slow every time
        ratio = min(ratio, cpu_seconds(40_000) / max(cpu_seconds(20_000), 1e-4))
    assert ratio <= 3, f"{unit!r}: twice the text took {ratio:.1f}x the time"
