"""What an operator gets wrong: a setting out of range, a second server on one data dir, a stale pid file, a port
in use. Each stops with one clear line and harms nothing that runs (a probe of `classcast serve` found tracebacks,
silently wrong values, a second server that closed the first one's live sessions, and a drain that signalled
whatever process had the pid)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from control.cli import main
from control.config import Config, unknown_variables
from tests.control.serverproc import Server, free_port


@pytest.mark.parametrize(("name", "value", "says"), [
    ("CLASSCAST_PORT", "70000", "CLASSCAST_PORT must be between 0 and 65535, got '70000'"),
    ("CLASSCAST_TICK_INTERVAL", "0", "CLASSCAST_TICK_INTERVAL must be at least 0.01"),
    ("CLASSCAST_TOKEN_TTL", "-100", "CLASSCAST_TOKEN_TTL must be at least 1"),
    ("CLASSCAST_CREDIT_RATE", "nan", "CLASSCAST_CREDIT_RATE must be a finite number"),
    ("CLASSCAST_DRAIN_TIMEOUT", "inf", "CLASSCAST_DRAIN_TIMEOUT must be a finite number"),
    ("CLASSCAST_DEMO_CREDITS", "-5", "CLASSCAST_DEMO_CREDITS must be at least 0"),
    ("CLASSCAST_RATE_JOIN_ORG", "-5", "CLASSCAST_RATE_JOIN_ORG must be at least 0"),
    ("CLASSCAST_SFU_WORKERS", "abc", "CLASSCAST_SFU_WORKERS must be a number 0..256 or 'auto'"),
    ("CLASSCAST_ICE_SERVERS", "5", "ICE configuration: CLASSCAST_ICE_SERVERS: "),
    ("CLASSCAST_ICE_HOSTS", "1.2.3", "ICE configuration: CLASSCAST_ICE_HOSTS: '1.2.3' does not appear"),
    ("CLASSCAST_ICE_ALLOWED_NETWORKS", " ", "ICE configuration: CLASSCAST_ICE_ALLOWED_NETWORKS: no network given"),
    ("CLASSCAST_ICE_PORT_RANGE", "abc", "ICE configuration: CLASSCAST_ICE_PORT_RANGE must be MIN-MAX"),
    ("CLASSCAST_PORT", "\u0668\u0660\u0668\u0660", "CLASSCAST_PORT must be an integer"),
    ("CLASSCAST_ENGINE", "bogus", "CLASSCAST_ENGINE must be native or python, got 'bogus'"),
    ("CLASSCAST_PUBLIC_URL", "not a url at all", "CLASSCAST_PUBLIC_URL must be an http:// or https:// URL"),
    ("CLASSCAST_PUBLIC_URL", "class.school.example", "CLASSCAST_PUBLIC_URL must be an http:// or https:// URL"),
    ("CLASSCAST_PUBLIC_URL", "https://class.school.example/?", "CLASSCAST_PUBLIC_URL must be an http:// or https://"),
    ("CLASSCAST_NODE_URL", "https://node1:99999", "CLASSCAST_NODE_URL must be an http:// or https:// URL"),
    ("CLASSCAST_ANNOUNCED_ADDRESS", "10.0.0", "ICE configuration: CLASSCAST_ANNOUNCED_ADDRESS must be one IP"),
    ("CLASSCAST_ANNOUNCED_ADDRESS", "1.5", "ICE configuration: CLASSCAST_ANNOUNCED_ADDRESS must be one IP"),
    ("CLASSCAST_TOKEN_MAX_TTL", "30", "CLASSCAST_TOKEN_MAX_TTL must be between 60 and 86400"),
    ("CLASSCAST_AI_TOKENS_PER_CREDIT", "0", "CLASSCAST_AI_TOKENS_PER_CREDIT must be at least 1"),
])
def test_settings_out_of_range_stop_with_one_line(name: str, value: str, says: str) -> None:
    with pytest.raises(SystemExit) as stop:
        Config.from_env({name: value})
    assert str(stop.value.code).startswith(says), stop.value.code


def test_addresses_and_urls_that_are_fine_are_kept() -> None:
    assert Config.from_env({"CLASSCAST_PUBLIC_URL": "HTTPS://Class.School.example"}).base_url == \
        "https://Class.School.example"  # a scheme in capitals works, and URLs built from it by prefix see https://
    config = Config.from_env({"CLASSCAST_PUBLIC_URL": "https://class.school.example/classcast/",
                              "CLASSCAST_NODE_URL": "http://[2001:db8::1]:8080",
                              "CLASSCAST_ANNOUNCED_ADDRESS": "media.school.example"})
    assert config.base_url == "https://class.school.example/classcast"
    assert config.node_base_url == "http://[2001:db8::1]:8080"
    assert config.ice.announced == "media.school.example"
    assert Config.from_env({"CLASSCAST_ANNOUNCED_ADDRESS": "2001:db8::1"}).ice.announced == "2001:db8::1"


def test_the_token_lifetime_cap() -> None:
    """CLASSCAST_TOKEN_MAX_TTL was named in the code's docstrings but read nowhere: the cap was always a day."""
    config = Config.from_env({"CLASSCAST_TOKEN_MAX_TTL": "600"})
    assert (config.token_ttl_s, config.token_max_ttl_s) == (600, 600)  # the default lifetime follows a lower cap
    with pytest.raises(SystemExit, match=r"CLASSCAST_TOKEN_TTL \(3600\) must not pass CLASSCAST_TOKEN_MAX_TTL"):
        Config.from_env({"CLASSCAST_TOKEN_MAX_TTL": "600", "CLASSCAST_TOKEN_TTL": "3600"})
    # without a cap set, a default lifetime past a day still works, as it did before the cap existed
    assert Config.from_env({"CLASSCAST_TOKEN_TTL": "172800"}).token_ttl_s == 172800


