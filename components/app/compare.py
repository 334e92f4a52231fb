"""Blind A/B between two models on the same inputs: the compare set (videos), the choices (sqlite), the human
win rate with its 95% Wilson interval, and logging it into the MLflow run of the newer model version.

    <set>/compare.json         {"format": "talkalign-compare-set/1", "models": {"first": ModelRef, "second": ModelRef},
                                "items": {item_id: {"first": "videos/<token>.mp4", "second": "videos/<token>.mp4"}}}
    <set>/videos/<token>.mp4   one model's video of one input (token: a hash, so file names do not name the model)

Both models animate every input with the same seed and steps (`build_compare_set`). A rater sees an item's two
videos as "A" (left) and "B" (right), which model is A drawn per (rater, item) from a seeded shuffle; the choice
(A, B or tie) is stored in model terms (first / second / tie), so the page never needs to know the models.

Win rate: of the subject model (the newer version; the second model when versions are unknown) over all choices
of the pair, a tie counting half a win: (wins + ties / 2) / n. The 95% interval is Wilson's score interval at
that proportion with n choices (with ties it is an approximation: a tie is treated as half a success).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from components.app.pool import PoolError, resolve_inside
from components.app.rating_store import clean_rater_id, rater_order
from components.io.atomic import atomic_directory

FORMAT = "talkalign-compare-set/1"
INDEX_FILE = "compare.json"
SLOTS = ("first", "second")
CHOICES = ("first", "second", "tie")
Z95 = 1.959963984540054
METRIC_PREFIX = "human_win_rate"

SCHEMA = """
CREATE TABLE IF NOT EXISTS comparisons (
    rater_id TEXT NOT NULL, pair_id TEXT NOT NULL, item_id TEXT NOT NULL,
    first_model TEXT NOT NULL, second_model TEXT NOT NULL,
    shown_as_a TEXT NOT NULL CHECK (shown_as_a IN ('first', 'second')),
    winner TEXT NOT NULL CHECK (winner IN ('first', 'second', 'tie')), updated_at REAL NOT NULL,
    PRIMARY KEY (rater_id, pair_id, item_id));
