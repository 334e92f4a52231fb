"""Start the app: loopback by default, --share only when asked; only the pool, the compare set and animate's
outputs are served."""

from __future__ import annotations

import tempfile
from pathlib import Path

from components.app.pool import load_pool, pool_from_candidates
from components.app.ui import AppConfig, build_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def open_pool(candidates: str | Path | None, pool_dir: str | Path | None):
    """A rating pool from a pool directory, or built from the candidates stage's directory."""
    if candidates is None:
        return None
    candidates = Path(candidates)
    if (candidates / "index.json").is_file() and (candidates / "videos").is_dir():
        return load_pool(candidates)
    return pool_from_candidates(candidates, pool_dir or candidates.with_name(candidates.name + "-pool"))


def launch(cfg: AppConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
           block: bool = True):
    """Serve the app; returns (blocks, local_url) when block=False (tests)."""
    app = build_app(cfg)
    allowed = [str(cfg.out_dir.resolve())] + ([str(cfg.pool.root)] if cfg.pool is not None else []) + \
              ([str(cfg.compare.root)] if cfg.compare is not None else [])
    app.queue(default_concurrency_limit=4)
    _, url, _ = app.launch(server_name=host, server_port=port, share=share, allowed_paths=allowed,
                           max_file_size=cfg.max_upload_bytes, prevent_thread_lock=not block, quiet=not block,
                           footer_links=[], ssr_mode=False, mcp_server=False, inbrowser=False)
    return app, url


def default_out_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="talkalign-app-"))
