"""Fixtures for flow tests: one Prefect test server for the session (prefect_test_harness)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_api_url() -> str:
    """A real Prefect API (the test harness's subprocess server); flows in this process and in
    subprocesses (DVC stage commands, given PREFECT_API_URL) report to it."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()
