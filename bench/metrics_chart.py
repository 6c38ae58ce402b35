"""The Grafana dashboard (docs/grafana-dashboard.json) drawn from real scrapes of a running classcast.

No Grafana package serves on this machine's registries, so this draws the dashboard's own panels: it starts
`classcast serve`, a webhook receiver that fails now and then, scrapes `/metrics` every second while the fan-out
bench (`bench.fanout --target URL`) sends real media and a little REST and tutor traffic runs, then evaluates each
panel's PromQL expression over the scrapes (the small subset the dashboard uses: sum [by], rate, label matchers,
histogram_quantile) and writes one PNG. A family this build does not export is drawn as "no data", never as 0.

    python -m bench.metrics_chart --out docs/images/metrics-dashboard.png
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
Labels = frozenset[tuple[str, str]]
Scrape = tuple[float, dict[tuple[str, Labels], float]]


def parse_scrape(text: str) -> dict[tuple[str, Labels], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


# ---- the PromQL subset ---------------------------------------------------------------------------------------

def _selector(name: str, matchers: str | None, sample: dict[tuple[str, Labels], float]) -> dict[Labels, float]:
    want = dict(re.findall(r'(\w+)="([^"]*)"', matchers or ""))
    return {labels: v for (n, labels), v in sample.items()
            if n == name and all(dict(labels).get(k) == val for k, val in want.items())}


def evaluate(expr: str, scrapes: list[Scrape], i: int) -> dict[Labels, float]:
    expr = expr.strip()
    if m := re.fullmatch(r"histogram_quantile\(([\d.]+),\s*(.*)\)", expr, re.S):
        return _quantile(float(m[1]), evaluate(m[2], scrapes, i))
    if m := re.fullmatch(r"sum(?:\s+by\s*\(([^)]*)\))?\s*\((.*)\)", expr, re.S):
        keys = [k.strip() for k in (m[1] or "").split(",") if k.strip()]
        out: dict[Labels, float] = {}
        for labels, v in evaluate(m[2], scrapes, i).items():
            key = frozenset((k, dict(labels).get(k, "")) for k in keys)
            out[key] = out.get(key, 0.0) + v
        return out
    if m := re.fullmatch(r"rate\((\w+)(\{[^}]*\})?\[(\d+)m\]\)", expr):
        t, now = scrapes[i][0], _selector(m[1], m[2], scrapes[i][1])
        j = next((k for k in range(i) if scrapes[k][0] >= t - int(m[3]) * 60), None)
        if j is None:
            return {}
        t0, before = scrapes[j][0], _selector(m[1], m[2], scrapes[j][1])
        return {labels: max(0.0, v - before.get(labels, 0.0)) / (t - t0) for labels, v in now.items()}
    if m := re.fullmatch(r"(\w+)(\{[^}]*\})?", expr):
        return _selector(m[1], m[2], scrapes[i][1])
    raise ValueError(f"expression outside the supported subset: {expr}")


def _quantile(q: float, buckets: dict[Labels, float]) -> dict[Labels, float]:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, v in buckets.items():
        d = dict(labels)
        le = d.pop("le", None)
        if le is not None:
            groups.setdefault(frozenset(d.items()), []).append((float(le), v))
    out = {}
    for key, bs in groups.items():
        bs.sort()
        total = bs[-1][1] if bs else 0.0
        if total <= 0:
            continue
        rank, prev_le, prev_n = q * total, 0.0, 0.0
        for le, n in bs:
            if n >= rank:
                if le == float("inf"):
                    out[key] = prev_le
                else:
                    out[key] = prev_le + (le - prev_le) * ((rank - prev_n) / (n - prev_n) if n > prev_n else 1.0)
                break
            prev_le, prev_n = le, n
    return out


def _legend(fmt: str, labels: Labels) -> str:
    d = dict(labels)
    return re.sub(r"\{\{(\w+)\}\}", lambda m: d.get(m[1], ""), fmt) or "value"


def draw(scrapes: list[Scrape], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = json.loads(DASHBOARD.read_text())["panels"]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 2.6 * rows), squeeze=False)
    t0 = scrapes[0][0]
    for ax, panel in zip(axes.flat, panels, strict=False):
        drawn = 0
        for target in panel["targets"]:
            series: dict[Labels, list[tuple[float, float]]] = {}
            for i in range(len(scrapes)):
                for labels, v in evaluate(target["expr"], scrapes, i).items():
                    series.setdefault(labels, []).append((scrapes[i][0] - t0, v))
            for labels, points in sorted(series.items(), key=lambda kv: sorted(kv[0])):
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=_legend(target.get("legendFormat", ""), labels), linewidth=1.2)
                drawn += 1
        ax.set_title(panel["title"], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("s", fontsize=7)
        if drawn:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data: this build does not export the family", ha="center", va="center",
                    fontsize=8, color="gray", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


# ---- the run -------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Hook(BaseHTTPRequestHandler):
    count = 0

    def do_POST(self) -> None:  # the http.server interface names it
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Hook.count += 1
        self.send_response(500 if _Hook.count % 4 == 0 else 200)  # one in four fails: retries show
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def _request(base: str, org: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(base + path, method=method, headers={"VF-ORG-ID": org,
                                 "Content-Type": "application/json"},
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def run(args: argparse.Namespace) -> list[Scrape]:
    data = Path(tempfile.mkdtemp(prefix="cc-metrics-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CLASSCAST_PORT": str(port), "CLASSCAST_DATA_DIR": str(data),
           "CLASSCAST_LLM_BACKEND": "fake", "CLASSCAST_WEBHOOK_RETRY_BASE": "1", "CLASSCAST_DRAIN_TIMEOUT": "5"}
    server = subprocess.Popen([sys.executable, "-m", "control.cli", "serve", "--log-level", "WARNING"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    scrapes: list[Scrape] = []
    stop = threading.Event()
    try:
        assert server.stdout is not None
        org = ""
        deadline = time.monotonic() + 60
        while not org and time.monotonic() < deadline:
            m = re.search(r"Demo organization.*?: ([A-Za-z0-9]{16})", server.stdout.readline())
            org = m[1] if m else ""
        if not org:
            raise SystemExit("the server did not start")
        _request(base, org, "POST", "/v1/webhooks", {"url": f"http://127.0.0.1:{hook.server_address[1]}/"})

        def scraper() -> None:
            while not stop.is_set():
                with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
                    scrapes.append((time.time(), parse_scrape(r.read().decode())))
                stop.wait(args.interval)

        def traffic() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                _request(base, org, "POST", "/v1/room/create", {
                    "roomId": f"side-{n}", "title": "Side room",
                    "participant": {"uid": "t", "name": "T", "role": "TEACHER"}})
                _request(base, org, "GET", f"/v1/room/side-{n}/status")
                _request(base, org, "GET", "/v1/room/no-such-room/summary")
                _request(base, org, "POST", "/v1/ai-tutor/chat", {
                    "roomId": f"side-{n}", "text": "What is x?", "organizationId": org, "studentUid": "s1"})
                _request(base, org, "DELETE", f"/v1/room/side-{n}")
                stop.wait(0.5)

        threads = [threading.Thread(target=scraper, daemon=True), threading.Thread(target=traffic, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(args.interval * 3)
        bench = subprocess.run([sys.executable, "-m", "bench.fanout", "--target", base, "--org", org,
                                "--subscribers", str(args.subscribers), "--duration", str(args.duration),
                                "--settle", "3", "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if bench.returncode != 0:
            print(bench.stdout[-2000:], file=sys.stderr)
        time.sleep(args.interval * 5)  # the tail: classes over, webhook retries draining
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        stop.set()
        hook.shutdown()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return scrapes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.metrics_chart", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "metrics-dashboard.png"))
    p.add_argument("--subscribers", type=int, default=4)
    p.add_argument("--duration", type=float, default=15)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    p.add_argument("--scrapes", help="also write the raw scrapes here (JSON lines)")
    args = p.parse_args(argv)
    scrapes = run(args)
    if len(scrapes) < 3:
        raise SystemExit(f"only {len(scrapes)} scrapes: nothing to draw")
    if args.scrapes:
        with open(args.scrapes, "w") as fh:
            for t, sample in scrapes:
                fh.write(json.dumps({"t": t, "samples": [[n, dict(lb), v] for (n, lb), v in sample.items()]}) + "\n")
    draw(scrapes, Path(args.out), f"classcast /metrics, {len(scrapes)} scrapes: fan-out bench "
         f"({args.subscribers} subscribers) + REST, tutor and webhook traffic")
    print(f"{args.out}: {len(scrapes)} scrapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