"""


class CompareError(ValueError):
    """A compare set, a model reference or a choice cannot be used; the message names what and why."""


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelRef:
    uri: str  # what was asked for: models:/talkalign@champion, models:/talkalign/3, a bundle directory
    label: str  # talkalign/3 (registry versions) or the bundle directory's name
    name: str | None = None  # registered model name, when the model is a registry version
    version: str | None = None


def resolve_model_ref(uri: str, tracking_uri: str | None = None) -> ModelRef:
    """Pin a model: an alias becomes the version it points at now (so the choices stay tied to that version)."""
    uri = (uri or "").strip()
    if not uri:
        raise CompareError("no model given (models:/talkalign@champion, models:/talkalign/3 or a bundle directory)")
    if not uri.startswith("models:/"):
        path = Path(uri).expanduser()
        if not path.is_dir():
            raise CompareError(f"{uri}: not a bundle directory or a models:/ URI")
        return ModelRef(uri, path.resolve().name)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    rest = uri[len("models:/"):]
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in rest and rest.rsplit("/", 1)[1].isdigit():
            name, version = rest.rsplit("/", 1)
            mv = client.get_model_version(name, version)
        else:
            raise CompareError(f"{uri}: use models:/NAME@ALIAS or models:/NAME/VERSION")
    except MlflowException as exc:
        raise CompareError(f"{uri}: not found in the registry at {tracking_uri or 'the default tracking URI'} "
                           f"({exc.message})") from exc
    return ModelRef(f"models:/{mv.name}/{mv.version}", f"{mv.name}/{mv.version}", mv.name, str(mv.version))


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class CompareInput:
    item_id: str
    image: np.ndarray  # uint8 [H, W, 3]
    audio: np.ndarray  # mono float32
    sample_rate: int


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a")


def inputs_from_dir(directory: str | Path, seconds: float | None = None) -> list[CompareInput]:
    """Portrait + speech pairs that share a stem (alice.png + alice.wav), e.g. uploaded files."""
    from components.inference.animate import load_audio_file, load_image_file

    directory = Path(directory)
    if not directory.is_dir():
        raise CompareError(f"{directory}: no such inputs directory")
    files = sorted(p for p in directory.iterdir() if p.is_file())
    images = {p.stem: p for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
    audios = {p.stem: p for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
    stems = sorted(set(images) & set(audios))
    if not stems:
        raise CompareError(f"{directory}: no portrait + audio pair sharing a name (alice.png + alice.wav)")
    out = []
    for stem in stems:
        audio, rate = load_audio_file(audios[stem])
        if seconds:
            audio = audio[: int(seconds * rate)]
        out.append(CompareInput(stem, load_image_file(images[stem]), audio, rate))
    return out


def inputs_from_test_split(shards_uri: str | Path, n: int, seconds: float | None = None,
                           split: str = "test") -> list[CompareInput]:
    """The first n clips of a held-out split: their first frame as the portrait, their speech (cut to seconds)."""
    from components.data.windows import iter_split

    out = []
    for clip in iter_split(shards_uri, split):
        if len(out) >= n:
            break
        audio = clip.audio if not seconds else clip.audio[: int(seconds * clip.sample_rate)]
        out.append(CompareInput(f"{split}-{clip.clip_id}", clip.frames[0], audio, clip.sample_rate))
    if not out:
        raise CompareError(f"{shards_uri}: the {split} split has no clips")
    return out


# ---------------------------------------------------------------- the compare set


@dataclass(frozen=True)
class CompareSet:
    root: Path
    models: dict[str, ModelRef]  # "first" / "second"
    items: dict[str, dict[str, str]]  # item_id -> {"first": rel path, "second": rel path}

    @property
    def pair_id(self) -> str:
        return f"{self.models['first'].label} vs {self.models['second'].label}"

    @property
    def item_ids(self) -> list[str]:
        return list(self.items)

    def video_path(self, item_id: str, slot: str) -> Path:
        if item_id not in self.items or slot not in SLOTS:
            raise CompareError(f"{item_id}/{slot}: not a video of the compare set {self.root}")
        return resolve_inside(self.root, self.items[item_id][slot])


def _token(label: str, item_id: str) -> str:
    return hashlib.sha256(f"{label}\0{item_id}".encode()).hexdigest()[:16]


def build_compare_set(
    root: str | Path, first: ModelRef, second: ModelRef, inputs: list[CompareInput], *,
    tracking_uri: str | None = None, steps: int | None = None, seed: int = 0, threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> CompareSet:
    """Animate every input with both models (same seed and steps) and publish the set atomically."""
    from components.inference.animate import animate, featurizer_for
    from components.io.video import write_video
    from components.model.bundle import mlflow_default_uris
    from components.model.loading import load_bundle

    if first.label == second.label:
        raise CompareError(f"both models are {first.label}: compare two different models")
    ids = [i.item_id for i in inputs]
    if not ids or len(set(ids)) != len(ids):
        raise CompareError(f"inputs need distinct item ids, got {ids}")
    total, done = 2 * len(inputs), 0
    with atomic_directory(root) as out:
        (out / "videos").mkdir()
        items: dict[str, dict[str, str]] = {i: {} for i in ids}
        for slot, ref in zip(SLOTS, (first, second)):
            with mlflow_default_uris(tracking_uri):
                bundle = load_bundle(ref.uri, tracking_uri=tracking_uri)  # one bundle in memory at a time
            for item in inputs:
                frames = animate(bundle, item.image, item.audio, item.sample_rate, steps=steps, seed=seed, threads=threads)
                muxed = featurizer_for(bundle).prepare_audio(item.audio, item.sample_rate, len(frames))
                rel = f"videos/{_token(ref.label, item.item_id)}.mp4"
                write_video(out / rel, frames, bundle.meta.fps, audio=muxed, sample_rate=bundle.meta.sample_rate)
                items[item.item_id][slot] = rel
                done += 1
                if progress is not None:
                    progress(done, total)
            del bundle
        index = {"format": FORMAT, "models": {"first": asdict(first), "second": asdict(second)}, "items": items,
                 "steps": steps, "seed": seed}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return load_compare_set(root)


def load_compare_set(root: str | Path) -> CompareSet:
    root = Path(root)
    file = root / INDEX_FILE
    if not file.is_file():
        raise CompareError(f"{file}: no compare set (build one with `talkalign app --compare DIR --compare-models A B`)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise CompareError(f"{file}: not a compare set (format {data.get('format')!r})")
        models = {slot: ModelRef(**data["models"][slot]) for slot in SLOTS}
        items = {str(i): {slot: str(v[slot]) for slot in SLOTS} for i, v in data["items"].items()}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CompareError(f"{file}: not a valid compare set ({type(exc).__name__}: {exc})") from exc
    found = CompareSet(root.resolve(), models, items)
    try:
        for item in found.item_ids:
            for slot in SLOTS:
                found.video_path(item, slot)  # every video exists inside the set: fail at start, not mid-session
    except PoolError as exc:
        raise CompareError(f"{file}: {exc}") from exc
    return found


# ---------------------------------------------------------------- choices


@dataclass(frozen=True)
class CompareSession:
    rater_id: str
    order: list[str]  # item ids in this rater's order
    judged: int

    @property
    def total(self) -> int:
        return len(self.order)


class CompareStore:
    """The `comparisons` table, in the same WAL database as the ratings; a connection per operation."""

    def __init__(self, path: str | Path, compare_set: CompareSet, seed: int = 0):
        self.path, self.set, self.seed = Path(path), compare_set, int(seed)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    def shown_as_a(self, rater_id: str, item_id: str) -> str:
        """Which model this rater sees as A (left) on this item: a seeded coin per (rater, item)."""
        return rater_order(list(SLOTS), f"{rater_id}/{item_id}", self.seed)[0]

    def _choices(self, rater_id: str) -> dict[str, str]:
        with self._connect() as db:
            rows = db.execute("SELECT item_id, winner FROM comparisons WHERE rater_id = ? AND pair_id = ?",
                              (rater_id, self.set.pair_id)).fetchall()
        return dict(rows)

    def session(self, rater_id: str) -> CompareSession:
        rater_id = clean_rater_id(rater_id)
        order = rater_order(self.set.item_ids, f"compare/{rater_id}", self.seed)
        judged = self._choices(rater_id)
        return CompareSession(rater_id, order, sum(i in judged for i in order))

    def next_item(self, rater_id: str) -> str | None:
        """The first item in the rater's order without a choice yet (None: all done)."""
        session, judged = self.session(rater_id), self._choices(clean_rater_id(rater_id))
        return next((i for i in session.order if i not in judged), None)

    def choose(self, rater_id: str, item_id: str, side: str) -> CompareSession:
        """side: "A", "B" (the video shown left / right to this rater) or "tie"; stored as the model it names."""
        rater_id = clean_rater_id(rater_id)
        if item_id not in self.set.items:
            raise CompareError(f"item {item_id!r} is not one of the compare set's items")
        a = self.shown_as_a(rater_id, item_id)
        b = SLOTS[1 - SLOTS.index(a)]
        winner = {"A": a, "B": b, "tie": "tie"}.get(side)
        if winner is None:
            raise CompareError(f"choice {side!r}: choose A, B or tie")
        first, second = self.set.models["first"].label, self.set.models["second"].label
        with self._connect() as db:
            db.execute("INSERT INTO comparisons VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rater_id, pair_id, item_id) "
                       "DO UPDATE SET winner = excluded.winner, shown_as_a = excluded.shown_as_a, "
                       "updated_at = excluded.updated_at",
                       (rater_id, self.set.pair_id, item_id, first, second, a, winner, time.time()))
        return self.session(rater_id)

    def counts(self) -> dict[str, int]:
        """first / second / tie choices of this set's pair, over all raters."""
        with self._connect() as db:
            rows = dict(db.execute("SELECT winner, COUNT(*) FROM comparisons WHERE pair_id = ? GROUP BY winner",
                                   (self.set.pair_id,)).fetchall())
        return {c: int(rows.get(c, 0)) for c in CHOICES}

    def result(self) -> "WinRate":
        return pair_win_rate(self.set.models["first"], self.set.models["second"], self.counts())


