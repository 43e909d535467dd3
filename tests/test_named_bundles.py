"""`--model default|accurate` and KEFU_ROUTER_MODEL=accurate name the bundled models."""

from __future__ import annotations

from kefu_router.bundle import BUNDLED_MODELS, resolve_bundle_path


def test_names_select_bundled_models_and_paths_stay_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("KEFU_ROUTER_MODEL", raising=False)
    assert resolve_bundle_path(None) == BUNDLED_MODELS / "default"
    assert resolve_bundle_path("accurate") == BUNDLED_MODELS / "accurate"
    monkeypatch.setenv("KEFU_ROUTER_MODEL", "accurate")
    assert resolve_bundle_path(None) == BUNDLED_MODELS / "accurate"
    assert resolve_bundle_path(tmp_path) == tmp_path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "accurate").mkdir()  # a directory of that name where the user is wins
    assert resolve_bundle_path("accurate").resolve() == (tmp_path / "accurate").resolve()
