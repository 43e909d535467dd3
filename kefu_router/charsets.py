"""The text encoding of an input file for batch tagging: given by the user, or detected.

Chinese chat exports are often GB18030/GBK (or Big5) rather than UTF-8. Readers work on bytes and
decode each row (CSV: each cell) alone, so an encoding must keep ASCII bytes as they are: then the
line breaks, commas and quotes that delimit rows are the same bytes whatever the encoding.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from charset_normalizer import from_bytes

AUTO = "auto"
SAMPLE_BYTES = 1 << 20
CANDIDATES = ("gb18030", "big5")  # tried when UTF-8 does not fit; GB18030 contains GBK and GB2312
_SYNTAX = '\n\r,"{}[]:\\'


class EncodingError(ValueError):
    """An unknown or unusable encoding name, or a file whose encoding cannot be told."""


def resolve_encoding(path: Path, encoding: str | None = AUTO) -> str:
    """The codec name to decode `path` with: `encoding` checked, or detected when it is None or "auto".

    Raises EncodingError for an unknown name, an encoding that does not keep ASCII as is
    (UTF-16, UTF-32), or a file detection cannot place.
    """
    if encoding and encoding.lower() != AUTO:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise EncodingError(f"unknown encoding {encoding!r}") from None
        if _SYNTAX.encode(name, errors="replace") != _SYNTAX.encode("ascii"):
            raise EncodingError(f"encoding {encoding!r} is not ASCII-compatible; convert the file to UTF-8 or GB18030 first")
        return name
    return detect_encoding(path)


def detect_encoding(path: Path) -> str:
    """UTF-8 when at least half of the non-ASCII lines in the first MiB are valid UTF-8 (a few broken rows are
    then rejected one by one), else charset-normalizer's best guess among CANDIDATES; raises EncodingError."""
    with path.open("rb") as fh:
        sample = fh.read(SAMPLE_BYTES)
    if len(sample) == SAMPLE_BYTES:  # do not judge a character cut at the end of the sample
        sample = sample[: sample.rfind(b"\n") + 1] or sample
    lines = [line for line in sample.splitlines() if not line.isascii()]
    if 2 * sum(_is_utf8(line) for line in lines) >= len(lines):
        return "utf-8"
    best = from_bytes(sample, cp_isolation=list(CANDIDATES)).best()
    if best is None:
        raise EncodingError("cannot tell the text encoding (not UTF-8, GB18030 or Big5); pass --encoding")
    return codecs.lookup(best.encoding).name


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
