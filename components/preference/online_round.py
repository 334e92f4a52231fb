"""One online preference round (beyond both papers, which tune once on a fixed pool): the current policy's own
candidates, rated, paired, and that policy fine-tuned with Flow-DPO on them.

Round k of rounds.schedule starts from the policy named there (the first from dpo.output, each next one from the
previous round's model) and runs the same recipes as the candidates, annotate, pairs and dpo stages with their
sections pointed at the round's own files (`round_params`):

    candidates  the policy at every rounds.seeds x rounds.guidances, on rounds.windows windows of the preference
                split that no other round rates (candidates.window_phase = k / (R + 1))
    annotate    rounds.rater (annotate.source by default: the simulated rater or the critic)
    pairs       pairs.* (strategy, weights, margin) on those ratings: the composite set trains
    dpo         dpo.* with base_model = the round's policy and rounds.steps steps. The reference of Flow-DPO is the
                base with its adapters off, so every round's reference is the previous round's policy.

Files: <data_dir>/<name>/{candidates,ratings,pairs}, <reports_dir>/<name>/{annotate.md,pairs.md,pairs.json,...},
the model <out_dir>/<name> (a merged bundle, variant = the round's name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState

from components.config import GeneratorSpec, Params
from components.preference.annotation import annotate, write_annotation
from components.preference.dpo_training import DpoRun, train_dpo
from components.preference.generate import generate_candidates
from components.preference.pair_sets import curate_pair_sets, read_scores, write_pair_sets


@dataclass
class RoundRun:
    name: str
    policy: str  # the bundle the round started from (its DPO reference)
    candidates: int
    pairs: dict[str, int]  # pair set -> pairs
    dpo: DpoRun

    def summary(self) -> dict:
        return {"candidates": self.candidates, **{f"pairs_{k}": v for k, v in self.pairs.items()},
                **self.dpo.result.summary()}


def _generator_name(guidance: float) -> str:
    return "policy_g" + f"{guidance:g}".replace(".", "p")  # candidate ids use "." as their separator


def round_params(params: Params, name: str) -> Params:
    """params with the candidates, annotate, pairs and dpo sections pointed at round `name` (module docstring)."""
    cfg = params.rounds
    if name not in cfg.schedule:
        raise ValueError(f"rounds.schedule has no round {name!r} (it has: {', '.join(cfg.schedule) or 'none'})")
    k, n_rounds = list(cfg.schedule).index(name) + 1, len(cfg.schedule)
    source = params.annotate.source if cfg.rater == "annotate" else cfg.rater
    if source == "human":
        raise ValueError(f"round {name}: annotate.source is human, but no one has rated the videos this round makes; "
                         "set rounds.rater: critic (the critic rates at scale) or simulated")
    policy = cfg.schedule[name]
    data, reports = Path(cfg.data_dir) / name, Path(cfg.reports_dir) / name
    pool = [GeneratorSpec(name=_generator_name(g), model=policy, guidance=g, seeds=list(cfg.seeds)) for g in cfg.guidances]
    pool = [generator.model_dump() for generator in pool]
    updates = {
        "candidates": {"out_dir": str(data / "candidates"), "pool": pool, "windows": cfg.windows,
                       "window_phase": k / (n_rounds + 1)},
        "annotate": {"source": source, "out_dir": str(data / "ratings"), "report_path": str(reports / "annotate.md")},
        "pairs": {"ratings": str(data / "ratings"), "out_dir": str(data / "pairs"), "report_path": str(reports / "pairs.md"),
                  "summary_path": str(reports / "pairs.json"), "figure_path": str(reports / "pairs_margins.png")},
        "dpo": {"base_model": policy, "candidates": str(data / "candidates"), "pairs": str(data / "pairs"),
                "pair_set": "composite", "output": cfg.model_dir(name), "steps": cfg.steps},
    }
    # Each section is validated again with the round's values. Params' cross-section checks are not: they check
    # the pipeline's own wiring (rounds.schedule starts from dpo.output), which a round's repointed dpo breaks.
    sections = {name: type(getattr(params, name)).model_validate({**getattr(params, name).model_dump(), **update})
                for name, update in updates.items()}
    return params.model_copy(update=sections)


def run_round(params: Params, name: str, log_fn=None, is_main: bool = True) -> RoundRun:
    """Candidates -> ratings -> pairs -> Flow-DPO for round `name`; the main process writes every file."""
    p = round_params(params, name)
    candidates, pairs = 0, {}
    with PartialState().main_process_first():  # other ranks of a launch wait, then train on the pairs written here
        if is_main:
            candidates = generate_candidates(p).videos
            write_annotation(p, annotate(p))
            sets = curate_pair_sets(read_scores(p.pairs.ratings), p.pairs)
            write_pair_sets(p.pairs, sets)
            pairs = {k: v["pairs"] for k, v in sets.summary.items()}
    trained = train_dpo(p.dpo, log_fn=log_fn, is_main=is_main, variant=name)
    print(f"round {name}: {candidates} candidates from {p.dpo.base_model}, {trained.n_pairs} composite pairs "
          f"-> {p.dpo.output}")
    return RoundRun(name=name, policy=p.dpo.base_model, candidates=candidates, pairs=pairs, dpo=trained)
