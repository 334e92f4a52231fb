"""Preference data stages as Prefect flows: candidates -> annotate -> (critic) -> pairs.

candidates  K videos per conditioning window of the preference split, from the generator pool in params
annotate    Likert 1-5 per candidate and dimension: the simulated rater (default), human ratings from a file,
            or the critic; validated, aggregated over raters, reported with every count
pairs       preference pairs per composite reward and per dimension (TLPO's sets), with a strategy and a margin
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from prefect import flow

from components.config import DIMENSIONS, Params, load_params
from components.tracking import stage_run
from flows.logging import log_summary
from flows.train import write_json


def window_id(clip_id: str, start: int) -> str:
    return f"{clip_id}_{start:04d}"


@flow(name="candidates", log_prints=True)
def candidates_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.data.latents import load_latent_cache
    from components.data.windows import load_split, make_windows
    from components.model.bundle import load_bundle
    from components.preference.candidates import conditioning_windows, select_rows, write_candidates

    params = load_params(params_path, overrides)
    cfg = params.candidates
    models = sorted({g.model for g in cfg.pool if g.kind == "model"})
    with stage_run("candidates", params, inputs=[params.data.latents_dir, *models]):
        cache = load_latent_cache(Path(params.data.latents_dir) / f"{cfg.split}.safetensors")
        stride = params.data.window_stride if cfg.split == "train" else params.data.frames  # as the latents stage cut them
        clips = load_split(params.data.shards, cfg.split)
        windows = [w for c in clips for w in make_windows(c, params.data.frames, stride)]
        if len(windows) != len(cache):
            raise RuntimeError(f"{cfg.split}: {len(windows)} windows in the shards, {len(cache)} in the latent cache: "
                               "rerun the latents stage")
        rows = select_rows(len(cache), cfg.windows)
        chosen = [windows[i] for i in rows]
        fps, rate = clips[0].fps, clips[0].sample_rate
        cond = conditioning_windows(cache, chosen, rows, fps, rate, {c.clip_id: c.audio for c in clips})
        meta = {"window_ids": [window_id(w.clip_id, w.start) for w in chosen], "clip_ids": [w.clip_id for w in chosen],
                "starts": [w.start for w in chosen], "fps": fps, "sample_rate": rate}
        index = write_candidates(cfg, params.sampling, cond, meta, load_bundle)
        n = sum(len(v) for v in index["windows"].values())
        print(f"candidates: {n} videos = {len(rows)} windows x {len(index['generators'])} generators -> {cfg.out_dir}")
        mlflow.log_dict(index, "candidates_index.json")
        return log_summary({"candidates": n, "windows": len(rows), "generators": len(index["generators"])})


# ----------------------------------------------------------------------------- annotate


def simulated_rows(params: Params) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Ground-truth errors of every candidate, and the simulated raters' Likert rows."""
    from components.model.bundle import load_bundle
    from components.preference.candidates import load_candidates, load_windows
    from components.preference.simulated_rater import ground_truth_errors, simulate_ratings
    from flows.evaluate import fit_reader

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
    from components.preference.candidates import load_candidates, load_windows
    from components.preference.critic import critic_scores, load_critic
    from components.preference.simulated_rater import percentile_quality

    critic = load_critic(params.annotate.critic_dir)
    scores = critic_scores(critic, load_candidates(params.candidates.out_dir), load_windows(params.candidates.out_dir))
    quality = percentile_quality(-scores[list(DIMENSIONS)])  # higher score = better = smaller "error"
    return pd.DataFrame([{"candidate_id": cid, "rater_id": "critic", "dimension": d, "score": int(np.rint(1 + 4 * quality.loc[cid, d]))}
                         for cid in quality.index for d in DIMENSIONS])


