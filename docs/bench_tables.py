"""The benchmark page's plot, drawn from the speed table of README.md (no measuring)."""

from __future__ import annotations

import os
import re

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "README.md")


def _number(cell):
    return float(cell.strip().rstrip("x%"))


def speed_table(path=README):
    """The README's table of times per shape: [(column header, values)], shapes."""
    text = open(path, encoding="utf-8").read()
    section = text.split("## Speed", 1)[1]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| B x T x I x H"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if not re.match(r"\d+x\d+x\d+x\d+", cells[0]):
            break
        rows.append(cells)
    columns = [(h, [_number(r[i]) for r in rows]) for i, h in enumerate(header) if i]
    return columns, [r[0] for r in rows]


def plot(fig):
    """Training and inference time of every peer relative to grucy's, per shape."""
    import numpy as np

    columns, shapes = speed_table()
    x = np.arange(len(shapes))
    train, infer = fig.subplots(1, 2, sharey=True)
    for ax, base, peers, title in (
            (train, "train: grucy", ["PyTorch", "NumPy"], "training step"),
            (infer, "infer: grucy", ["ONNX Runtime", "PyTorch"], "inference")):
        names = [h for h, _ in columns]
        start = names.index(base)
        grucy_ms = np.array(columns[start][1])
        # the peers' columns follow grucy's (PyTorch appears in both halves)
        for k, peer in enumerate(peers):
            i = next(i for i in range(start + 1, len(names)) if names[i] == peer)
            ax.bar(x + (k - 0.5) * 0.4, np.array(columns[i][1]) / grucy_ms, 0.4,
                   label=peer)
        ax.axhline(1, color="k", lw=0.8)
        ax.set_xticks(x, shapes, rotation=20, fontsize=8)
        ax.set_xlabel("B x T x I x H")
        ax.set_title(f"{title}: peer time / grucy time")
        ax.legend(fontsize=8)
    train.set_ylabel("times slower than grucy")
    return fig
