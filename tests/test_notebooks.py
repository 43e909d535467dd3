"""notebooks/: committed without outputs, and executed top to bottom on the tiny CI configuration.

The notebooks run with the repository root as working directory, write everything under
KEFU_NOTEBOOK_RUNS (a temp dir here) and must leave the repository's files untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CI_CONFIG = "training/configs/notebook_ci.yaml"


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    for module in ("nbclient", "nbformat", "ipykernel", "matplotlib", "pandas", "sklearn", "datasets", "torch"):
        pytest.importorskip(module)
    import nbclient
    import nbformat

    runs = tmp_path / "runs"
    monkeypatch.setenv("KEFU_NOTEBOOK_CONFIG", CI_CONFIG)
    monkeypatch.setenv("KEFU_NOTEBOOK_RUNS", str(runs))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never the network
    monkeypatch.delenv("KEFU_ROUTER_MODEL", raising=False)
    before = _snapshot("notebooks", "models", "training/data", "training/configs")

    nb = nbformat.read(path, as_version=4)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        nbformat.write(nb, tmp_path / path.name)  # the executed copy, for a failed run's details
    assert sorted(runs.glob("plots/*.png")), "the notebook saved no plot"
    assert _snapshot("notebooks", "models", "training/data", "training/configs") == before, "the notebook wrote into the repository"
