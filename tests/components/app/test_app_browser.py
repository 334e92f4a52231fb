"""The app in a real headless browser (Debian's chromium + chromedriver, driven by Selenium).

Two raters rate at once in two browser sessions, one closes its browser and resumes; the sqlite rows are
checked and the export goes through the annotate ratings suite; bad input gets a message and writes nothing;
a tiny model animates from the page; a rater compares two registry versions blind and the admin logs the win rate
into the newer version's MLflow run; a toy-size model's click-to-video time is printed. Screenshots of each tab
go to reports/app/.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    pytest.skip("no system chromium/chromedriver (make system-deps installs them with apt; needs root)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from components.app.compare import CompareStore, load_compare_set  # noqa: E402
from components.app.pool import load_pool  # noqa: E402
from components.app.server import launch  # noqa: E402
from components.app.ui import AppConfig  # noqa: E402
from components.config import DIMENSIONS  # noqa: E402
from components.model.bundle import save_bundle  # noqa: E402
from components.preference.ratings import check_ratings, read_ratings  # noqa: E402
from tests.components.app.conftest import write_compare_set  # noqa: E402

REPORTS = Path(__file__).resolve().parents[3] / "reports" / "app"
WAIT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_with_versions(root: Path, n: int) -> tuple[str, dict[str, str]]:
    """A sqlite MLflow registry with talkalign versions 1..n, each created in a (finished) run of its own."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("talkalign")
    experiment = client.create_experiment("register", artifact_location=str(root / "mlruns"))
    runs = {}
    for version in range(1, n + 1):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "promoted", 1.0)
        client.set_terminated(run.info.run_id)
        (root / f"src{version}").mkdir()
        client.create_model_version("talkalign", str(root / f"src{version}"), run_id=run.info.run_id)
        runs[str(version)] = run.info.run_id
    return uri, runs


def toy_bundle(root: Path) -> Path:
    """The toy profile's model (PortraitModelConfig(), the toy VAE, params.yaml's sampling) with random weights."""
    from components.config import Params
    from components.model.bundle import BundleMeta, ModelBundle
    from components.model.portrait import PortraitModel
    from components.model.text_encoder import TextEncoder
    from components.model.vae import build_vae

    params = Params()  # == params.yaml (a test checks it)
    bundle = ModelBundle(BundleMeta.from_params(params, variant="toy-random"), PortraitModel.from_config(params.model),
                         build_vae(params.vae), TextEncoder(params.model.text))
    return save_bundle(root / "toy-bundle", bundle)


@pytest.fixture(scope="module")
def server(pool_dir, tmp_path_factory, make_tiny_bundle):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    root = tmp_path_factory.mktemp("app")
    bundle = save_bundle(root / "bundle", make_tiny_bundle("mel"))
    tracking_uri, runs = registry_with_versions(root, 3)
    compare = load_compare_set(write_compare_set(root / "compare", root, n_items=3))  # talkalign/3 vs talkalign/2
    cfg = AppConfig(pool=load_pool(pool_dir), db_path=root / "ratings.sqlite", out_dir=root / "out",
                    default_model=str(bundle), max_upload_bytes=2 * 1024 * 1024, tracking_uri=tracking_uri,
                    compare=compare)
    app, url = launch(cfg, port=free_port(), block=False)
    yield cfg, url, runs
    app.close()


def browser(tmp_path: Path, name: str):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1400,1100", f"--user-data-dir={tmp_path / ('profile-' + name + '-' + str(time.time_ns()))}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(WAIT)
    return driver


def open_tab(driver, url: str, tab: str) -> None:
    if not driver.current_url.startswith(url):
        driver.get(url)
    button = WebDriverWait(driver, WAIT).until(
        lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == tab), None))
    button.click()


def text_of(driver, elem_id: str) -> str:
    return driver.find_element(By.ID, elem_id).text


