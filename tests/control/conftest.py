"""The AI tutor's fixture: the real app and database with the deterministic fake LLM backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control.clock import FakeClock
from tests.conftest import Api
from tests.control.tutor_fixtures import make_api, tutor_config


@pytest.fixture
async def tapi(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Api]:
    yield await make_api(aiohttp_client, tutor_config(tmp_path), clock)
