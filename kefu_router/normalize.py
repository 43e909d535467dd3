"""Text normalisation: the one place where a message's text is made canonical before the model sees it.

`text.encode` calls `normalize_text` on every message and context turn, so training, evaluation, the
predictor, the service and the taggers see text exactly the same way. The steps, in order:

1. drop format and control characters (zero-width spaces, BOMs, direction marks), keep newlines as spaces;
2. NFKC (Unicode compatibility form): full-width Latin, digits and punctuation become half-width;
3. traditional to simplified Chinese with OpenCC (`t2s`), so 質量/退貨 read as 质量/退货;
4. identifiers become the placeholders the labelled data already uses: links -> [链接], phone numbers ->
   [电话x], order and tracking numbers (and JDDC's [ORDERID_...]) -> [订单x];
5. a run of one punctuation mark longer than three is cut to three ("!!!!!!" -> "!!!"), runs of white space
   become one space.

Left out on purpose: lower-casing and word segmentation (the tokenizer does both), and any correction of
typos or slang (the model must learn those from data).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_CONTROL_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
_WHITESPACE_CONTROLS = {"\n", "\r", "\t", "\v", "\f"}
# Every open-ended run starts only where its characters start (the look-behinds), so the time is linear in
# the text: without them a 100,000-letter message took 14 s (each start position re-scanned the run).
_URL = re.compile(
    r"(?<![A-Za-z0-9.])(?:https?://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+"
    r"|(?<![A-Za-z0-9\-])[A-Za-z0-9\-]+\.(?:com|cn|net)(?:/[\w\-./?=&%#]*)?"
)
_PHONE = re.compile(
    r"(?<![0-9A-Za-z])(?:\+?86[-\s]?)?1[3-9]\d(?:[-\s]?\d{4}){2}(?![0-9])"  # mobile, 138-1234-5678, +86
    r"|(?<![0-9])0\d{2,3}-\d{7,8}(?![0-9])"  # landline with area code
)
_JDDC_ORDER = re.compile(r"\[ORDERID_\d+\]")
# Order and tracking numbers: 10+ digits, optionally behind a courier's letter prefix (SF, YT, JD...).
_ORDER_NUMBER = re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{0,4}\d{10,}(?![0-9])")  # starts after a non-alphanumeric: linear
_PUNCT_RUN = re.compile(r"([^\w\s])\1{3,}")
_SPACES = re.compile(r"\s+")

PLACEHOLDERS = {"link": "[链接]", "phone": "[电话x]", "order": "[订单x]"}


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def strip_invisible(text: str) -> str:
    """The text without control and format characters (tab and newline become spaces)."""
    if text.isprintable():
        return text
    return "".join(
        " " if ch in _WHITESPACE_CONTROLS else ch
        for ch in text
        if ch in _WHITESPACE_CONTROLS or unicodedata.category(ch) not in _CONTROL_CATEGORIES
    )


def normalize_text(text: str) -> str:
    """The canonical form of one message (see the module docstring for the steps); '' stays ''."""
    text = unicodedata.normalize("NFKC", strip_invisible(text))
    text = _t2s().convert(text)
    text = _URL.sub(PLACEHOLDERS["link"], text)
    text = _PHONE.sub(PLACEHOLDERS["phone"], text)
    text = _JDDC_ORDER.sub(PLACEHOLDERS["order"], text)
    text = _ORDER_NUMBER.sub(PLACEHOLDERS["order"], text)
    text = _PUNCT_RUN.sub(r"\1\1\1", text)
    return _SPACES.sub(" ", text).strip()
