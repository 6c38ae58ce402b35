"""The server installed without the `ai` extra (issue 17, requirement 7): it starts, serves classes and is ready.

The AI packages are present in this environment, so the test hides them from the server process with an import
hook (every package of the `ai` extra and of requirements-nodeps.txt), which is what an install without them looks
like to the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import requests

from tests.control.serverproc import Server

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = '''
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
'''


def ai_modules() -> set[str]:
    """Import names of the `ai` extra and the --no-deps model packages, read from the project's own files."""
    text = (ROOT / "pyproject.toml").read_text()
    ai = re.search(r"^ai = \[(.*?)^\]", text, re.S | re.M)
    assert ai is not None
    names = re.findall(r'"([A-Za-z0-9_.-]+)==', ai.group(1))
    names += re.findall(r"^([A-Za-z0-9_.-]+)==", (ROOT / "requirements-nodeps.txt").read_text(), re.M)
    modules = {n.lower().replace("-", "_") for n in names}
    return modules | {"piper"}  # piper-tts installs the module `piper`


def test_server_without_the_ai_packages(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    hook = tmp_path / "hook"
    hook.mkdir()
    blocked = ai_modules()
    assert {"faster_whisper", "xllamacpp", "onnxruntime", "piper"} <= blocked
    (hook / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(blocked)))
    monkeypatch.setenv("PYTHONPATH", f"{hook}:{ROOT}")
    server = Server(tmp_path / "data", tmp_path / "server.log")
    try:
        headers = {"VF-ORG-ID": server.org}
        r = requests.post(f"{server.base}/v1/room/create", headers=headers, timeout=10, json={
            "roomId": "algebra", "title": "Algebra", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
        assert r.status_code == 200, r.text
        assert requests.get(f"{server.base}/readyz", timeout=10).status_code == 200
        r = requests.post(f"{server.base}/v1/ai-tutor/chat", headers=headers, timeout=60, json={
            "roomId": "algebra", "studentUid": "t", "organizationId": server.org, "text": "What is 2+2?"})
        assert r.status_code == 503, r.text  # the models are absent: unavailable, not an internal error
        assert r.json()["success"] is False and r.json()["code"] == "AI_UNAVAILABLE"
        assert "not installed" in r.json()["message"]
        wav = tone_wav()
        r = requests.post(f"{server.base}/v1/ai-tutor/chat", headers=headers, timeout=60, json={
            "roomId": "algebra", "studentUid": "t", "organizationId": server.org, "audio": wav})
        assert r.status_code == 503 and r.json()["code"] == "AI_UNAVAILABLE", r.text  # speech to text: same
        assert requests.get(f"{server.base}/healthz", timeout=10).status_code == 200
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "xllamacpp" in log and "not installed" in log
    assert "Traceback" not in log


def tone_wav() -> str:
    """One second of a 440 Hz tone as a base64 WAV: audio the server would transcribe if it could."""
    import base64
    import io
    import math
    import struct
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 16000)))
                               for i in range(16000)))
    return base64.b64encode(buf.getvalue()).decode()


def test_server_without_the_ai_packages_uses_a_remote_model(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The tutor with `CLASSCAST_LLM_URL` needs none of the AI packages: a real OpenAI-compatible server (llama.cpp's,
    run here in the test process, where the packages are installed) answers the server that has none."""
    import xllamacpp

    from control.tutor import models

    params = xllamacpp.CommonParams()
    params.model.path = str(models.llm_gguf())
    params.n_ctx = 1024
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    llm = xllamacpp.Server(params)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(ai_modules())))
    monkeypatch.setenv("PYTHONPATH", f"{hook}:{ROOT}")
    try:
        server = Server(tmp_path / "data", tmp_path / "server.log", {
            "CLASSCAST_LLM_URL": f"{llm.listening_address}/v1", "CLASSCAST_LLM_MODEL": "smollm2",
            "CLASSCAST_TUTOR_MAX_TOKENS": "16"})
        try:
            headers = {"VF-ORG-ID": server.org}
            r = requests.post(f"{server.base}/v1/room/create", headers=headers, timeout=10, json={
                "roomId": "algebra", "title": "Algebra", "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
            assert r.status_code == 200, r.text
            r = requests.post(f"{server.base}/v1/ai-tutor/chat", headers=headers, timeout=120, json={
                "roomId": "algebra", "studentUid": "t", "organizationId": server.org, "text": "What is two plus two?"})
            assert r.status_code == 200, r.text
            assert r.json()["text"] and 0 < r.json()["usage"]["outputTokens"] <= 16
        finally:
            server.stop()
    finally:
        del llm