def wait_text(driver, elem_id: str, needle: str, timeout: float = WAIT) -> str:
    WebDriverWait(driver, timeout).until(lambda d: needle in text_of(d, elem_id))
    return text_of(driver, elem_id)


def uploaded(driver, elem_id: str, name: str) -> None:
    """Wait until the file component lists the upload (Gradio splits the shown name into stem and suffix)."""
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{elem_id} td.filename[aria-label='{name}']"))


def type_into(driver, elem_id: str, text: str) -> None:
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.clear()
    box.send_keys(text)


def start_rater(driver, url: str, rater: str) -> None:
    open_tab(driver, url, "Rate")
    type_into(driver, "rate-rater", rater)
    driver.find_element(By.ID, "rate-start").click()
    wait_text(driver, "rate-progress", rater)


def fill_window(driver, n_candidates: int, score: int) -> None:
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rate-video-0 video"))
    for k in range(n_candidates):
        for d in DIMENSIONS:
            driver.find_element(By.CSS_SELECTOR, f"#rate-{k}-{d} input[value='{score}']").click()


def test_two_raters_resume_bad_input_and_animate(server, pool, tmp_path):
    cfg, url, _ = server
    REPORTS.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    a, b = browser(tmp_path, "a"), browser(tmp_path, "b")
    try:
        start_rater(a, url, "alice")
        start_rater(b, url, "bob")
        assert "0 of 3 windows rated" in text_of(a, "rate-progress")
        for n in (1, 2):  # both raters submit window n at the same moment
            fill_window(a, 2, 1 + n)
            fill_window(b, 2, 5 - n)
            if n == 1:
                a.save_screenshot(str(REPORTS / "rate.png"))
            a.find_element(By.ID, "rate-submit").click()
            b.find_element(By.ID, "rate-submit").click()
            wait_text(a, "rate-progress", f"{n} of 3 windows rated")
            wait_text(b, "rate-progress", f"{n} of 3 windows rated")
        a.quit()  # alice closes her browser mid-session ...
        a = browser(tmp_path, "a2")
        start_rater(a, url, "alice")  # ... and comes back: her progress is kept
        assert "2 of 3 windows rated" in text_of(a, "rate-progress") and "Window 3 of 3" in text_of(a, "rate-progress")
        a.find_element(By.ID, "rate-back").click()  # back shows window 2 with her scores filled in
        wait_text(a, "rate-progress", "Window 2 of 3")
        assert a.find_element(By.CSS_SELECTOR, "#rate-0-lip_sync input[value='3']").is_selected()
        a.find_element(By.ID, "rate-submit").click()
        wait_text(a, "rate-progress", "Window 3 of 3")
        for driver, score in ((a, 4), (b, 2)):
            fill_window(driver, 2, score)
            driver.find_element(By.ID, "rate-submit").click()
        wait_text(a, "rate-progress", "3 of 3 windows rated")
        wait_text(b, "rate-progress", "3 of 3 windows rated")
        timings["rate"] = time.perf_counter() - t0

        # the rows: 2 raters x 3 windows x 2 candidates x 3 dimensions, none lost, none doubled
        with sqlite3.connect(cfg.db_path) as db:
            rows = db.execute("SELECT rater_id, COUNT(*) FROM ratings GROUP BY rater_id").fetchall()
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert dict(rows) == {"alice": 18, "bob": 18}
        from components.app.rating_store import RatingStore

        export = RatingStore(cfg.db_path, pool.window_ids, pool.windows).export(tmp_path / "human.jsonl")
        checked, check = check_ratings(read_ratings(export), pool.candidate_ids, str(export))
        assert len(checked) == 36 and check.single_rater == 0 and check.unrated == 0

        open_tab(b, url, "Admin")
        b.find_element(By.ID, "admin-refresh").click()
        wait_text(b, "admin-counts", "36 ratings from 2 raters")
        assert "alice" in text_of(b, "admin-agreement") and "bob" in text_of(b, "admin-agreement")
        # a path outside the candidates directory: refused, nothing shown
        type_into(b, "admin-path", "../../../../etc/passwd")
        b.find_element(By.ID, "admin-preview").click()
        wait_text(b, "admin-message", "outside the candidates directory")
        assert not b.find_elements(By.CSS_SELECTOR, "#admin-video video")
        b.save_screenshot(str(REPORTS / "admin.png"))

        # Animate: bad upload, bad model, then the tiny model
        open_tab(a, url, "Animate")
        not_image = tmp_path / "notes.png"
        not_image.write_text("this is text, not a PNG")
        speech = tmp_path / "speech.wav"
        t = np.arange(8000) / 16000
        sf.write(speech, (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32), 16000)
        a.find_element(By.CSS_SELECTOR, "#animate-image input[type=file]").send_keys(str(not_image))
        a.find_element(By.CSS_SELECTOR, "#animate-audio input[type=file]").send_keys(str(speech))
        uploaded(a, "animate-image", "notes.png")
        a.find_element(By.ID, "animate-go").click()
        wait_text(a, "animate-message", "not a readable image")

        portrait = tmp_path / "portrait.png"
        yy, xx = np.mgrid[:48, :40]
        Image.fromarray(np.stack([xx * 6, yy * 5, np.full_like(xx, 120)], -1).astype(np.uint8)).save(portrait)
        a.find_element(By.CSS_SELECTOR, "#animate-image button[aria-label*='lear'], #animate-image button[title*='lear']").click()
        a.find_element(By.CSS_SELECTOR, "#animate-image input[type=file]").send_keys(str(portrait))
        uploaded(a, "animate-image", "portrait.png")
        type_into(a, "animate-model", str(tmp_path / "no-such-bundle"))
        a.find_element(By.ID, "animate-go").click()
        wait_text(a, "animate-message", "no-such-bundle")
        assert list(cfg.out_dir.glob("*.mp4")) == []  # bad input wrote nothing

        type_into(a, "animate-model", cfg.default_model)
        type_into(a, "animate-steps", "2")
        clicked = time.perf_counter()
        a.find_element(By.ID, "animate-go").click()
        video = WebDriverWait(a, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#animate-video video"))[0]
        timings["click_to_video"] = time.perf_counter() - clicked
        assert video.get_attribute("src")
        assert "Done in" in text_of(a, "animate-message")
        outputs = list(cfg.out_dir.glob("*.mp4"))
        assert len(outputs) == 1
        from components.io.video import decode_video

        decoded = decode_video(outputs[0])
        assert decoded.frames.shape[0] == round(0.5 * 25) and decoded.audio is not None
        a.save_screenshot(str(REPORTS / "animate.png"))

        import httpx  # the server still answers after every bad input

        # an upload over the size limit is refused by the server itself, and nothing is kept
        big = tmp_path / "big.wav"
        big.write_bytes(b"RIFF" + bytes(3 * 1024 * 1024))
        with big.open("rb") as handle:
            refused = httpx.post(url.rstrip("/") + "/gradio_api/upload", files={"files": ("big.wav", handle)}, timeout=30)
        assert refused.status_code == 413, refused.text
        assert httpx.get(url, timeout=10).status_code == 200
        assert httpx.get(url.rstrip("/") + "/gradio_api/file=/etc/passwd", timeout=10).status_code == 403
    finally:
        a.quit()
        b.quit()
    timings["total"] = time.perf_counter() - t0
    print(f"\nbrowser timings: {({k: round(v, 1) for k, v in timings.items()})}")


def test_blind_compare_and_win_rate_logged_into_the_newer_run(server, tmp_path):
    from mlflow import MlflowClient

    cfg, url, runs = server
    store = CompareStore(cfg.db_path, cfg.compare, seed=cfg.seed)
    driver = browser(tmp_path, "compare")
    try:
        open_tab(driver, url, "Compare")
        type_into(driver, "compare-rater", "carol")
        driver.find_element(By.ID, "compare-start").click()
        wait_text(driver, "compare-progress", "0 of 3 items compared")
        WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#compare-video-b video"))
        shown = [driver.find_element(By.CSS_SELECTOR, f"#compare-video-{s} video").get_attribute("src") for s in "ab"]
        assert all(".mp4" in src and "talkalign" not in src for src in shown)  # blind: the URL names no model
        driver.save_screenshot(str(REPORTS / "compare.png"))
        # carol prefers talkalign/3 (the "first" model) on two items, whichever side it is on, and ties one
        for n in range(3):
            item = store.next_item("carol")
            side = "tie" if n == 2 else ("a" if store.shown_as_a("carol", item) == "first" else "b")
            driver.find_element(By.ID, f"compare-pick-{side}").click()
            wait_text(driver, "compare-progress", f"{n + 1} of 3 items compared")
        assert "All done" in text_of(driver, "compare-progress")
        assert "talkalign/" not in driver.find_element(By.TAG_NAME, "body").text  # nothing on the tab names a model
        open_tab(driver, url, "Admin")  # the result and the MLflow action are on the Admin tab
        driver.find_element(By.ID, "compare-refresh").click()
        wait_text(driver, "compare-result", "talkalign/3 vs talkalign/2: win rate 0.833")
        driver.find_element(By.ID, "compare-log").click()
        wait_text(driver, "compare-result", f"Logged into MLflow run {runs['3']}")
        driver.save_screenshot(str(REPORTS / "compare-logged.png"))
    finally:
        driver.quit()
    with sqlite3.connect(cfg.db_path) as db:
        rows = db.execute("SELECT winner, COUNT(*) FROM comparisons WHERE rater_id = 'carol' GROUP BY winner").fetchall()
    assert dict(rows) == {"first": 2, "tie": 1}
    client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    metrics = client.get_run(runs["3"]).data.metrics  # version 3 is the newer: its run, next to its gate metric
    assert metrics["human_win_rate_vs_v2"] == pytest.approx(2.5 / 3) and metrics["human_win_rate_n_vs_v2"] == 3
    assert "promoted" in metrics and not any(k.startswith("human_") for k in client.get_run(runs["2"]).data.metrics)
    print(f"\ncompare: {store.result().line()}")


def test_toy_model_click_to_video(server, tmp_path):
    """Click-to-video for the toy-size model (random weights) on 2 s of audio with params.yaml's sampling steps."""
    from components.config import Params

    cfg, url, _ = server
    toy = toy_bundle(tmp_path)
    steps = Params().sampling.steps
    portrait, speech = tmp_path / "face.png", tmp_path / "two-seconds.wav"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 64, 3), dtype=np.uint8)).save(portrait)
    t = np.arange(2 * 16000) / 16000
    sf.write(speech, (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32), 16000)
    driver = browser(tmp_path, "toy")
    try:
        open_tab(driver, url, "Animate")
        driver.find_element(By.CSS_SELECTOR, "#animate-image input[type=file]").send_keys(str(portrait))
        driver.find_element(By.CSS_SELECTOR, "#animate-audio input[type=file]").send_keys(str(speech))
        uploaded(driver, "animate-image", "face.png")
        type_into(driver, "animate-model", str(toy))
        type_into(driver, "animate-steps", str(steps))
        before = set(cfg.out_dir.glob("*.mp4"))
        clicked = time.perf_counter()
        driver.find_element(By.ID, "animate-go").click()
        WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#animate-video video"))
        seconds = time.perf_counter() - clicked
        wait_text(driver, "animate-message", "Done in")
        server_side = text_of(driver, "animate-message")
        driver.save_screenshot(str(REPORTS / "animate-toy.png"))
    finally:
        driver.quit()
    from components.io.video import decode_video

    (out,) = set(cfg.out_dir.glob("*.mp4")) - before
    assert decode_video(out).frames.shape[1:3] == (64, 64)
    print(f"\ntoy model ({steps} steps, 2 s of audio, random weights): click to video {seconds:.1f} s ({server_side})")