# ---------------------------------------------------------------- win rate


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion successes / n (successes may be fractional: ties count half)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class WinRate:
    subject: ModelRef  # whose win rate it is (the newer version)
    other: ModelRef
    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def rate(self) -> float:
        return (self.wins + 0.5 * self.ties) / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins + 0.5 * self.ties, self.n)

    def summary(self) -> dict:
        low, high = self.interval
        return {"subject": asdict(self.subject), "other": asdict(self.other), "wins": self.wins, "losses": self.losses,
                "ties": self.ties, "n": self.n, "win_rate": self.rate, "ci95_low": low, "ci95_high": high,
                "method": "ties count half a win; 95% Wilson score interval over the n choices"}

    def line(self) -> str:
        if not self.n:
            return f"{self.subject.label} vs {self.other.label}: no choices yet"
        low, high = self.interval
        return (f"{self.subject.label} vs {self.other.label}: win rate {self.rate:.3f} (95% CI {low:.3f}-{high:.3f}; "
                f"{self.wins} wins, {self.losses} losses, {self.ties} tie{'' if self.ties == 1 else 's'}; a tie counts half)")


def pair_win_rate(first: ModelRef, second: ModelRef, counts: dict[str, int]) -> WinRate:
    """The newer registry version's win rate over the older one (the second model's when versions are unknown)."""
    newer_is_first = (first.version is not None and second.version is not None and first.name == second.name
                      and int(first.version) > int(second.version))
    if newer_is_first:
        return WinRate(first, second, counts["first"], counts["second"], counts["tie"])
    return WinRate(second, first, counts["second"], counts["first"], counts["tie"])