def test_a_misspelt_variable_is_named() -> None:
    assert unknown_variables({"CLASSCAST_PROT": "9000", "CLASSCAST_PORT": "8080", "CLASSCAST_CONFIG": "x.toml",
                              "CLASSCAST_ORG_ID": "org", "CLASSCAST_SECERT": "s", "CLASSCAST_ZZZ": "1",
                              "HOME": "/root"}) == [
        "CLASSCAST_PROT is not a classcast setting and is ignored; did you mean CLASSCAST_PORT?",
        "CLASSCAST_SECERT is not a classcast setting and is ignored; did you mean CLASSCAST_SECRET?",
        "CLASSCAST_ZZZ is not a classcast setting and is ignored (docs/operations.md lists the settings)"]


def test_an_empty_setting_is_its_default() -> None:
    """`CLASSCAST_HOST=` (a variable of a unit file left blank) listened on every interface."""
    config = Config.from_env({"CLASSCAST_HOST": "", "CLASSCAST_DATA_DIR": " ", "CLASSCAST_CURRENCY": ""})
    assert (config.host, config.data_dir, config.currency) == ("127.0.0.1", Path("data"), "USD")


def test_the_engine_is_a_setting_like_the_others(tmp_path: Path) -> None:
    """It was read from the environment only: a TOML file setting it was refused as an unknown key."""
    path = tmp_path / "classcast.toml"
    path.write_text('CLASSCAST_ENGINE = "python"\n')
    assert Config.load(path, {}).engine == "python"
    assert Config.load(path, {"CLASSCAST_ENGINE": ""}).engine == "python"  # an empty variable does not undo it
    assert Config.from_env({}).engine == "native"


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "control.cli", "serve"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "CLASSCAST_SFU_WORKERS": "0", **env})


def test_start_up_mistakes_are_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for env, says in (
                ({"CLASSCAST_DATA_DIR": str(tmp_path / "d1"), "CLASSCAST_PORT": port}, "address already in use"),
                ({"CLASSCAST_DATA_DIR": str(a_file), "CLASSCAST_PORT": str(free_port())},
                 "cannot use CLASSCAST_DATA_DIR"),
                ({"CLASSCAST_DATA_DIR": str(tmp_path / "d2"), "CLASSCAST_DATABASE_URL": "abc"},
                 "error: CLASSCAST_DATABASE_URL does not parse")):
            done = _serve(env)
            assert done.returncode != 0 and says in done.stderr, done.stderr
            assert "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "d2").exists()  # refused before the data dir was made


def test_settings_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    """A short secret stopped `serve` only after it had made the data dir and run every migration into it; the
    refusal is now an `error:` line, as every command's, and a misspelt variable is named on the way."""
    data = tmp_path / "data"
    done = _serve({"CLASSCAST_DATA_DIR": str(data), "CLASSCAST_SECRET": "too short", "CLASSCAST_PROT": "9000",
                   "CLASSCAST_PORT": str(free_port())})
    assert done.returncode == 1, done.stderr
    assert "error: CLASSCAST_SECRET must be at least 32 characters" in done.stderr, done.stderr
    assert "CLASSCAST_PROT is not a classcast setting and is ignored; did you mean CLASSCAST_PORT?" in done.stderr
    assert not data.exists()
    assert "Traceback" not in done.stderr, done.stderr
    shown = subprocess.run([sys.executable, "-m", "control.cli", "config"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "CLASSCAST_PROT": "9000"})
    assert shown.returncode == 0 and "warning: CLASSCAST_PROT is not a classcast setting" in shown.stderr
    assert json.loads(shown.stdout)["port"] == 8080


async def test_a_second_server_on_the_same_data_dir_leaves_the_first_alone(tmp_path: Path) -> None:
    first = Server(tmp_path / "data", tmp_path / "first.log", {"CLASSCAST_RECONNECT_GRACE": "0"})
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{first.base}/v1/room/create", headers={"VF-ORG-ID": first.org}, json={
                    "roomId": "live1", "title": "Live", "participant": {"uid": "t1", "name": "Ada",
                                                                        "role": "TEACHER"}}) as resp:
                token = (await resp.json())["data"]["token"]
            async with http.ws_connect(f"{first.base.replace('http', 'ws')}/v1/rtc?token={token}") as ws:
                await ws.send_str('{"type": "join"}')
                while (await ws.receive_json(timeout=30))["type"] != "joined":
                    pass
                second = await asyncio.to_thread(_serve, {"CLASSCAST_DATA_DIR": str(first.data_dir),
                                                          "CLASSCAST_PORT": str(free_port())})
                assert second.returncode != 0 and "another classcast server uses the data dir" in second.stderr, \
                    second.stderr
                async with http.get(f"{first.base}/v1/room/live1/status", headers={"VF-ORG-ID": first.org}) as resp:
                    status = (await resp.json())["data"]
                assert status["participantCount"] == 1 and status["hasTeacher"] is True, status
    finally:
        first.stop()


def test_drain_signals_only_a_classcast_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLASSCAST_DATA_DIR", str(tmp_path))
    stranger = subprocess.Popen(["sleep", "60"])  # what a stale pid file's number may belong to now
    try:
        for pid in (str(stranger.pid), "0", "-1"):
            (tmp_path / "classcast.pid").write_text(f"{pid}\n")
            assert main(["drain"]) == 2
            assert "is not a running classcast server" in capsys.readouterr().err
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
