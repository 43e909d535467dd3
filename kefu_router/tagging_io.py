"""Streaming row readers for batch tagging: JSON Lines, CSV and Parquet, chosen by extension.

Readers yield one `Record` per input row, in file order, with the row's line
number; a row that cannot even be parsed (broken JSON, bytes not valid in the file's
encoding (kefu_router.charsets: given, or detected),
a CSV row with the wrong number of fields) comes out as a Record carrying the
reason instead of being skipped, so the caller can reject it and count it.

Line numbers: JSON Lines count physical lines from 1 (blank lines are not rows
but are counted); CSV counts records with the header as 1 (equal to the physical
line unless the file has blank lines or line breaks inside quoted fields);
Parquet counts rows from 1.

Left out: compressed inputs (.jsonl.gz), JSON arrays and Excel files.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kefu_router.charsets import AUTO, EncodingError, resolve_encoding

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_BATCH_ROWS = 8192


class TaggingError(ValueError):
    """Bad input or options for a tagging run; reported to the user without a traceback."""


@dataclass(frozen=True)
class Record:
    """One input row: its parsed fields, or the reason it could not be parsed (and its raw text)."""

    line: int | None
    row: dict | None
    error: tuple[str, str] | None = None  # (reason code, message)
    raw: str | None = None


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TaggingError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .csv or .parquet")
    return fmt


@dataclass
class Reader:
    """Column names (None for JSON Lines), Arrow types where the format has them, and a row estimate."""

    path: Path
    format: str
    columns: list[str] | None
    schema: pa.Schema | None
    estimated_rows: int | None
    encoding: str | None = None  # codec of JSON Lines and CSV bytes (Parquet text is UTF-8 by the format)

    def records(self, skip: int = 0) -> Iterator[Record]:
        """Every row after the first `skip` rows (rejected ones included), in file order."""
        return {"jsonl": _jsonl_records, "csv": _csv_records, "parquet": _parquet_records}[self.format](self, skip)


def open_reader(path: Path, encoding: str | None = AUTO) -> Reader:
    """A reader for `path`; JSON Lines and CSV are decoded with `encoding` ("auto": detected, see
    kefu_router.charsets). Raises TaggingError for a missing, unreadable or unsupported file or encoding."""
    if not path.is_file():
        raise TaggingError(f"input file not found: {path}")
    fmt = file_format(path)
    try:
        if fmt == "parquet":
            meta = pq.ParquetFile(path)
            return Reader(path, fmt, meta.schema_arrow.names, meta.schema_arrow, meta.metadata.num_rows)
        codec = resolve_encoding(path, encoding)
        estimate = _count_lines(path)
        if fmt == "jsonl":
            return Reader(path, fmt, None, None, estimate, codec)
        with path.open(encoding="utf-8-sig" if codec == "utf-8" else codec, errors="replace", newline="") as fh:
            header = next(csv.reader(fh), None)
    except EncodingError as exc:
        raise TaggingError(f"{path}: {exc}") from None
    except (pa.ArrowException, OSError) as exc:
        raise TaggingError(f"{path}: cannot read {fmt} file ({exc})") from None
    if not header:
        raise TaggingError(f"{path}: CSV file has no header row")
    if len(set(header)) != len(header):
        raise TaggingError(f"{path}: CSV header repeats a column name: {header}")
    return Reader(path, fmt, header, pa.schema([(c, pa.string()) for c in header]), max(estimate - 1, 0), codec)


def _count_lines(path: Path) -> int:
    """Newlines in the file: a cheap row estimate for the progress bar."""
    count, last = 0, b"\n"
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _jsonl_records(reader: Reader, skip: int) -> Iterator[Record]:
    seen = 0
    with reader.path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            seen += 1
            if seen <= skip:
                continue
            try:
                line = raw.decode(reader.encoding)
            except UnicodeDecodeError as exc:
                msg = f"line is not valid {reader.encoding} ({exc.reason} at byte {exc.start})"
                yield Record(lineno, None, ("undecodable", msg), raw.decode(reader.encoding, "backslashreplace").rstrip("\r\n"))
                continue
            try:
                row = json.loads(line.lstrip("\ufeff") if lineno == 1 else line)
            except json.JSONDecodeError as exc:
                yield Record(lineno, None, ("bad_json", f"invalid JSON ({exc.msg}: column {exc.colno})"), line.rstrip("\r\n"))
                continue
            if not isinstance(row, dict):
                yield Record(lineno, None, ("not_object", f"row must be a JSON object, got {type(row).__name__}"), line.rstrip("\r\n"))
                continue
            yield Record(lineno, row)


def _csv_records(reader: Reader, skip: int) -> Iterator[Record]:
    """pyarrow's streaming CSV reader, every column as bytes so that each cell is decoded (and rejected) alone.

    Malformed rows reach `invalid_row_handler` with their record number ahead of the
    batch they would belong to; they are slotted back in order by that number.
    """
    columns = reader.columns or []
    malformed: dict[int, tuple[str, str]] = {}
    unnumbered: list[tuple[str, str]] = []

    def on_invalid(row) -> str:
        reason = (f"CSV row has {row.actual_columns} fields, the header has {row.expected_columns}", row.text)
        if row.number is None:
            unnumbered.append(reason)
        else:
            malformed[row.number] = reason
        return "skip"

    try:
        stream = pacsv.open_csv(
            reader.path,
            # The header was read (and decoded) by open_reader: Arrow takes its names, not its bytes.
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 22, column_names=columns, skip_rows=1),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.binary() for c in columns}, strings_can_be_null=False),
        )
    except pa.ArrowException as exc:
        raise TaggingError(f"{reader.path}: cannot read CSV file ({exc})") from None

    def bad(number: int | None, reason: tuple[str, str]) -> Record:
        return Record(number, None, ("bad_csv_row", reason[0]), reason[1])

    def in_order() -> Iterator[Record]:
        number = 1  # the header is record 1
        try:
            for batch in stream:
                for values in batch.to_pylist():
                    while unnumbered:
                        yield bad(None, unnumbered.pop(0))
                    number += 1
                    while number in malformed:
                        yield bad(number, malformed.pop(number))
                        number += 1
                    yield _decode_csv_row(number, values, reader.encoding)
        except pa.ArrowException as exc:
            raise TaggingError(f"{reader.path}: cannot read CSV file after record {number} ({exc})") from None
        for n in sorted(malformed):
            yield bad(n, malformed[n])
        for reason in unnumbered:
            yield bad(None, reason)

    for seen, record in enumerate(in_order(), start=1):
        if seen > skip:
            yield record


def _decode_csv_row(number: int, values: dict, encoding: str) -> Record:
    row = {}
    for column, value in values.items():
        try:
            row[column] = value.decode(encoding) if value is not None else None
        except UnicodeDecodeError as exc:
            raw = {c: (v.decode(encoding, "backslashreplace") if v is not None else None) for c, v in values.items()}
            return Record(number, None, ("undecodable", f"column {column!r} is not valid {encoding} ({exc.reason})"), json.dumps(raw, ensure_ascii=False))
    return Record(number, row)


def _parquet_records(reader: Reader, skip: int) -> Iterator[Record]:
    try:
        pf = pq.ParquetFile(reader.path)
        first_group, row = 0, 0  # whole row groups before `skip` are not read at all
        while first_group < pf.num_row_groups and row + pf.metadata.row_group(first_group).num_rows <= skip:
            row += pf.metadata.row_group(first_group).num_rows
            first_group += 1
        groups = list(range(first_group, pf.num_row_groups))
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, row_groups=groups) if groups else ():
            if row + batch.num_rows <= skip:
                row += batch.num_rows
                continue
            start = max(skip - row, 0)
            for offset, values in enumerate(batch.slice(start).to_pylist()):
                yield Record(row + start + offset + 1, values)
            row += batch.num_rows
    except pa.ArrowException as exc:
        raise TaggingError(f"{reader.path}: cannot read Parquet file ({exc})") from None
