"""`talkalign repro`: `dvc repro` with one local Prefect server (and its UI) for the whole run.

Without PREFECT_API_URL every stage command starts and stops Prefect's temporary server (~5 s of each stage on
this box) and there is nothing to watch while the DAG runs. Here `prefect server start` runs once on a loopback
port (4200 when free), every stage reports to it, the UI address is printed, and the server stops when DVC is
done; the runs stay in PREFECT_HOME's database for the next `prefect server start`. A configured PREFECT_API_URL
wins (then this is plain `dvc repro`), and a server that does not come up only costs the per-stage servers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

UI_PORT = 4200


def free_port(preferred: int = UI_PORT) -> int:
    """`preferred` when nothing listens there, else a port the OS picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free loopback port")


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_prefect_server(log_path: Path, port: int | None = None, timeout_s: float = 120.0) -> Iterator[str | None]:
    """Run `prefect server start` on 127.0.0.1 for the block; yields its API URL, or None when it did not start
    within timeout_s (its log then says why)."""
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    prefect = Path(sys.executable).parent / "prefect"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false")}
    env.pop("PREFECT_API_URL", None)
    fallback = f"the local Prefect server did not start (see {log_path}); each stage starts Prefect's temporary server instead"
    with open(log_path, "ab") as log:
        try:
            process = subprocess.Popen(
                [str(prefect if prefect.exists() else "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # Ctrl-C reaches DVC and the stage; this server is stopped below, after them
            )
        except OSError as exc:
            log.write(f"{exc}\n".encode())
            print(f"talkalign: {fallback}", file=sys.stderr)
            yield None
            return
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(api_url):
            if process.poll() is not None or time.monotonic() > deadline:
                print(f"talkalign: {fallback}", file=sys.stderr)
                _stop(process)
                api_url = None
                break
            time.sleep(0.5)
        yield api_url
    finally:
        _stop(process)


def repro(dvc_args: list[str], prefect_home: Path) -> int:
    """`dvc repro *dvc_args` with a local Prefect server unless PREFECT_API_URL is set; returns DVC's exit code."""
    from components.pipeline.dvc_process import dvc_executable

    cmd = [dvc_executable(), "repro", *dvc_args]
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(cmd)
    with local_prefect_server(prefect_home / "server.log") as api_url:
        env = dict(os.environ)
        if api_url:
            env["PREFECT_API_URL"] = api_url
            ui = api_url.removesuffix("/api")
            print(f"Prefect UI for this run: {ui} (flow runs stay in {prefect_home}; `prefect server start` shows them later)",
                  flush=True)
        code = subprocess.call(cmd, env=env)
    if code == 0 and Path("reports/report.md").is_file():
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow_ui = uri or ".venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"  # params' tracking.uri
        print("\nWhere to look: reports/report.md (the evaluation), reports/promotion.md (the registry's decision); "
              f"MLflow: {mlflow_ui}; the Prefect runs: PREFECT_HOME={prefect_home} .venv/bin/prefect server start")
    return code
