"""notebooks/: committed without outputs, and executed top to bottom on the tiny CI configuration.

The notebooks run with the repository root as working directory, write everything under
KEFU_NOTEBOOK_RUNS (a temp dir here) and must leave the repository's files untouched. The retrain
notebook reads the agents' corrections from a feedback store: its run gets a temporary SQLite store
that the test first fills through the HTTP API (the tiny test bundle routes the sample chat log, then
the example corrections are posted to /v1/feedback).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CI_CONFIG = "training/configs/notebook_ci.yaml"
RETRAIN = ROOT / "notebooks" / "retrain_from_corrections.ipynb"
CHAT_LOG = ROOT / "notebooks" / "data" / "chat_log_sample.jsonl"
EXAMPLE_CORRECTIONS = ROOT / "notebooks" / "data" / "corrections_example.csv"


def test_the_notebooks_are_there():
    assert {p.name for p in NOTEBOOKS} >= {"retrain_from_corrections.ipynb", "explore_predictions.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{path.name} cell {i} has outputs: clear them (jupyter nbconvert --clear-output --inplace {path.name})"
            )


def _snapshot(*folders: str) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in (ROOT / f).rglob("*") if p.is_file()}


def fill_store_through_the_api(bundle: Path, db: Path) -> Counter:
    """Route every conversation of the sample chat log, then post each row of the example corrections as feedback.

    Returns the feedback answers' status codes. The example CSV has 46 good rows and three bad ones: two
    unknown label ids (422) and one agent turn, which has no message prediction (404).
    """
    from fastapi.testclient import TestClient

    from kefu_router.serve.app import create_app
    from kefu_router.serve.settings import Settings

    conversations: dict[str, list[dict]] = {}
    for line in CHAT_LOG.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        conversations.setdefault(row["conversation_id"], []).append(row)
    statuses = Counter()
    with TestClient(create_app(Settings(model=bundle, db=str(db), log_interval_ms=20))) as client:
        for cid, turns in conversations.items():
            turns.sort(key=lambda r: r["turn"])
            assert [r["turn"] for r in turns] == list(range(len(turns)))  # the API numbers turns by position
            r = client.post("/v1/route", json={"conversation_id": cid, "turns": [{"role": t["role"], "text": t["text"]} for t in turns]})
            assert r.status_code == 200, r.text
        with EXAMPLE_CORRECTIONS.open(encoding="utf-8") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                body = {"conversation_id": row["conversation_id"], "turn": int(row["turn"]), "emotion": row["emotion"],
                        "intent": row["intent"], "customer_type": [t for t in row["customer_type"].split(";") if t],
                        "agent_id": row["agent"], "idempotency_key": f"example-{line}"}
                statuses[client.post("/v1/feedback", json=body).status_code] += 1
    return statuses


def _run(nb, tmp_path: Path, name: str) -> None:
    import nbclient
    import nbformat

    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        nbformat.write(nb, tmp_path / name)  # the executed copy, for a failed run's details


def _notebook_env(monkeypatch, runs: Path) -> None:
    for module in ("nbclient", "nbformat", "ipykernel", "matplotlib", "pandas", "sklearn", "datasets", "torch"):
        pytest.importorskip(module)
    monkeypatch.setenv("KEFU_NOTEBOOK_CONFIG", CI_CONFIG)
    monkeypatch.setenv("KEFU_NOTEBOOK_RUNS", str(runs))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never the network
    for name in ("KEFU_ROUTER_MODEL", "KEFU_NOTEBOOK_STORE", "KEFU_NOTEBOOK_EXPORT", "KEFU_NOTEBOOK_CHAT_EXPORT",
                 "KEFU_NOTEBOOK_SINCE_DAYS", "KEFU_ROUTER_TEXT_HMAC_KEY"):
        monkeypatch.delenv(name, raising=False)


def _corrections_from_the_csv() -> list[dict]:
    """The train rows that the example CSV gives through the corrections module directly (what the store must give too)."""
    from kefu_router.training.corrections import held_out_data, load_corrections, merge_corrections
    from kefu_router.training.feedback_export import read_chat_export

    corrections, _ = load_corrections(EXAMPLE_CORRECTIONS)
    return merge_corrections(corrections, read_chat_export(CHAT_LOG), *held_out_data()).train_rows


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch, request):
    import nbformat

    runs = tmp_path / "runs"
    _notebook_env(monkeypatch, runs)
    if path == RETRAIN:
        pytest.importorskip("fastapi")
        pytest.importorskip("sqlalchemy")
        store = tmp_path / "feedback.db"
        assert fill_store_through_the_api(request.getfixturevalue("tiny_bundle"), store) == Counter({201: 46, 422: 2, 404: 1})
        monkeypatch.setenv("KEFU_NOTEBOOK_STORE", str(store))
    before = _snapshot("notebooks", "models", "training/data", "training/configs")

    _run(nbformat.read(path, as_version=4), tmp_path, path.name)
    assert sorted(runs.glob("plots/*.png")), "the notebook saved no plot"
    assert _snapshot("notebooks", "models", "training/data", "training/configs") == before, "the notebook wrote into the repository"
    if path == RETRAIN:
        record = json.loads((runs / "corrections_source.json").read_text(encoding="utf-8"))
        assert record["source"] == "store" and record["corrected_messages"] == 46, record
        assert record["set_aside"] >= 2 and record["unmatched"] == 0, record  # the dev and test conversations of the sample
        exported = [json.loads(line) for line in (runs / "corrections_train.jsonl").read_text(encoding="utf-8").splitlines()]
        assert {r.pop("source") for r in exported} == {"feedback"}
        expected = [{k: v for k, v in r.items() if k != "source"} for r in _corrections_from_the_csv()]
        key = lambda r: r["id"]  # noqa: E731
        assert sorted(exported, key=key) == sorted(expected, key=key) and len(exported) == record["train_rows"] > 30


def test_retrain_notebook_without_a_store_says_so_and_uses_the_example_csv(tmp_path, monkeypatch):
    """A fresh clone has no kefu_router.db: the notebook's data cells fall back to the example CSV (training cells not run)."""
    import nbformat

    runs = tmp_path / "runs"
    _notebook_env(monkeypatch, runs)
    monkeypatch.setenv("KEFU_ROUTER_DB", str(tmp_path / "never-created.db"))
    nb = nbformat.read(RETRAIN, as_version=4)
    retrain = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "".join(c.source).startswith("## 3. Retrain"))
    nb.cells = nb.cells[:retrain]
    _run(nb, tmp_path, RETRAIN.name)
    assert not (tmp_path / "never-created.db").exists()
    record = json.loads((runs / "corrections_source.json").read_text(encoding="utf-8"))
    assert record["source"] == "example" and record["corrected_messages"] == 49 and record["train_rows"] == len(_corrections_from_the_csv())
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "NO FEEDBACK STORE" in printed and "2 bad row(s) skipped" in printed and "is an agent turn" in printed
