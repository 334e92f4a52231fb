"""The Gradio Blocks: Animate, Rate (blind, seeded per rater, sqlite-backed), Compare (blind A/B between two
models, win rate logged to MLflow) and Admin (counts, agreement).

Every handler returns a message for the page instead of raising: a bad upload, an unknown model or a path
outside the candidates directory is shown to the user, nothing is written, and the server keeps serving.
Element ids (elem_id) are the contract with the browser test.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from PIL import Image, UnidentifiedImageError

from components.app.compare import CompareError, CompareSet, CompareStore, log_win_rate
from components.app.pool import PoolError, RatingPool, resolve_inside
from components.app.rating_store import RatingStore, RatingStoreError, agreement
from components.config import DIMENSIONS

LIKERT = ["1", "2", "3", "4", "5"]
DIMENSION_LABELS = {"lip_sync": "Lip sync", "motion": "Motion naturalness", "quality": "Visual quality"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".webm"}


@dataclass
class AppConfig:
    pool: RatingPool | None  # None: no Rate tab content (animate only)
    db_path: Path
    out_dir: Path  # animate's videos
    default_model: str = ""
    tracking_uri: str | None = None
    seed: int = 0
    max_upload_bytes: int = 20 * 1024 * 1024
    threads: int = 1
    compare: CompareSet | None = None  # None: no Compare tab content
    _bundles: dict = field(default_factory=dict)  # model URI -> loaded bundle (the last one only)


# ---------------------------------------------------------------- animate


def size_text(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.0f} kB"


def check_upload(path: str | None, kind: str, suffixes: set[str], limit: int) -> Path:
    if not path:
        raise ValueError(f"no {kind} uploaded")
    file = Path(path)
    if file.suffix.lower() not in suffixes:
        raise ValueError(f"{file.name}: not an {kind} file (expected {', '.join(sorted(suffixes))})")
    size = file.stat().st_size
    if size > limit:
        raise ValueError(f"{file.name}: {size_text(size)} is over the {size_text(limit)} upload limit")
    if kind == "image":
        try:
            with Image.open(file) as image:
                image.verify()  # the bytes, not only the name, must be an image
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{file.name}: not a readable image ({exc})") from exc
    return file


def animate_handler(cfg: AppConfig):
    def run(image, audio, model, steps, guidance, seed, progress=gr.Progress()):
        from components.inference.animate import AnimateInputError, animate_files, load_audio_file
        from components.model.bundle import BundleError
        from components.model.loading import load_bundle

        started = time.perf_counter()
        try:
            image_path = check_upload(image, "image", IMAGE_SUFFIXES, cfg.max_upload_bytes)
            audio_path = check_upload(audio, "audio", AUDIO_SUFFIXES, cfg.max_upload_bytes)
            load_audio_file(audio_path)  # fail on undecodable audio before the model loads
            model = (model or cfg.default_model).strip()
            if not model:
                raise ValueError("no model given (a bundle directory or models:/name@alias)")
            if model not in cfg._bundles:
                cfg._bundles.clear()  # one bundle in memory at a time
                cfg._bundles[model] = load_bundle(model, tracking_uri=cfg.tracking_uri)
            bundle = cfg._bundles[model]
            out = cfg.out_dir / f"animate-{uuid.uuid4().hex[:12]}.mp4"
            progress((0, None), desc="windows")
            animate_files(image_path, audio_path, out, bundle, steps=int(steps) or None,
                          guidance=float(guidance) if guidance else None, seed=int(seed),
                          progress=lambda done, total: progress((done, total), desc="windows", unit="window"),
                          threads=cfg.threads)
        except (ValueError, AnimateInputError, BundleError, OSError) as exc:
            return None, f"**Could not animate:** {exc}"
        return str(out), f"Done in {time.perf_counter() - started:.1f} s: {out.name}"

    return run


def animate_tab(cfg: AppConfig) -> None:
    gr.Markdown("Upload a portrait and speech (or record it), pick a model, and animate.")
    with gr.Row():
        with gr.Column():
            image = gr.File(label="Portrait image", type="filepath", elem_id="animate-image")
            audio = gr.Audio(label="Speech", sources=["upload", "microphone"], type="filepath", elem_id="animate-audio")
            model = gr.Textbox(label="Model (bundle directory, models:/talkalign@champion, models:/talkalign/3)",
                               value=cfg.default_model, elem_id="animate-model")
            with gr.Row():
                steps = gr.Number(label="Steps (0: the model's)", value=0, precision=0, elem_id="animate-steps")
                guidance = gr.Number(label="Audio guidance (0: the model's)", value=0, elem_id="animate-guidance")
                seed = gr.Number(label="Seed", value=0, precision=0, elem_id="animate-seed")
            go = gr.Button("Animate", variant="primary", elem_id="animate-go")
        with gr.Column():
            video = gr.Video(label="Result", elem_id="animate-video", buttons=["download"])
            message = gr.Markdown(elem_id="animate-message")
    go.click(animate_handler(cfg), [image, audio, model, steps, guidance, seed], [video, message], concurrency_limit=1)


# ---------------------------------------------------------------- rate


def rate_tab(cfg: AppConfig, store: RatingStore) -> None:
    pool = cfg.pool
    slots = max(len(ids) for ids in pool.windows.values())
    rater = gr.State("")
    gr.Markdown("Enter your rater id. Each window shows its candidates (in an order of their own for you) with the "
                "window's audio; rate each on a 1-5 scale (5 best) per dimension.")
    with gr.Row():
        rater_box = gr.Textbox(label="Rater id", elem_id="rate-rater", scale=3)
        start = gr.Button("Start / resume", elem_id="rate-start", scale=1)
    progress_md = gr.Markdown(elem_id="rate-progress")
    message = gr.Markdown(elem_id="rate-message")
    videos, radios = [], []
    with gr.Row():
        for k in range(slots):
            with gr.Column(visible=True, min_width=200):
                videos.append(gr.Video(label=f"Candidate {chr(65 + k)}", interactive=False, elem_id=f"rate-video-{k}",
                                       buttons=[], height=260))
                radios.append([gr.Radio(LIKERT, label=DIMENSION_LABELS[d], elem_id=f"rate-{k}-{d}") for d in DIMENSIONS])
    with gr.Row():
        back = gr.Button("Back", elem_id="rate-back")
        skip = gr.Button("Skip", elem_id="rate-skip")
        submit = gr.Button("Submit ratings", variant="primary", elem_id="rate-submit")
    flat_radios = [r for group in radios for r in group]

    def view(rater_id: str, note: str = ""):
        """Outputs for the page: rater state, progress, message, videos, radio values."""
        session = store.session(rater_id)
        done = f"{session.rated} of {session.total} windows rated" + (f" ({session.skipped} skipped)" if session.skipped else "")
        wid = session.current
        if wid is None:
            return [rater_id, f"**{rater_id}**: {done}. All windows done, thank you.", note] + [None] * slots + \
                   [None] * len(flat_radios)
        order = store.candidate_order(rater_id, wid)
        given = store.window_scores(rater_id, wid)
        vids = [str(pool.video_path(c)) if k < len(order) else None for k, c in enumerate(order + [None] * (slots - len(order)))]
        values = [str(given[order[k]][d]) if k < len(order) and d in given.get(order[k], {}) else None
                  for k in range(slots) for d in DIMENSIONS]
        header = f"**{rater_id}**: {done}. Window {session.position + 1} of {session.total}."
        return [rater_id, header, note] + vids + values

    outputs = [rater, progress_md, message] + videos + flat_radios

    def failed(rater_id: str, exc: Exception):
        return [rater_id, gr.skip(), f"**Not saved:** {exc}"] + [gr.skip()] * (len(outputs) - 3)

    def on_start(rater_id):
        try:
            return view(rater_id)
        except RatingStoreError as exc:
            return failed("", exc)

    def on_submit(rater_id, *values):
        try:
            session = store.session(rater_id)
            if session.current is None:
                return view(rater_id, "Nothing left to rate.")
            order = store.candidate_order(rater_id, session.current)
            scores = {}
            for k, cid in enumerate(order):
                picked = {d: values[k * len(DIMENSIONS) + j] for j, d in enumerate(DIMENSIONS)}
                missing = [DIMENSION_LABELS[d] for d, v in picked.items() if v in (None, "")]
                if missing:
                    raise RatingStoreError(f"candidate {chr(65 + k)} has no score for {', '.join(missing)}")
                scores[cid] = {d: int(v) for d, v in picked.items()}
            store.rate_window(rater_id, session.current, scores)
            return view(rater_id, "Saved.")
        except RatingStoreError as exc:
            return failed(rater_id, exc)

    def on_skip(rater_id):
        try:
            session = store.session(rater_id)
            if session.current is not None:
                store.skip_window(rater_id, session.current)
            return view(rater_id, "Skipped.")
        except RatingStoreError as exc:
            return failed(rater_id, exc)

    def on_back(rater_id):
        try:
            session = store.session(rater_id)
            store.move(rater_id, session.position - 1)
            return view(rater_id)
        except RatingStoreError as exc:
            return failed(rater_id, exc)

    start.click(on_start, [rater_box], outputs)
    rater_box.submit(on_start, [rater_box], outputs)
    submit.click(on_submit, [rater] + flat_radios, outputs)
    skip.click(on_skip, [rater], outputs)
    back.click(on_back, [rater], outputs)


# ---------------------------------------------------------------- admin


def admin_tab(cfg: AppConfig, store: RatingStore | None, compare: CompareStore | None = None) -> None:
    counts_md = gr.Markdown(elem_id="admin-counts")
    table = gr.Dataframe(label="Agreement of each rater with the others", elem_id="admin-agreement", interactive=False,
                         headers=["rater_id", "ratings", "shared_cells", "spearman", "mean_abs_diff", "within_one"])
    refresh = gr.Button("Refresh", elem_id="admin-refresh")
    with gr.Row():
        path_box = gr.Textbox(label="Preview a candidate file (path inside the candidates directory)", elem_id="admin-path")
        preview = gr.Button("Preview", elem_id="admin-preview")
    preview_video = gr.Video(label="Preview", interactive=False, elem_id="admin-video")
    preview_msg = gr.Markdown(elem_id="admin-message")

    def on_refresh():
        if store is None:
            return "No candidates directory: nothing to rate.", None
        counts = store.counts()
        frame = agreement(store.ratings_frame()).round(3)
        return (f"{counts['ratings']} ratings from {counts['raters']} raters over {counts['windows']} windows "
                f"(database {store.path})", frame)

    def on_preview(relative):
        if cfg.pool is None:
            return None, "No candidates directory."
        try:
            return str(resolve_inside(cfg.pool.root, (relative or "").strip())), ""
        except PoolError as exc:
            return None, f"**Refused:** {exc}"

    refresh.click(on_refresh, [], [counts_md, table])
    preview.click(on_preview, [path_box], [preview_video, preview_msg])
    if compare is not None:
        compare_admin(cfg, compare)


# ---------------------------------------------------------------- compare


def compare_tab(cfg: AppConfig, store: CompareStore) -> None:
    rater = gr.State("")
    item = gr.State("")
    gr.Markdown("Enter your rater id. Each item shows two videos of the same portrait and speech by two models "
                "(which is A differs per item and rater); pick the better one, or tie.")
    with gr.Row():
        rater_box = gr.Textbox(label="Rater id", elem_id="compare-rater", scale=3)
        start = gr.Button("Start / resume", elem_id="compare-start", scale=1)
    progress_md = gr.Markdown(elem_id="compare-progress")
    message = gr.Markdown(elem_id="compare-message")
    with gr.Row():
        video_a = gr.Video(label="A", interactive=False, elem_id="compare-video-a", buttons=[], height=260)
        video_b = gr.Video(label="B", interactive=False, elem_id="compare-video-b", buttons=[], height=260)
    with gr.Row():
        pick_a = gr.Button("A is better", elem_id="compare-pick-a")
        pick_tie = gr.Button("Tie", elem_id="compare-pick-tie")
        pick_b = gr.Button("B is better", elem_id="compare-pick-b")
    outputs = [rater, item, progress_md, message, video_a, video_b]

    def view(rater_id: str, note: str = ""):
        session = store.session(rater_id)
        done = f"**{rater_id}**: {session.judged} of {session.total} items compared."
        current = store.next_item(rater_id)
        if current is None:
            return [rater_id, "", done + " All done, thank you.", note, None, None]
        a = store.shown_as_a(rater_id, current)
        b = "second" if a == "first" else "first"
        return [rater_id, current, done, note, str(store.set.video_path(current, a)), str(store.set.video_path(current, b))]

    def on_start(rater_id):
        try:
            return view(rater_id)
        except (RatingStoreError, CompareError) as exc:
            return ["", "", gr.skip(), f"**Not started:** {exc}", gr.skip(), gr.skip()]

    def pick(side: str):
        def run(rater_id, item_id):
            try:
                if not item_id:
                    return view(rater_id, "Nothing to compare.") if rater_id else on_start(rater_id)
                store.choose(rater_id, item_id, side)
                return view(rater_id, "Saved.")
            except (RatingStoreError, CompareError) as exc:
                return [rater_id, item_id, gr.skip(), f"**Not saved:** {exc}", gr.skip(), gr.skip()]
        return run

    start.click(on_start, [rater_box], outputs)
    rater_box.submit(on_start, [rater_box], outputs)
    pick_a.click(pick("A"), [rater, item], outputs)
    pick_b.click(pick("B"), [rater, item], outputs)
    pick_tie.click(pick("tie"), [rater, item], outputs)


def compare_admin(cfg: AppConfig, store: CompareStore) -> None:
    """On the Admin tab, not the Compare tab: the result names the models, which raters must not see."""
    gr.Markdown(f"### Compare: {store.set.pair_id}")
    result_md = gr.Markdown(elem_id="compare-result")
    with gr.Row():
        refresh = gr.Button("Refresh win rate", elem_id="compare-refresh")
        log = gr.Button("Log win rate to MLflow (newer version's run)", elem_id="compare-log")

    def on_refresh():
        return store.result().line()

    def on_log():
        try:
            result = store.result()
            run_id = log_win_rate(result, cfg.tracking_uri)
            return f"{result.line()}. Logged into MLflow run {run_id}."
        except CompareError as exc:
            return f"**Not logged:** {exc}"

    refresh.click(on_refresh, [], [result_md])
    log.click(on_log, [], [result_md])


def build_app(cfg: AppConfig) -> gr.Blocks:
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    store = None
    if cfg.pool is not None:
        store = RatingStore(cfg.db_path, cfg.pool.window_ids, cfg.pool.windows, seed=cfg.seed)
    compare = CompareStore(cfg.db_path, cfg.compare, seed=cfg.seed) if cfg.compare is not None else None
    with gr.Blocks(title="talkalign") as app:
        gr.Markdown("# talkalign")
        with gr.Tabs():
            with gr.Tab("Animate", id="animate"):
                animate_tab(cfg)
            with gr.Tab("Rate", id="rate"):
                if store is not None:
                    rate_tab(cfg, store)
                else:
                    gr.Markdown("Start the app with `--candidates DIR` to rate candidates.")
            with gr.Tab("Compare", id="compare"):
                if compare is not None:
                    compare_tab(cfg, compare)
                else:
                    gr.Markdown("Start the app with `--compare DIR` (and `--compare-models A B` to build it) "
                                "to compare two models.")
            with gr.Tab("Admin", id="admin"):
                admin_tab(cfg, store, compare)
    return app
