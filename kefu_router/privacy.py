"""Mask customer data in text that has to be logged (handbook rule: never leak customer data).

`mask_pii` replaces ID card numbers, phone numbers (also written in Chinese
numerals, 一三八… or 壹叁捌…), e-mail addresses, QQ numbers and WeChat ids after
their cue (QQ, 扣扣, 微信, vx, wx, 加V…), order and tracking numbers, postal
addresses and personal names with placeholders such as [电话]. Patterns are
tuned for Chinese e-commerce chats and err towards masking too much: a log
line that hides a shop word is harmless, a leaked phone number is not. The
service logs no message text at all unless asked to; this is for the cases
where text must be logged.

Time is linear in the text: every unbounded repetition starts only where its
run of characters starts (a look-behind guard) and the separators between a
cue and its value are bounded, so no input makes the regex engine backtrack
over the text again and again (tests/test_serve.py times doubled inputs).

Left out: free-form names without a cue (收件人, 我叫, 王先生) and addresses
with fewer than two administrative or street parts; catching those needs a
named-entity model, not regular expressions.
"""

from __future__ import annotations

import re

_HAN = r"\u4e00-\u9fff"
# A digit: any Unicode decimal digit (ASCII, full-width...) or a Chinese numeral; 幺 is 1 read out in numbers.
_CN_DIGITS = "零〇一二三四五六七八九幺壹贰貳叁參肆伍陆陸柒捌玖"
_D = rf"[\d{_CN_DIGITS}]"
_SEP = r"[-\s－]?"  # one optional separator between digit groups: 138-1234-5678, 一三八 一二三四 五六七八
_CUE_GAP = r"\s{0,3}[:：是为]?\s{0,3}"  # between a cue (订单号, 微信) and its value; bounded, so linear

_ID_CARD = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
_PHONE = re.compile(
    rf"(?<!{_D})(?:\+?86{_SEP})?[1１一幺壹]{_SEP}[3-9３-９三四五六七八九叁參肆伍陆陸柒捌玖](?:{_SEP}{_D}){{9}}(?!{_D})"  # mobile
    rf"|(?<!{_D})[0０零〇]{_D}{{2,3}}{_SEP}{_D}{{7,8}}(?!{_D})"  # landline with area code
)
_QQ = re.compile(rf"((?:[Qq]{{2}}|扣扣|企鹅)(?:号码|号)?{_CUE_GAP}){_D}(?:{_SEP}{_D}){{4,}}")
_WECHAT = re.compile(
    rf"((?:微信|威信|薇信|卫星|[Vv]信|(?<![A-Za-z])(?:[Vv][Xx]|[Ww][Xx]|weixin|wechat|WeChat)|加[Vv])"
    rf"(?:号|账号|ID|id)?{_CUE_GAP})[A-Za-z0-9_\-{_CN_DIGITS}]{{5,}}"
)
_LABELLED_NUMBER = re.compile(rf"((?:订单|运单|快递单|物流单|单)(?:号|编号)?{_CUE_GAP})[A-Za-z0-9\-{_CN_DIGITS}]{{6,}}")
_LONG_NUMBER = re.compile(rf"(?<![A-Za-z])[A-Za-z]{{1,4}}{_D}{{10,}}|(?<!{_D}){_D}{{10,}}")
_LABELLED_ADDRESS = re.compile(rf"((?:收货地址|地址|寄到|送到|住在){_CUE_GAP})[^\s，。,.!！?？;；]+")
_ADDRESS = re.compile(
    rf"(?:[{_HAN}]{{1,8}}?(?:省|自治区|市|区|县|镇|乡|村|大道|路|街|巷|弄|小区|花园|大厦)){{2,}}"
    rf"(?:[0-9A-Za-z一二三四五六七八九十零-]+(?:号楼|号院|号|栋|幢|单元|楼|层|室))*"
)
_LABELLED_NAME = re.compile(rf"((?:收件人|收货人|联系人|姓名|名字叫|我叫){_CUE_GAP})[{_HAN}·]{{2,4}}")
_HONORIFIC = re.compile(rf"[{_HAN}](?=先生|女士|小姐)")

# Order matters: longer, more specific numbers go before the generic ones.
_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (_ID_CARD, "[身份证]"),
    (_EMAIL, "[邮箱]"),
    (_PHONE, "[电话]"),
    (_QQ, r"\1[QQ]"),
    (_WECHAT, r"\1[微信]"),
    (_LABELLED_NUMBER, r"\1[单号]"),
    (_LONG_NUMBER, "[单号]"),
    (_LABELLED_ADDRESS, r"\1[地址]"),
    (_ADDRESS, "[地址]"),
    (_LABELLED_NAME, r"\1[姓名]"),
    (_HONORIFIC, "*"),
)


def mask_pii(text: str) -> str:
    """The text with personal data replaced by placeholders such as [电话] and [地址]; time linear in len(text)."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
