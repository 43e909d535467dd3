"""Matplotlib set-up for Chinese labels: pick an installed CJK font, or warn clearly.

Matplotlib's default DejaVu Sans has no CJK glyphs, so Chinese tick labels render
as empty boxes. `use_cjk_font()` finds one of the usual CJK fonts (Debian/Ubuntu:
`apt-get install fonts-noto-cjk` or `fonts-wqy-microhei`) and puts it first in
`font.sans-serif`, keeping the other fonts as fallbacks for Latin text.
"""

from __future__ import annotations

import warnings

# Preferred first; names as matplotlib's font manager reports them.
CJK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
    "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Microsoft YaHei", "SimHei", "PingFang SC",
    "Heiti SC", "Hiragino Sans GB", "AR PL UMing CN", "Droid Sans Fallback",
)


def find_cjk_font() -> str | None:
    """The first installed font of CJK_FONTS, or None."""
    from matplotlib import font_manager

    def pick() -> str | None:
        installed = {f.name for f in font_manager.fontManager.ttflist}
        return next((name for name in CJK_FONTS if name in installed), None)

    found = pick()
    if found is None:  # matplotlib caches its font list: fonts installed after that are not in it yet
        known = {f.fname for f in font_manager.fontManager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # unreadable or unsupported font file
                    pass
        found = pick()
    return found


def use_cjk_font() -> str | None:
    """Make matplotlib draw Chinese text; return the font used, or None (with a warning)."""
    import matplotlib

    font = find_cjk_font()
    if font is None:
        warnings.warn(
            "no CJK font found: Chinese labels in plots will show as boxes. Install one, e.g. "
            "`apt-get install fonts-noto-cjk` or `fonts-wqy-microhei`, then restart Python.",
            stacklevel=2,
        )
        return None
    matplotlib.rcParams["font.family"] = "sans-serif"
    matplotlib.rcParams["font.sans-serif"] = [font, *[f for f in matplotlib.rcParams["font.sans-serif"] if f != font]]
    matplotlib.rcParams["axes.unicode_minus"] = False  # CJK fonts often lack U+2212 (the minus sign)
    return font
