"""Shared fixtures: a tiny randomly initialised BERT (no download) and small data files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
MINI_DATA = FIXTURES / "mini.jsonl"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="session", autouse=True)
def prediction_store_in_session_tmp(tmp_path_factory):
    """Services started by module- and session-scoped fixtures log into a temporary file, never ./kefu_router.db."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEFU_ROUTER_DB", str(tmp_path_factory.mktemp("store") / "kefu_router.db"))
        yield


@pytest.fixture(autouse=True)
def prediction_store_in_tmp(tmp_path, monkeypatch):
    """Every service a test starts logs into its own SQLite file, never into ./kefu_router.db."""
    monkeypatch.setenv("KEFU_ROUTER_DB", str(tmp_path / "kefu_router.db"))


POSTGRES_ENV = "KEFU_ROUTER_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """The test PostgreSQL database ($KEFU_ROUTER_TEST_POSTGRES_URL, set by .ci/run); skip without it, fail in CI."""
    import os

    url = os.environ.get(POSTGRES_ENV)
    if not url:
        reason = f"{POSTGRES_ENV} is not set: no PostgreSQL server to test against (.ci/run starts one)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test the PostgreSQL store: {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """An empty database, once as a SQLite file and once on the test PostgreSQL server (tables dropped first)."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    url = postgres_url()
    from sqlalchemy import create_engine

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS feedback, predictions, alembic_version CASCADE")
    engine.dispose()
    return url


@pytest.fixture(autouse=True)
def no_logging_left_configured():
    """Fail a test that leaves handlers on the root logger or changes its level (pytest's own handlers aside).

    Such a handler holds the stderr of that moment, pytest's capture, which is closed by the time the
    interpreter exits; the next record (py4j's INFO at exit) then ends the run with '--- Logging error ---'.
    """
    root = logging.getLogger()

    def state():
        return [h for h in root.handlers if not type(h).__module__.startswith("_pytest")], root.level

    before = state()
    yield
    assert state() == before, "the test left the root logger configured: restore it (see tests/test_serve.py restore_logging)"


def build_tiny_bert(root: Path, texts: list[str]) -> Path:
    """A 2-layer, 32-hidden BERT with a character vocabulary made from `texts`."""
    from transformers import BertConfig, BertTokenizer

    from kefu_router.text import ROLE_MARK
    from kefu_router.training.model import BertForKefu

    chars = sorted({ch.lower() for t in [*texts, *ROLE_MARK.values()] for ch in t if not ch.isspace()})
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(SPECIALS + chars) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(root / "vocab.txt"))  # transformers 5: `vocab`, not `vocab_file`
    config = BertConfig(
        vocab_size=len(SPECIALS) + len(chars), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256,
    )
    BertForKefu(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def fixture_texts() -> list[str]:
    return [json.loads(line)["text"] for line in MINI_DATA.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), fixture_texts())


@pytest.fixture(scope="session")
def trained_run(tiny_bert, tmp_path_factory) -> Path:
    """A run trained for a few steps on the mini fixture: shared by pipeline tests."""
    from kefu_router.training.config import load_config
    from kefu_router.training.train import train

    out = tmp_path_factory.mktemp("run")
    config = load_config(
        None,
        [f"data=['{MINI_DATA}']", f"base_model={tiny_bert}", f"output_dir={out}", "epochs=3", "batch_size=8",
         "learning_rate=0.001", "max_length=64", "dev_fraction=0.25", "test_fraction=0.25", "threads=1"],
    )
    train(config, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(trained_run, tmp_path_factory) -> Path:
    from kefu_router.training.evaluate import evaluate_run
    from kefu_router.training.export import export

    evaluate_run(trained_run)
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    # A tiny random model's logits sit near every decision boundary, so int8 noise flips labels:
    # parity is asserted on the fp32 graph in test_pipeline, not through this threshold.
    export(trained_run, out, min_agreement=0.0, version="tiny-test")
    return out


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may break."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
