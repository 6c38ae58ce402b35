"""Module boundaries that keep the processes apart (issue 15 req 3): the control plane parses no RTP packet and
imports neither sink process; the recorder and the transcriber are processes it starts, not libraries it uses."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Packet-level code: parsing, depacketizing, per-packet state. The control plane may hold the in-process SFU
# (sfu.router, signaling-level) but never touches a packet itself.
RTP_MODULES = ("sfu.rtp", "sfu.rtcp", "sfu.frames", "sfu.keyframes", "sfu.producer", "sfu.consumer",
               "sfu.reception", "sfu.bwe", "sfu.simulcast", "sfu.engine", "recorder", "transcriber")
PROCESSES = ("recorder", "transcriber")


def imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (inside functions and TYPE_CHECKING blocks too), fully named:
    `from sfu import rtp` counts as `sfu.rtp`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def within(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def offenders(package: str, banned: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = sorted({name for name in imports(path) if within(name, banned)})
        if bad:
            out[str(path.relative_to(ROOT))] = bad
    return out


def test_the_walker_sees_every_form_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import sfu.rtp\nfrom sfu import rtcp\ndef f():\n    from recorder.job import Job\n"
                      "from .local import x\n")
    names = imports(sample)
    assert within("sfu.rtp", RTP_MODULES) and "sfu.rtcp" in names and "recorder.job" in names
    assert not any(n.startswith(".") or n == "local" for n in names)


def test_control_parses_no_rtp() -> None:
    assert offenders("control", RTP_MODULES) == {}
    for path in (ROOT / "control").rglob("*.py"):  # nor calls a packet parser by another way in
        text = path.read_text(encoding="utf-8")
        assert "parse_rtp" not in text and "parse_rtcp" not in text, path


def test_no_import_cycle_between_control_and_the_sink_processes() -> None:
    assert offenders("control", PROCESSES) == {}
    # the processes may use the control plane's helpers (log format, recording options, speech models) one way
    assert offenders("recorder", ("transcriber",)) == {} and offenders("transcriber", ("recorder",)) == {}


def test_the_sink_processes_are_what_is_left_in_their_packages() -> None:
    """recorder/ is the recorder process only: the server's half (feed link, supervisor, janitor, probe,
    subtitles) lives in control/sinks and control/recording."""
    left = {p.name for p in (ROOT / "recorder").glob("*.py")}
    assert left.isdisjoint({"feed.py", "supervisor.py", "janitor.py", "probe.py", "subtitles.py"}), left
    assert (ROOT / "recorder" / "__main__.py").is_file() and (ROOT / "transcriber" / "__main__.py").is_file()