def log_win_rate(result: WinRate, tracking_uri: str | None = None) -> str:
    """Log the win rate into the MLflow run of the subject's model version (the register stage's run, where the
    automated gates' decision is): metrics human_win_rate[_ci_low|_ci_high|_n]_vs_v{other} and a json artifact.
    Returns the run id."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    subject, other = result.subject, result.other
    if subject.version is None or other.version is None:
        raise CompareError(f"{subject.label} vs {other.label}: both models must be registry versions to log the win "
                           "rate into a version's run")
    if not result.n:
        raise CompareError(f"{subject.label} vs {other.label}: no choices yet; nothing to log")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        run_id = client.get_model_version(subject.name, subject.version).run_id
        if not run_id:
            raise CompareError(f"{subject.label}: the version has no MLflow run to log into")
        low, high = result.interval
        suffix = f"vs_v{other.version}"
        for key, value in ((METRIC_PREFIX, result.rate), (f"{METRIC_PREFIX}_ci_low", low),
                           (f"{METRIC_PREFIX}_ci_high", high), (f"{METRIC_PREFIX}_n", result.n)):
            client.log_metric(run_id, f"{key}_{suffix}", float(value))
        client.log_dict(run_id, result.summary(), f"human_compare/{suffix}.json")
    except MlflowException as exc:
        raise CompareError(f"{subject.label}: cannot log into its MLflow run ({exc.message})") from exc
    return run_id
