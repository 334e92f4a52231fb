"""What TLPO's gate learned: its fusion weights on a grid of timesteps per layer, as JSON and a figure."""

from __future__ import annotations

from pathlib import Path

import torch

from components.evaluation.gate_chart import shown_layers, write_gate_png
from components.io.atomic import write_json
from components.model.gate import uniform_weights
from components.model.tlpo_bundle import gate_table

GATE_GRID = [float(t) for t in range(0, 1001, 50)]  # timesteps the report tabulates the gate on


def write_gate_report(gate, json_path: str | Path, figure_path: str | Path) -> None:
    with torch.no_grad():
        table = gate_table(gate, GATE_GRID).numpy()
    write_json(json_path, {
        "experts": gate.experts, "n_layers": gate.n_layers, "activation": gate.activation, "timesteps": GATE_GRID,
        "layers": [f"block_{i}" for i in range(gate.n_layers)] + ["outside_blocks"],
        "weights": table.round(6).tolist(),  # [timestep][layer][expert]
    })
    start = float(uniform_weights(gate.n_layers, gate.experts, gate.activation)[0, 0])
    write_gate_png(figure_path, GATE_GRID, table, gate.experts, shown_layers(gate.n_layers), start)
