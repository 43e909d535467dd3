"""Mask customer data in text that has to be logged (handbook rule: never leak customer data).

`mask_pii` replaces ID card numbers, phone numbers, e-mail addresses, order and
tracking numbers, postal addresses and personal names with placeholders such
as [电话]. Patterns are tuned for Chinese e-commerce chats and err towards
masking too much: a log line that hides a shop word is harmless, a leaked phone
number is not. The service logs no message text at all unless asked to; this
is for the cases where text must be logged.

Left out: free-form names without a cue (收件人, 我叫, 王先生) and addresses
with fewer than two administrative or street parts; catching those needs a
named-entity model, not regular expressions.
"""

from __future__ import annotations

import re

_HAN = r"\u4e00-\u9fff"
_ID_CARD = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(
    r"(?<!\d)(?:\+?86[-\s]?)?1[3-9]\d(?:[-\s]?\d{4}){2}(?!\d)"  # mobile, also 138-1234-5678 and +86
    r"|(?<!\d)0\d{2,3}-\d{7,8}(?!\d)"  # landline with area code
)
_LABELLED_NUMBER = re.compile(r"((?:订单|运单|快递单|物流单|单)(?:号|编号)?\s*[:：是为]?\s*)[A-Za-z0-9-]{6,}")
_LONG_NUMBER = re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{0,4}\d{10,}(?![0-9])")
_LABELLED_ADDRESS = re.compile(rf"((?:收货地址|地址|寄到|送到|住在)\s*[:：是为]?\s*)[^\s，。,.!！?？;；]+")
_ADDRESS = re.compile(
    rf"(?:[{_HAN}]{{1,8}}?(?:省|自治区|市|区|县|镇|乡|村|大道|路|街|巷|弄|小区|花园|大厦)){{2,}}"
    rf"(?:[0-9A-Za-z一二三四五六七八九十零-]+(?:号楼|号院|号|栋|幢|单元|楼|层|室))*"
)
_LABELLED_NAME = re.compile(rf"((?:收件人|收货人|联系人|姓名|名字叫|我叫)\s*[:：是为]?\s*)[{_HAN}·]{{2,4}}")
_HONORIFIC = re.compile(rf"[{_HAN}](?=先生|女士|小姐)")

# Order matters: longer, more specific numbers go before the generic ones.
_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (_ID_CARD, "[身份证]"),
    (_EMAIL, "[邮箱]"),
    (_PHONE, "[电话]"),
    (_LABELLED_NUMBER, r"\1[单号]"),
    (_LONG_NUMBER, "[单号]"),
    (_LABELLED_ADDRESS, r"\1[地址]"),
    (_ADDRESS, "[地址]"),
    (_LABELLED_NAME, r"\1[姓名]"),
    (_HONORIFIC, "*"),
)


def mask_pii(text: str) -> str:
    """The text with personal data replaced by placeholders such as [电话] and [地址]."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
