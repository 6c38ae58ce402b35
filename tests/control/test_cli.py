"""`classcast org ...` against a real data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control.cli import main


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLASSCAST_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_org_lifecycle(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "org", "create", "--name", "North High", "--credits", "500")
    org_id = out.strip()
    assert code == 0 and len(org_id) == 16 and org_id.isalnum()
    code, out, _ = run(capsys, "org", "create", "--name", "South High", "--json")
    south = json.loads(out)
    assert south["credits"] == 0 and south["name"] == "South High"

    assert run(capsys, "org", "credits", org_id, "--add", "250")[1].strip() == "750"
    assert run(capsys, "org", "credits", org_id)[1].strip() == "750"
    code, out, _ = run(capsys, "org", "domains", org_id, "--add", "North.example", "--add", "lms.north.example")
    assert out.split() == ["lms.north.example", "north.example"]
    code, out, _ = run(capsys, "org", "domains", org_id, "--remove", "lms.north.example")
    assert out.split() == ["north.example"]
    code, out, _ = run(capsys, "org", "branding", org_id, "--logo-url", "https://north.example/logo.png",
                       "--primary-color", "#112233")
    assert json.loads(out)["primaryColor"] == "#112233"

    code, out, _ = run(capsys, "org", "list", "--json")
    orgs = {o["id"]: o for o in json.loads(out)}
    assert orgs[org_id]["credits"] == 750 and orgs[org_id]["domains"] == ["north.example"]
    assert orgs[org_id]["branding"]["logoUrl"] == "https://north.example/logo.png"
    code, out, _ = run(capsys, "org", "list")
    assert org_id in out and "South High" in out


def test_a_data_dir_without_a_database_is_named_not_filled(capsys: pytest.CaptureFixture[str],
                                                           data_dir: Path) -> None:
    """A mistyped CLASSCAST_DATA_DIR made `org list` create an empty database there and list nothing."""
    for args in (("org", "list"), ("org", "credits", "X"), ("org", "domains", "X")):
        code, out, err = run(capsys, *args)
        assert code == 2 and "no database at" in err and not out, (args, err)
    assert not data_dir.exists()
    code, out, err = run(capsys, "org", "create", "--name", "First")  # the one command that may start one
    assert code == 0 and "creating a new database" in err and (data_dir / "classcast.db").exists()
    assert run(capsys, "org", "list")[0] == 0


def test_org_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "org", "create", "--name", "X")
    org_id = out.strip()
    code, _, err = run(capsys, "org", "credits", "missingorg", "--add", "5")
    assert code == 1 and "no organization" in err
    code, _, err = run(capsys, "org", "domains", org_id, "--add", "not a domain")
    assert code == 2 and "not a domain name" in err
    code, _, err = run(capsys, "org", "branding", org_id, "--primary-color", "red")
    assert code == 2
    code, _, err = run(capsys, "org", "create", "--name", "Y", "--credits", "-5")
    assert code == 2
    # Found by a probe: these were database tracebacks, or an organization `org list` printed over two lines.
    code, _, err = run(capsys, "org", "create", "--name", "Z", "--credits", "9" * 23)
    assert code == 2 and "--credits must be between" in err
    code, _, err = run(capsys, "org", "credits", org_id, "--add", "9" * 23)
    assert code == 2 and "--add would take the balance past" in err
    assert run(capsys, "org", "credits", org_id)[1].strip() == "0"  # nothing was added
    code, _, err = run(capsys, "org", "create", "--name", "a\nb")
    assert code == 2 and "printable" in err
    code, _, err = run(capsys, "rooms", "list", "--server", "abc", "--org", org_id)
    assert code != 0 and "is not an http(s) URL" in err and "Traceback" not in err
