"""The token secret several nodes share (issue 18 requirement 3): CLASSCAST_SECRET or CLASSCAST_SECRET_FILE,
else the data folder's own, as one node has always had."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.auth import load_or_create_secret, token_secret
from control.config import Config


def test_the_operators_secret_wins_and_the_data_folder_keeps_its_own_otherwise(tmp_path: Path) -> None:
    own = token_secret(Config(data_dir=tmp_path / "a"))
    assert own == load_or_create_secret(tmp_path / "a") and len(own) == 32
    assert token_secret(Config(data_dir=tmp_path / "b")) != own  # one node's default: per data folder

    text = "correct horse battery staple, district 9"
    for data in ("a", "b"):  # two nodes, two data folders, one secret
        assert token_secret(Config(data_dir=tmp_path / data, secret=text)) == text.encode()
    shared = tmp_path / "secret"
    shared.write_text(own.hex() + "\n")  # node a's jwt-secret copied to the others: its tokens stay valid
    assert token_secret(Config(data_dir=tmp_path / "b", secret_file=str(shared))) == own
    assert token_secret(Config(data_dir=tmp_path / "b", secret=text, secret_file=str(shared))) == text.encode()

    with pytest.raises(SystemExit, match="at least 32 characters"):
        token_secret(Config(data_dir=tmp_path, secret="short"))
    with pytest.raises(SystemExit, match=r"CLASSCAST_SECRET_FILE .*missing"):
        token_secret(Config(data_dir=tmp_path, secret_file=str(tmp_path / "missing")))


def test_the_keys_are_read_from_the_environment(tmp_path: Path) -> None:
    config = Config.from_env({"CLASSCAST_SECRET": "x" * 40, "CLASSCAST_SECRET_FILE": "/run/secrets/cc",
                              "CLASSCAST_NODE_URL": "https://n2.school.example/", "CLASSCAST_NODE_LEASE": "4",
                              "CLASSCAST_RECORDINGS_DIR": "/srv/recordings"})
    assert (config.secret, config.secret_file) == ("x" * 40, "/run/secrets/cc")
    assert config.node_base_url == "https://n2.school.example" and config.node_lease_s == 4.0
    assert str(config.recordings_root) == "/srv/recordings"
    default = Config(data_dir=tmp_path, public_url="https://class.example")
    assert default.node_base_url == "https://class.example"
    assert default.recordings_root == tmp_path / "recordings"
