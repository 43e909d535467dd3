"""Crash-safe part files of a tagging job, in the folder `OUTPUT.parts/`.

Per chunk N: `part-N.<format>` (output rows), `rejects-N.jsonl` and
`state-N.pickle` (the tagger's open conversations) are written through a
temporary file, fsynced and renamed; then `manifest.json` is replaced the same
way. The manifest is the commit point: it counts the input rows done and names
the state to continue from. Files of a chunk that was never committed are
overwritten when the chunk is redone, so a kill at any moment loses nothing and
duplicates nothing. `finish` merges the parts into OUTPUT and the rejects file
and removes the folder. The folder holds raw text until then (also with
--no-text), inside the output's own directory.

Part writers keep each format's types: JSON values as they are; CSV cells as
text (trait lists as `a;b`, as kefu_router.labels.check_labels reads them back);
Parquet columns typed from the input schema or the tag schema, others inferred
per part and unified at merge (numbers widen, anything else becomes text).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from kefu_router.tagging_io import TaggingError

MANIFEST_VERSION = 3  # 2: open conversations carry the router's running state; 3: typed order keys (tagging.order_key)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file, fsync it and rename it over `path`: readers see old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit(folder: Path, manifest: dict) -> None:
    atomic_write(folder / "manifest.json", lambda p: p.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8"))


def open_job(folder: Path, out: Path, job: dict, resume: bool, overwrite: bool) -> dict:
    """The manifest to go on from: the interrupted run's (checked to be the same job), or a fresh one."""
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        if not resume:
            raise TaggingError(f"an interrupted run left {folder}; pass --resume to continue it, or delete that folder to start over")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        changed = [k for k in job if manifest.get("job", {}).get(k) != job[k]]
        if manifest.get("version") != MANIFEST_VERSION or changed:
            raise TaggingError(f"cannot resume {folder}: {', '.join(changed) or 'manifest version'} changed since the run started")
        return manifest
    if out.exists() and not overwrite:
        what = "is already complete (nothing to resume)" if resume else "exists"
        raise TaggingError(f"output {out} {what}; pass --overwrite to replace it")
    if folder.exists():
        shutil.rmtree(folder)  # a run that died before its first commit
    folder.mkdir(parents=True)
    manifest = {"version": MANIFEST_VERSION, "job": job, "chunks_done": 0, "rows_done": 0, "state": None, "counts": {}, "columns": []}
    commit(folder, manifest)
    return manifest


def commit_chunk(folder: Path, manifest: dict, fmt: str, rows: list[dict], columns: list[str], types: dict, rejected: list[dict], state: bytes, n_rows: int) -> None:
    """Write chunk N's files, then commit: `manifest` is updated in place."""
    number = manifest["chunks_done"] + 1
    atomic_write(folder / f"part-{number:06d}.{fmt}", lambda p: write_part(p, fmt, rows, columns, types))
    atomic_write(folder / f"rejects-{number:06d}.jsonl", lambda p: write_part(p, "jsonl", rejected, (), {}))
    state_name, previous = f"state-{number:06d}.pickle", manifest["state"]
    atomic_write(folder / state_name, lambda p: p.write_bytes(state))
    manifest.update(chunks_done=number, rows_done=manifest["rows_done"] + n_rows, state=state_name,
                    columns=list(dict.fromkeys(manifest["columns"] + columns)))
    commit(folder, manifest)
    if previous:
        (folder / previous).unlink(missing_ok=True)


def finish(folder: Path, manifest: dict, out: Path, rejects: Path, fmt: str, columns: list[str], types: dict) -> None:
    """Merge the committed parts into OUTPUT (with `columns`, in that order) and the rejects file; remove the folder."""
    numbers = range(1, manifest["chunks_done"] + 1)
    atomic_write(out, lambda p: merge_parts([folder / f"part-{n:06d}.{fmt}" for n in numbers], p, fmt, columns, types))
    atomic_write(rejects, lambda p: merge_parts([folder / f"rejects-{n:06d}.jsonl" for n in numbers], p, "jsonl", (), {}))
    shutil.rmtree(folder)


def write_part(path: Path, fmt: str, rows: Sequence[dict], columns: Sequence[str], types: dict[str, pa.DataType]) -> None:
    """Write one chunk's rows; `types` fixes the Arrow type of the columns it names (Parquet only)."""
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(_json_line(row) for row in rows)
    elif fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows([_csv_cell(row.get(c)) for c in columns] for row in rows)
    else:
        arrays = [_arrow_column([row.get(c) for row in rows], types.get(c)) for c in columns]
        pq.write_table(pa.table(arrays, names=list(columns)), path)


def _json_line(row: dict) -> str:
    try:
        line = json.dumps(row, ensure_ascii=False, default=str)
        line.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a JSON escape: keep them as escapes
        line = json.dumps(row, ensure_ascii=True, default=str)
    return line + "\n"


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ";".join(value)  # trait lists, as labels.check_labels reads them back
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def _arrow_column(values: list, type_: pa.DataType | None) -> pa.Array:
    if type_ is not None:
        return pa.array(values, type=type_)
    values = [json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else v for v in values]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types within the chunk: keep them as text
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in values], type=pa.string())


def merge_parts(parts: Sequence[Path], out: Path, fmt: str, columns: Sequence[str], types: dict[str, pa.DataType]) -> None:
    """Concatenate part files into `out`; `columns` (every part's columns, in output order) is the CSV header and Parquet schema."""
    if fmt == "jsonl":
        with out.open("wb") as dst:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, dst)
    elif fmt == "csv":
        _merge_csv(parts, out, columns)
    else:
        _merge_parquet(parts, out, columns, types)


def _merge_csv(parts: Sequence[Path], out: Path, columns: Sequence[str]) -> None:
    headers = []
    for part in parts:
        with part.open(encoding="utf-8", newline="") as fh:
            headers.append(next(csv.reader(fh), []))
    columns = list(columns)
    with out.open("w", encoding="utf-8", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(columns)
        for part, header in zip(parts, headers):
            with part.open(encoding="utf-8", newline="") as src:
                if header == columns:  # the usual case: copy the rows as they are
                    next(csv.reader(src), None)
                    shutil.copyfileobj(src, dst)
                else:  # JSON Lines input whose rows differ in their fields
                    writer.writerows([row.get(c, "") for c in columns] for row in csv.DictReader(src))


def _merge_parquet(parts: Sequence[Path], out: Path, columns: Sequence[str], types: dict[str, pa.DataType]) -> None:
    schemas = [pq.read_schema(p) for p in parts if pq.ParquetFile(p).metadata.num_rows]
    names = list(columns)
    target = pa.schema([(n, types.get(n) or _unify([s.field(n).type for s in schemas if n in s.names])) for n in names])
    with pq.ParquetWriter(out, target) as writer:
        for part in parts:
            table = pq.read_table(part)
            if not table.num_rows:
                continue
            arrays = [table[n].cast(f.type) if n in table.column_names else pa.nulls(table.num_rows, f.type) for n, f in zip(names, target)]
            writer.write_table(pa.table(arrays, schema=target))


def _unify(types: list[pa.DataType]) -> pa.DataType:
    """One type for a column whose parts disagree (numbers widen; anything else becomes text)."""
    types = [t for t in types if not pa.types.is_null(t)]
    if not types:
        return pa.string()
    try:
        return pa.unify_schemas([pa.schema([("c", t)]) for t in types], promote_options="permissive").field("c").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.string()
