"""The fan-out benchmark, run small: every figure is there, and nothing is lost at this size.

Timing targets (CPU per packet, the knee) live in bench/RESULTS.md, not here: this machine's load moves them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fanout import STREAMS, figures, knee

FIGURES = ("server_cpu_percent", "cpu_us_per_packet", "packets_out_per_s", "mbit_out_per_s", "loss_percent",
           "delivered_percent", "latency_p50_ms", "latency_p99_ms", "first_video_ms_p50", "first_keyframe_ms_p50",
           "server_rss_mb", "rss_per_subscriber_kb", "keyframe_requests_per_min", "client_cpu_per_subscriber_percent",
           "client_to_server_cpu", "loadavg")


def test_quick_fanout_has_every_figure_and_no_loss(tmp_path: Path) -> None:
    out, chart = tmp_path / "fanout.json", tmp_path / "fanout.png"
    run = subprocess.run([sys.executable, "-m", "bench.fanout", "fanout", "--subscribers", "3", "--duration", "3",
                          "--settle", "3", "--workers", "2", "--json", str(out), "--plot", str(chart)],
                         capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["cores"] >= 1 and result["command"].startswith("classcast-bench fanout")
    [step] = result["steps"]
    for name in FIGURES:
        assert step[name] is not None, name
    assert step["subscribers"] == 3
    assert step["loss_percent"] == 0
    assert step["delivered_percent"] > 95
    assert step["joins_without_keyframe"] == 0
    assert step["srtp_errors"] == 0
    assert step["packets_out_per_s"] > 3 * 200  # three subscribers, each at least the 720p layer's rate plus audio
    assert 0 < step["latency_p50_ms"] <= step["latency_p99_ms"]
    assert result["knee"] == 3 and result["subscribers_per_core"] > 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| N |" in run.stdout


def _snap(subs: list[list[int]], cpu: float) -> dict:
    return {"cpu": cpu, "subs": [{"packets": p, "octets": sum(p) * 1000, "expected": sum(p), "received": sum(p)}
                                 for p in subs], "latencies": [0.002, 0.004]}


def test_figures_count_layer_switches_as_delivered_and_gaps_as_loss() -> None:
    zero = [0] * len(STREAMS)
    published = {"q": 30, "h": 90, "f": 200, "audio": 50}
    # One subscriber moved from h to f half-way: both halves count, delivery is complete.
    moved = [0, 45, 100, 50, 0]
    before, after = [_snap([zero], 0.0)], [_snap([moved], 0.1)]
    row = figures(1, 1.0, 0.5, before, after, {}, published, 0, [(0.2, 0.2)], 2**20 * 10, 2**20 * 9, 0.0,
                  [1.0, 1.0, 1.0])
    assert row["delivered_percent"] == 100.0 and row["loss_percent"] == 0
    assert row["cpu_us_per_packet"] == round(1e6 * 0.5 / 195, 1)
    assert row["rss_per_subscriber_kb"] == 1024
    after[0]["subs"][0]["expected"] = 200  # five sequence numbers never arrived
    assert figures(1, 1.0, 0.5, before, after, {}, published, 0, [(0.2, 0.2)], 0, 0, 0.0, [0, 0, 0])[
        "loss_percent"] == 2.5


def test_audio_only_delivery_counts_audio_alone() -> None:
    before, after = [_snap([[0] * len(STREAMS)], 0.0)], [_snap([[0, 0, 0, 50, 0]], 0.1)]
    row = figures(1, 1.0, 0.5, before, after, {}, {"audio": 50}, 0, [(None, None)], 0, 0, 0.0, [0, 0, 0])
    assert row["delivered_percent"] == 100.0 and row["first_video_ms_p50"] is None


def test_knee_is_the_largest_clean_step() -> None:
    rows = [{"subscribers": 10, "loss_percent": 0, "delivered_percent": 100, "server_cpu_percent": 20},
            {"subscribers": 20, "loss_percent": 0.5, "delivered_percent": 99, "server_cpu_percent": 50},
            {"subscribers": 30, "loss_percent": 3, "delivered_percent": 90, "server_cpu_percent": 100}]
    assert knee(rows) == {"knee": 20, "subscribers_per_core": 40.0, "knee_is_last_step": False, "first_failure": 30}
    assert knee(rows[2:])["knee"] is None


@pytest.mark.parametrize("target", ["janus", "pion"])
def test_other_sfus_are_refused_clearly_until_their_adapters_exist(target: str) -> None:
    """Requirement 5 of issue 8 is not built yet (bench/RESULTS.md says so): the command must say so, not fail
    obscurely or pretend to measure."""
    run = subprocess.run([sys.executable, "-m", "bench.fanout", "fanout", "--target", target], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode != 0 and "not implemented yet" in run.stderr
