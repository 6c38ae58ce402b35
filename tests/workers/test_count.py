"""How many SFU workers `classcast serve` runs: one per core it may use unless CLASSCAST_SFU_WORKERS says otherwise
(0: the media in the control process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.config import Config
from control.workers import cgroup_cpu_quota, cores, worker_count


def test_the_default_is_one_worker_per_core_and_zero_keeps_the_media_in_process() -> None:
    assert cores() >= 1
    assert Config.from_env({}).sfu_workers == cores()
    assert Config.from_env({"CLASSCAST_SFU_WORKERS": "auto"}).sfu_workers == cores()
    assert Config.from_env({"CLASSCAST_SFU_WORKERS": ""}).sfu_workers == cores()
    assert Config.from_env({"CLASSCAST_SFU_WORKERS": "0"}).sfu_workers == 0
    assert Config.from_env({"CLASSCAST_SFU_WORKERS": "3"}).sfu_workers == 3
    assert Config(data_dir=Path("d")).sfu_workers == cores()  # the dataclass has the same default
    assert worker_count(" AUTO ") == cores() and worker_count(None) == cores() and worker_count(5) == 5


@pytest.mark.parametrize("value", ["-1", "257", "many", "1.5"])
def test_a_bad_worker_count_is_refused_with_the_variable_named(value: str) -> None:
    with pytest.raises(SystemExit, match="CLASSCAST_SFU_WORKERS"):  # one line at start, like every setting
        Config.from_env({"CLASSCAST_SFU_WORKERS": value})


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_cgroup_v2_cpu_limit_caps_the_count(tmp_path: Path) -> None:
    """`docker run --cpus 1.5` writes `150000 100000` to the container's cpu.max: 2 workers, not one per host core."""
    _write(tmp_path / "self", "0::/docker/abc\n")
    _write(tmp_path / "fs" / "cpu.max", "max 100000\n")
    _write(tmp_path / "fs" / "docker" / "cpu.max", "max 100000\n")
    _write(tmp_path / "fs" / "docker" / "abc" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_quota(str(tmp_path / "self"), str(tmp_path / "fs")) == 1.5
    _write(tmp_path / "fs" / "docker" / "cpu.max", "50000 100000\n")  # a parent's tighter limit holds
    assert cgroup_cpu_quota(str(tmp_path / "self"), str(tmp_path / "fs")) == 0.5
    _write(tmp_path / "fs" / "docker" / "cpu.max", "max 100000\n")
    _write(tmp_path / "fs" / "docker" / "abc" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(str(tmp_path / "self"), str(tmp_path / "fs")) is None  # unlimited


def test_a_cgroup_v1_cfs_quota_caps_the_count(tmp_path: Path) -> None:
    _write(tmp_path / "self", "4:memory:/k8s/pod\n3:cpu,cpuacct:/k8s/pod\n")
    _write(tmp_path / "fs" / "cpu,cpuacct" / "k8s" / "pod" / "cpu.cfs_quota_us", "300000\n")
    _write(tmp_path / "fs" / "cpu,cpuacct" / "k8s" / "pod" / "cpu.cfs_period_us", "100000\n")
    _write(tmp_path / "fs" / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")  # the root: unlimited
    _write(tmp_path / "fs" / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(str(tmp_path / "self"), str(tmp_path / "fs")) == 3.0
    assert cgroup_cpu_quota(str(tmp_path / "missing"), str(tmp_path / "fs")) is None
