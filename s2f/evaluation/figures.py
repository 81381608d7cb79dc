"""Evaluation figures (matplotlib `Figure` objects rendered by Agg: headless).

- `face_grid`: one row per test speaker: true face crop | F2F (decoder of the true feature) |
  S2F (decoder of the voice feature).
- `recall_curves`: recall@K of the model at each input length, the mean-face baseline and
  chance, with the bootstrap CIs as bands.
- `correlation_table`: craniofacial and voice-parameter correlations as a table figure.

    python -m s2f.evaluation.figures OUT.png     # draws a recall plot of made-up numbers
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

import numpy as np
import polars as pl

# Figures are built as `Figure` objects, never through pyplot, so no display backend is used.
from matplotlib.figure import Figure


def _decode_jpeg(data: bytes | None) -> np.ndarray | None:
    if not data:
        return None
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def face_grid(labels: list[str], crops: list[bytes | None], f2f: np.ndarray, s2f: np.ndarray
              ) -> Figure:
    """`f2f`, `s2f`: N×H×W×3 uint8 reconstructions; `crops`: JPEG bytes or None per row."""
    return image_grid(labels, ("true face", "F2F (from face)", "S2F (from voice)"),
                      [(_decode_jpeg(crops[i]), f2f[i], s2f[i]) for i in range(len(labels))],
                      missing="no crop")


def image_grid(labels: Sequence[str], titles: Sequence[str],
               rows: Sequence[Sequence[np.ndarray | None]], missing: str = "none",
               note: str = "Reconstructions are statistical estimates, not the speakers' faces"
               ) -> Figure:
    """One row of images per label, one column per title (`missing` where an image is None)."""
    n = len(rows)
    fig = Figure(figsize=(2 * len(titles), 2 * max(n, 1)))
    axes = fig.subplots(max(n, 1), len(titles), squeeze=False)
    for j, title in enumerate(titles):
        axes[0, j].set_title(title, fontsize=9)
    for i, images in enumerate(rows):
        for j, img in enumerate(images):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.text(0.5, 0.5, missing, ha="center", va="center", fontsize=8)
            else:
                ax.imshow(img)
        axes[i, 0].set_ylabel(labels[i], fontsize=7)
    fig.suptitle(note, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    return fig


def recall_curves(recall: pl.DataFrame) -> Figure:
    """`recall`: rows of scores.RECALL_SCHEMA."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for (method, seconds), part in recall.sort("k").group_by(["method", "seconds"],
                                                            maintain_order=True):
        k = part["k"].to_numpy()
        label = method if seconds is None else f"{method} {seconds:g} s"
        style = "--" if method != "model" else "-"
        ax.plot(k, part["recall"].to_numpy(), style, marker="o", label=label)
        ax.fill_between(k, part["ci_low"].to_numpy(), part["ci_high"].to_numpy(), alpha=0.15)
    chance = recall.unique("k").sort("k")
    if chance.height:
        ax.plot(chance["k"].to_numpy(), chance["chance"].to_numpy(), ":", color="gray",
                label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Voice → face retrieval (per-identity pool)", fontsize=9)
    fig.tight_layout()
    return fig


def correlation_table(craniofacial: pl.DataFrame, voice_parameters: pl.DataFrame) -> Figure:
    rows: list[list[str]] = []
    for r in craniofacial.iter_rows(named=True):
        rows.append(["craniofacial", r["measurement"], f"{r['r']:.3f}", f"{r['p']:.2g}"])
    for r in voice_parameters.iter_rows(named=True):
        rows.append([f"voice ({r['method']})", r["parameter"], f"{r['r']:.3f}", f"{r['p']:.2g}"])
    if not rows:
        rows = [["-", "no correlations computed", "", ""]]
    fig = Figure(figsize=(6, 0.25 * len(rows) + 0.8))
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=["kind", "quantity", "Pearson r", "p"],
                     loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    ax.set_title("F2F vs S2F craniofacial measurements; voice parameters vs read-out", fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    out = (sys.argv[1:] if argv is None else argv)[0]
    ks = [1, 2, 5, 10]
    df = pl.DataFrame({"method": ["model"] * 4, "seconds": [6.0] * 4, "k": ks,
                       "recall": [0.1, 0.2, 0.4, 0.6], "ci_low": [0.05, 0.1, 0.3, 0.5],
                       "ci_high": [0.15, 0.3, 0.5, 0.7], "chance": [k / 20 for k in ks]})
    recall_curves(df).savefig(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
