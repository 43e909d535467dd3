"""The quality report: figures from the store (figures.py), as JSON or as one self-contained HTML page.

    figures = compute(store, since, until, bundle)            # what GET /v1/quality returns
    write_html(figures, "quality.html")                       # `kefu-router quality report -o quality.html`

The page is rendered from templates/quality.html.j2 (Jinja2, autoescaped); its plots are matplotlib
PNGs inlined as base64 `data:` URIs, so the file opens anywhere without network or other files.
The drift reference is the bundle's `label_distribution` (metadata.json), else a JSON file in the
same shape (--training-distribution), else none: the report then says drift was not computed.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Optional

from kefu_router.quality.figures import HEAD_NAMES, quality_figures

TEMPLATES = Path(__file__).resolve().parent / "templates"


def training_distribution(metadata: dict, override: Optional[str | Path] = None) -> tuple[Optional[dict], str]:
    """({head: {label: count}} or None, where it came from): `override` JSON file, else the bundle's metadata."""
    if override is not None:
        from kefu_router.bundle_files import LabelDistribution

        data = LabelDistribution.model_validate(json.loads(Path(override).read_text(encoding="utf-8")))
        return data.model_dump(exclude={"source"}), f"{override}: {data.source}"
    dist = metadata.get("label_distribution")
    if not dist:
        return None, f"bundle {metadata.get('version', '?')} has no label_distribution"
    return {h: dist[h] for h in HEAD_NAMES}, f"bundle {metadata.get('version', '?')}: {dist.get('source', '')}"


def compute(store, since: datetime, until: datetime, metadata: dict, *, training_file=None, psi_warning: float = 0.2) -> dict:
    """The figures of [since, until) from `store`, drift against the bundle's (or the file's) training labels."""
    training, source = training_distribution(metadata, training_file)
    return quality_figures(store.messages(since, until), store.decisions(since, until), since=since, until=until,
                           training=training, training_source=source, psi_warning=psi_warning)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(figures: dict) -> dict[str, str]:
    """name -> base64 PNG: weekly agreement, confusion matrices, review flag, weekly PSI (label ids, not Chinese: no font needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    versions = figures["model_versions"]
    if not versions:
        return out
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), sharey=True)
    for ax, head in zip(axes, HEAD_NAMES):
        for v in versions:
            weekly = figures["versions"][v]["agreement"][head]["weekly"]
            xs = [p["week"] for p in weekly if p["agreement"] is not None]
            ax.plot(xs, [p["agreement"] for p in weekly if p["agreement"] is not None], marker="o", label=v)
        ax.set_title(f"{head}: agreement with agents")
        ax.set_ylim(0, 1.02)
        ax.tick_params(axis="x", rotation=45)
    axes[0].set_ylabel("share of reviewed messages")
    axes[-1].legend(fontsize=8)
    out["agreement"] = _png(fig)

    for v in versions:
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
        for ax, head in zip(axes, ("emotion", "intent")):
            cm = figures["versions"][v]["confusion"][head]
            matrix, labels = cm["matrix"], cm["labels"]
            ax.imshow(matrix, cmap="Blues")
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(labels)), labels, fontsize=8)
            top = max(max(row) for row in matrix) or 1
            for i, row in enumerate(matrix):
                for j, n in enumerate(row):
                    if n:
                        ax.text(j, i, n, ha="center", va="center", fontsize=7, color="white" if n > top / 2 else "black")
            ax.set_xlabel("agent's final label")
            ax.set_ylabel("model's label")
            ax.set_title(f"{v}: {head}")
        out[f"confusion {v}"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(versions)
    for k, v in enumerate(versions):
        flag = figures["versions"][v]["review_flag"]
        values = [flag[m] if flag[m] is not None else 0 for m in ("rate", "precision", "recall")]
        ax.bar([i + k * width for i in range(3)], values, width, label=v)
    ax.set_xticks([i + width * (len(versions) - 1) / 2 for i in range(3)], ["flag rate", "precision", "recall"])
    ax.set_ylim(0, 1.02)
    ax.set_title("needs_human_review flag")
    ax.legend(fontsize=8)
    out["review_flag"] = _png(fig)

    if figures["training_distribution"]["available"]:
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), sharey=True)
        for ax, head in zip(axes, HEAD_NAMES):
            for v in versions:
                weekly = [p for p in figures["versions"][v]["drift"][head]["weekly"] if p["psi"] is not None]
                ax.plot([p["week"] for p in weekly], [p["psi"] for p in weekly], marker="o", label=v)
            ax.axhline(figures["psi_warning"], color="red", linestyle="--", linewidth=1, label="warning")
            ax.set_title(f"{head}: PSI vs training labels")
            ax.tick_params(axis="x", rotation=45)
        axes[0].set_ylabel("population stability index")
        axes[-1].legend(fontsize=8)
        out["drift"] = _png(fig)
    return out


def render_html(figures: dict) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2", "html"]))
    pct = lambda x: "–" if x is None else f"{x:.1%}"  # noqa: E731
    env.filters["pct"] = pct
    return env.get_template("quality.html.j2").render(f=figures, images=plots(figures), heads=HEAD_NAMES)


def write_html(figures: dict, output: str | Path) -> Path:
    """Write the self-contained page; returns its path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(figures), encoding="utf-8")
    return output
