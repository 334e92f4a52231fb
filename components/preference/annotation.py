"""What the annotate stage does: Likert 1-5 per candidate and dimension, from one of three sources, validated and
aggregated over raters, with every count reported.

    simulated  percentiles of each candidate's ground-truth errors (the mouth reader reads lip opening) plus
               per-rater bias and per-rating noise (components/preference/simulated_rater.py)
    human      rows from annotate.human_ratings (CSV or JSONL), checked by components/preference/ratings.py
    critic     the critic's scores as the Likert rows of one rater, `critic`

Writes annotate.out_dir (ratings.jsonl, scores.csv, errors.csv for the simulated source, rating_sheet.csv,
counts.json; atomically) and the markdown report annotate.report_path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import DIMENSIONS, Params
from components.io.atomic import atomic_directory, atomic_file
from components.preference.candidates import load_candidates, load_windows, read_index
from components.preference.ratings import RatingsCheck, aggregate, check_ratings, rating_sheet, read_ratings, tied_windows


def simulated_rows(params: Params) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """(the simulated raters' Likert rows, ground-truth errors of every candidate, the mouth reader's scores)."""
    from components.evaluation.reader_fit import fit_reader
    from components.model.loading import load_bundle
    from components.preference.simulated_rater import ground_truth_errors, simulate_ratings

    cfg = params.annotate
    first_model = next(g.model for g in params.candidates.pool if g.kind == "model")
    reader, reader_scores = fit_reader(params, load_bundle(first_model))
    windows = load_windows(params.candidates.out_dir)
    errors = {}
    for c in load_candidates(params.candidates.out_dir):
        w = windows[c.window_id]
        errors[c.candidate_id] = ground_truth_errors(c.frames, w.frames, w.mouth_open, w.mouth_box, reader)
    errors = pd.DataFrame.from_dict(errors, orient="index")[list(DIMENSIONS)]
    errors.index.name = "candidate_id"
    rows = simulate_ratings(errors, cfg.simulated_raters, cfg.rater_noise, cfg.rater_bias, cfg.seed)
    return rows, errors, {f"mouth_reader.{k}": v for k, v in reader_scores.items()}


def critic_rows(params: Params) -> pd.DataFrame:
    """The critic's scores as Likert rows of one rater, `critic` (percentiles over the pool, as the simulated
    rater maps its errors, without noise)."""
    from components.preference.critic import critic_scores, load_critic
    from components.preference.simulated_rater import percentile_quality

    critic = load_critic(params.annotate.critic_dir)
    scores = critic_scores(critic, load_candidates(params.candidates.out_dir), load_windows(params.candidates.out_dir))
    quality = percentile_quality(-scores[list(DIMENSIONS)])  # higher score = better = smaller "error"
    return pd.DataFrame([{"candidate_id": cid, "rater_id": "critic", "dimension": d,
                          "score": int(np.rint(1 + 4 * quality.loc[cid, d]))}
                         for cid in quality.index for d in DIMENSIONS])


@dataclass
class Annotation:
    source: str
    rows: pd.DataFrame  # checked rating rows: candidate_id, rater_id, dimension, score
    table: pd.DataFrame  # per candidate: window_id, a mean score per dimension, n_raters
    errors: pd.DataFrame | None  # ground-truth errors (simulated source only)
    window_of: dict[str, str]  # candidate_id -> window_id, every candidate of the pool
    check: RatingsCheck
    counts: dict  # the check's counts, candidates, rated_candidates, tied_windows, source
    extra: dict[str, float]  # more metrics of the source (the mouth reader's scores)

    def summary(self) -> dict:
        return {k: v for k, v in self.counts.items() if k != "source"} | self.extra


def annotate(params: Params) -> Annotation:
    """Ratings of every candidate in params.candidates.out_dir from params.annotate.source; see the module docstring."""
    cfg = params.annotate
    index = read_index(params.candidates.out_dir)
    window_of = {cid: wid for wid, ids in index["windows"].items() for cid in ids}
    extra, errors, where = {}, None, f"{cfg.source} ratings"
    if cfg.source == "simulated":
        rows, errors, extra = simulated_rows(params)
    elif cfg.source == "human":
        if not cfg.human_ratings:
            raise ValueError("annotate.source=human needs annotate.human_ratings (a CSV or JSONL file)")
        rows, where = read_ratings(cfg.human_ratings), cfg.human_ratings
    else:
        rows = critic_rows(params)
    rows, check = check_ratings(rows, sorted(window_of), where)
    table = aggregate(rows, cfg.normalise_raters and cfg.source == "human")
    table.insert(0, "window_id", [window_of[c] for c in table.index])
    ties = tied_windows(table, window_of)
    counts = {**check.as_dict(), "candidates": len(window_of), "rated_candidates": len(table),
              "tied_windows": ties, "source": cfg.source}
    warnings = {k: v for k, v in check.as_dict().items() if k != "rows" and v}
    print(f"annotate ({cfg.source}): {check.n_rows} ratings of {len(table)} candidates"
          + (f"; warnings {warnings}" if warnings else "") + (f"; tied windows {ties}" if any(ties.values()) else ""))
    return Annotation(cfg.source, rows, table, errors, window_of, check, counts, extra)


def render_annotate_report(counts: dict, table: pd.DataFrame, errors: pd.DataFrame | None) -> str:
    lines = [f"# Ratings ({counts['source']})", "",
             f"{counts['rows']} rating rows; {counts['rated_candidates']} of {counts['candidates']} candidates rated.", "",
             "| check | count |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in counts.items() if k not in ("source", "rows", "tied_windows")]
    lines += [f"| windows tied on {d} | {n} |" for d, n in counts["tied_windows"].items()]
    lines += ["", "Mean score per generator:", "", "| generator | " + " | ".join(DIMENSIONS) + " |", "|---" * 4 + "|"]
    generator = table.index.str.split(".").str[1]
    for name, group in table.groupby(generator):
        lines.append(f"| {name} | " + " | ".join(f"{group[d].mean():.2f}" for d in DIMENSIONS) + " |")
    if errors is not None:
        lines += ["", "Simulated rater: scores are percentiles of ground-truth errors (lip-opening error, motion error, "
                  "pixel RMSE; components/preference/simulated_rater.py) plus per-rater bias and per-rating noise."]
    return "\n".join(lines) + "\n"


def write_annotation(params: Params, annotation: Annotation) -> Path:
    """annotate.out_dir (atomically) and the report; returns the report's path."""
    cfg, a = params.annotate, annotation
    with atomic_directory(cfg.out_dir) as out:
        a.rows.assign(source=a.source).to_json(out / "ratings.jsonl", orient="records", lines=True)
        a.table.to_csv(out / "scores.csv", index_label="candidate_id", float_format="%.4f")
        if a.errors is not None:
            a.errors.to_csv(out / "errors.csv", float_format="%.5f")
        sheet = rating_sheet([{"candidate_id": c, "window_id": w, "video": f"{params.candidates.out_dir}:{c}"}
                              for c, w in a.window_of.items()], set(a.table.index))
        sheet.to_csv(out / "rating_sheet.csv", index=False)
        (out / "counts.json").write_text(json.dumps(a.counts, indent=2))
    report = Path(cfg.report_path)
    with atomic_file(report) as tmp:
        tmp.write_text(render_annotate_report(a.counts, a.table, a.errors))
    return report