@flow(name="annotate", log_prints=True)
def annotate_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.io.atomic import atomic_directory
    from components.preference.candidates import read_index
    from components.preference.ratings import aggregate, check_ratings, rating_sheet, read_ratings, tied_windows

    params = load_params(params_path, overrides)
    cfg = params.annotate
    inputs = [params.candidates.out_dir] + ([cfg.human_ratings] if cfg.source == "human" and cfg.human_ratings else [])
    with stage_run("annotate", params, inputs=inputs):
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
        with atomic_directory(cfg.out_dir) as out:
            rows.assign(source=cfg.source).to_json(out / "ratings.jsonl", orient="records", lines=True)
            table.to_csv(out / "scores.csv", index_label="candidate_id", float_format="%.4f")
            if errors is not None:
                errors.to_csv(out / "errors.csv", float_format="%.5f")
            sheet = rating_sheet([{"candidate_id": c, "window_id": w, "video": f"{params.candidates.out_dir}:{c}"}
                                  for c, w in window_of.items()], set(table.index))
            sheet.to_csv(out / "rating_sheet.csv", index=False)
            (out / "counts.json").write_text(json.dumps(counts, indent=2))
        write_annotate_report(cfg.report_path, counts, table, errors)
        warnings = {k: v for k, v in check.as_dict().items() if k != "rows" and v}
        print(f"annotate ({cfg.source}): {check.n_rows} ratings of {len(table)} candidates"
              + (f"; warnings {warnings}" if warnings else "") + (f"; tied windows {ties}" if any(ties.values()) else ""))
        mlflow.log_artifact(cfg.report_path)
        return log_summary({k: v for k, v in counts.items() if k != "source"} | extra)


def write_annotate_report(path: str, counts: dict, table: pd.DataFrame, errors: pd.DataFrame | None) -> None:
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- pairs


@flow(name="pairs", log_prints=True)
def pairs_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.evaluation.charts import save_histograms
    from components.io.atomic import atomic_directory
    from components.preference.pairs import composite_reward, curate_pairs

    params = load_params(params_path, overrides)
    cfg = params.pairs
    with stage_run("pairs", params, inputs=[cfg.ratings]):
        table = pd.read_csv(Path(cfg.ratings) / "scores.csv", index_col="candidate_id")
        window_of = table["window_id"].to_dict()
        rewards = {"composite": composite_reward(table, cfg.weights), **{d: table[d] for d in DIMENSIONS}}
        summary, margins = {}, {}
        with atomic_directory(cfg.out_dir) as out:
            for name, reward in rewards.items():
                pairs, stats = curate_pairs(reward, window_of, cfg.strategy, cfg.min_margin, cfg.seed)
                with open(out / f"{name}.jsonl", "w") as f:
                    for p in pairs:
                        f.write(json.dumps({"window_id": p.window_id, "winner": p.winner, "loser": p.loser,
                                            "reward_winner": round(p.reward_winner, 4), "reward_loser": round(p.reward_loser, 4)}) + "\n")
                summary[name] = stats
                margins[name] = [p.margin for p in pairs]
                if not pairs:
                    print(f"warning: no {name} pairs (every window tied within min_margin={cfg.min_margin})")
        figure = save_histograms(cfg.figure_path, margins,
                                 title=f"reward margin of the pairs ({cfg.strategy}, min margin {cfg.min_margin:g})")
        lines = [f"# Preference pairs: {cfg.strategy}, min margin {cfg.min_margin:g}, weights {cfg.weights}", "",
                 "| set | pairs | windows | without a pair | rejected by margin | mean margin |", "|---|---|---|---|---|---|"]
        for name, s in summary.items():
            mean = f"{np.mean(margins[name]):.2f}" if margins[name] else "-"
            lines.append(f"| {name} | {s['pairs']} | {s['windows']} | {s['windows_without_pair']} | {s['rejected_by_margin']} | {mean} |")
        lines += ["", f"![margins]({os.path.relpath(figure, Path(cfg.report_path).parent)})"]
        Path(cfg.report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.report_path).write_text("\n".join(lines) + "\n")
        write_json(cfg.summary_path, summary)
        print("pairs: " + ", ".join(f"{k}={v['pairs']}" for k, v in summary.items()))
        mlflow.log_artifact(cfg.report_path)
        mlflow.log_artifact(str(figure), artifact_path="figures")
        return log_summary(summary)
