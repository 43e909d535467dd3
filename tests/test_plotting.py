"""use_cjk_font: picks an installed CJK font for matplotlib, or warns clearly."""

from __future__ import annotations

import pytest

matplotlib = pytest.importorskip("matplotlib")

from kefu_router.training import plotting  # noqa: E402


def test_warns_when_no_cjk_font(monkeypatch):
    monkeypatch.setattr(plotting, "find_cjk_font", lambda: None)
    with pytest.warns(UserWarning, match="no CJK font found.*fonts-noto-cjk"):
        assert plotting.use_cjk_font() is None


def test_found_font_goes_first(monkeypatch):
    monkeypatch.setattr(plotting, "find_cjk_font", lambda: "WenQuanYi Micro Hei")
    with matplotlib.rc_context():
        assert plotting.use_cjk_font() == "WenQuanYi Micro Hei"
        assert matplotlib.rcParams["font.sans-serif"][0] == "WenQuanYi Micro Hei"
        assert matplotlib.rcParams["font.family"] == ["sans-serif"] and not matplotlib.rcParams["axes.unicode_minus"]


def test_find_cjk_font_names_a_known_font_or_none():
    assert plotting.find_cjk_font() in (*plotting.CJK_FONTS, None)
