"""The TOML configuration file (issue 17, requirement 5): same keys as the environment, the environment wins,
errors name the key, `classcast config` masks secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control.cli import main
from control.config import Config, known_keys


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "classcast.toml"
    path.write_text(text)
    return path


def test_file_values_under_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, """
CLASSCAST_PORT = 9090
CLASSCAST_HOST = "0.0.0.0"
CLASSCAST_TICK_INTERVAL = 5.5
CLASSCAST_METRICS = false
CLASSCAST_DRAIN_TIMEOUT = 600
CLASSCAST_ICE_SERVERS = [{urls = "turn:turn.example.test:3478", username = "u", credential = "pw"}]
CLASSCAST_WEBHOOK_RETRY_BASE = 2
""")
    config = Config.load(path, {"CLASSCAST_PORT": "7070"})
    assert config.port == 7070  # the environment wins
    assert config.host == "0.0.0.0" and config.tick_interval_s == 5.5 and config.metrics is False
    assert config.drain_timeout_s == 600 and config.webhooks.retry_base_s == 2
    assert config.ice.servers[0]["credential"] == "pw"
    # CLASSCAST_CONFIG names the file when --config does not
    assert Config.load(None, {"CLASSCAST_CONFIG": str(path)}).port == 9090
    assert Config.load(None, {}).port == 8080


@pytest.mark.parametrize(("text", "message"), [
    ("CLASSCAST_PROT = 1\n", "unknown key CLASSCAST_PROT"),
    ("PORT = 1\n", "unknown key PORT; did you mean CLASSCAST_PORT?"),
    ('CLASSCAST_PORT = "eighty"\n', "CLASSCAST_PORT must be an integer, got 'eighty' (set in "),
    ("CLASSCAST_METRICS = 3\n", "CLASSCAST_METRICS must be on or off, got '3' (set in "),
    ("CLASSCAST_WEBHOOK_RETRY_BASE = -1\n", "CLASSCAST_WEBHOOK_RETRY_BASE must be a positive number"),
    ("[CLASSCAST_PORT]\nx = 1\n", "CLASSCAST_PORT must be a string, number or boolean"),
    ("CLASSCAST_PORT = \n", "is not valid TOML"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SystemExit) as exc:
        Config.load(path, {})
    assert message in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="No such file"):
        Config.load(tmp_path / "nope.toml", {})


def test_every_key_is_documented() -> None:
    ops = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert sorted(k for k in known_keys() if k not in ops) == []


def test_classcast_config_prints_the_effective_configuration_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'CLASSCAST_LLM_API_KEY = "sk-very-secret"\n'
                           'CLASSCAST_DATABASE_URL = "postgresql+asyncpg://classcast:hunter2@db.internal/classcast"\n'
                           "CLASSCAST_PORT = 9090\n")
    monkeypatch.setenv("CLASSCAST_DEMO_CREDITS", "42")
    assert main(["--config", str(path), "config"]) == 0
    out = capsys.readouterr().out
    assert "sk-very-secret" not in out and "hunter2" not in out
    effective = json.loads(out)
    assert effective["port"] == 9090 and effective["demo_credits"] == 42
    assert effective["tutor"]["llm_api_key"] == "****"
    assert effective["database_url"] == "postgresql+asyncpg://classcast:****@db.internal/classcast"
    assert main(["--config", str(tmp_path / "missing.toml"), "config"]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_config_option_after_the_command_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "CLASSCAST_PORT = 9191\n")
    assert main(["config", "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["port"] == 9191
