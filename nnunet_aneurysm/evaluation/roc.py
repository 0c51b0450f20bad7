"""ROC curves of a submission against its labels, as pictures."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from nnunet_aneurysm.labels import LOCATION_COLUMNS, PRESENT_COLUMN, SUBMISSION_COLUMNS


def plot_roc_curves(truth: np.ndarray, scores: np.ndarray, aucs: list[float | None], out: Path) -> list[Path]:
    """``roc_present.png`` (Aneurysm Present) and ``roc_locations.png`` (13 panels); returns the files."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out.mkdir(parents=True, exist_ok=True)

    def draw(ax, j, title):
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
        if aucs[j] is None:
            ax.text(0.5, 0.5, "one class:\nno AUC", ha="center", va="center")
        else:
            fpr, tpr, _ = roc_curve(truth[:, j], scores[:, j])
            ax.plot(fpr, tpr, lw=2)
            ax.text(0.97, 0.05, f"AUC {aucs[j]:.3f}\n{int(truth[:, j].sum())} positives", ha="right", va="bottom")
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("false positive rate (1 - specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")

    files = []
    fig, ax = plt.subplots(figsize=(5, 5))
    draw(ax, SUBMISSION_COLUMNS.index(PRESENT_COLUMN), PRESENT_COLUMN)
    fig.tight_layout()
    files.append(out / "roc_present.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(3, 5, figsize=(17, 10.5))
    for j, (ax, name) in enumerate(zip(axes.flat, LOCATION_COLUMNS)):
        draw(ax, j, name)
    for ax in axes.flat[len(LOCATION_COLUMNS):]:
        ax.axis("off")
    fig.tight_layout()
    files.append(out / "roc_locations.png")
    fig.savefig(files[-1], dpi=80)
    plt.close(fig)
    return files
