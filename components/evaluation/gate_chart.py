"""TLPO's learned fusion for people: each expert's weight against timestep, one panel per layer (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from components.evaluation.charts import plt, save_figure  # charts selects the Agg backend before pyplot


def shown_layers(n_layers: int, at_most: int = 4) -> list[int]:
    """A few evenly spaced blocks plus the slot of the adapted layers outside the blocks (index n_layers)."""
    blocks = np.unique(np.linspace(0, n_layers - 1, min(at_most - 1, n_layers)).round().astype(int)).tolist()
    return [*blocks, n_layers]


def write_gate_png(path: str | Path, timesteps: Sequence[float], table: np.ndarray, experts: Sequence[str],
                   layers: Sequence[int], start: float) -> Path:
    """table [n_timesteps, n_layers + 1, n_experts] of fusion weights; one panel per layer of `layers`; `start` is
    the weight every expert starts at (the uniform baseline: 1/K for softmax, 1 for sigmoid)."""
    path = Path(path)
    n_layers = table.shape[1] - 1
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.0), sharey=True, squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for k, expert in enumerate(experts):
            ax.plot(timesteps, table[:, layer, k], label=expert)
        ax.axhline(start, color="grey", linewidth=0.8, linestyle=":")  # the uniform baseline
        ax.set_title(f"block {layer}" if layer < n_layers else "outside blocks")
        ax.set_xlabel("timestep (1000 = noise)")
        ax.set_xlim(max(timesteps), min(timesteps))  # sampling order: noise on the left
    axes[0][0].set_ylabel("fusion weight")
    axes[0][-1].legend(fontsize="small")
    return save_figure(fig, path, dpi=100)
