"""The tutor's question set, scored: per subject, the share of right answers and the time to first token.

    .venv/bin/python -m bench.tutor_eval                              # the embedded default, the whole tutor
    .venv/bin/python -m bench.tutor_eval --pipeline plain             # the model alone (the tutor before issue 22)
    .venv/bin/python -m bench.tutor_eval --model gemma3 --chat-template gemma
    .venv/bin/python -m bench.tutor_eval --backend openai --url http://127.0.0.1:8081/v1 --model-name NAME
    .venv/bin/python -m bench.tutor_eval --subjects arithmetic,algebra --show --json out.json
    .venv/bin/python -m bench.tutor_eval --rescore out.json                 # saved answers, today's checkers

`tutor` runs what the server runs for a question (control/tutor/answer.py: computer algebra, grounding, the
model, checking) with each question's class context; `plain` sends the same context to the model alone with
`build_messages` and streams its text, as the tutor did before. Time to first token is from the question to
the first text piece, solver and grounding included; the solver process and the embedding model are started
before the clock runs (their start-up is printed apart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.tutor_eval.questions import QUESTIONS, SUBJECTS, Question

CONTEXT_TOKENS = 1024


def make_backend(args: argparse.Namespace) -> Any:
    from control.tutor import backends

    if args.backend == "fake":
        return backends.FakeBackend()
    if args.backend == "openai":
        return backends.OpenAiBackend(args.url, args.model_name, args.api_key, temperature=0.2)
    extra: dict[str, Any] = {}
    if args.model != "smollm2":
        extra["model"] = args.model
    if args.chat_template:
        extra["chat_template"] = args.chat_template
    return backends.EmbeddedBackend(threads=args.threads, **extra)


def context_of(q: Question) -> Any:
    from control.tutor.context import ClassContext

    return ClassContext(title=f"{q.subject.capitalize()} class", topic=q.topic, transcript=list(q.transcript))


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.backend = make_backend(args)
        self.cas: Any = None
        self.grounder: Any = None
        self.startup: dict[str, float] = {}

    async def start(self) -> None:
        started = time.perf_counter()
        async for _ in self.backend.stream([{"role": "user", "content": "hi"}], 2):  # load the model
            pass
        self.startup["model"] = time.perf_counter() - started
        if self.args.pipeline == "tutor":
            from control.tutor.cas import Cas
            from control.tutor.embeddings import Embedder
            from control.tutor.grounding import Grounder

            started = time.perf_counter()
            self.cas = Cas()
            await self.cas.start()
            self.startup["computer algebra"] = time.perf_counter() - started
            started = time.perf_counter()
            embedder = Embedder(threads=1)
            await asyncio.get_running_loop().run_in_executor(None, embedder.embed, ["warm up"])
            self.grounder = Grounder(embedder.embed, ThreadPoolExecutor(max_workers=1))
            self.startup["embeddings"] = time.perf_counter() - started

    async def pieces(self, q: Question) -> Any:
        from control.tutor.backends import Usage

        async def model(messages: list[dict[str, Any]]) -> Any:
            async for item in self.backend.stream(messages, self.args.max_tokens):
                if not isinstance(item, Usage):
                    yield item

        ctx = context_of(q)
        if self.args.pipeline == "plain":
            from control.tutor.context import build_messages

            async for piece in model(build_messages(ctx, q.text, CONTEXT_TOKENS)):
                if isinstance(piece, str):
                    yield piece
            return
        from control.tutor import answer

        plan = await answer.plan(ctx, q.text, CONTEXT_TOKENS, self.cas, self.grounder,
                                 confidence=self.backend.reports_confidence and not self.args.no_unsure)
        async for piece in answer.speak(plan, q.text, lambda: model(plan.messages)):
            yield piece

    async def ask(self, q: Question) -> dict[str, Any]:
        started = time.perf_counter()
        first = None
        text = ""
        async for piece in self.pieces(q):
            if first is None and piece.strip():
                first = time.perf_counter() - started
            text += piece
        total = time.perf_counter() - started
        return {"subject": q.subject, "question": q.text, "context": bool(q.topic or q.transcript),
                "computable": q.computable, "answer": text.strip(),
                "right": q.checker.check(text, " ".join([q.text, q.topic or "", *q.transcript])),
                "checker": q.checker.describe(), "ttft_s": first if first is not None else total, "total_s": total}

    async def close(self) -> None:
        await self.backend.close()
        if self.cas is not None:
            self.cas.close()


def _pct(right: int, n: int) -> str:
    return f"{right}/{n} ({100 * right / n:.0f}%)" if n else "-"


def report(results: list[dict[str, Any]], args: argparse.Namespace, startup: dict[str, float]) -> str:
    lines = [f"tutor_eval: backend={args.backend} model={args.model_name if args.backend == 'openai' else args.model}"
             f" pipeline={args.pipeline} threads={args.threads} max_tokens={args.max_tokens}; "
             f"{platform.machine()}, Python {platform.python_version()}",
             "start-up (not in the times below): " + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items()), "",
             "| subject | right | first token, median | first token, max | answer, median |", "|---|---|---|---|---|"]

    def row(name: str, rs: list[dict[str, Any]]) -> str:
        ttft = [r["ttft_s"] for r in rs]
        total = [r["total_s"] for r in rs]
        return (f"| {name} | {_pct(sum(r['right'] for r in rs), len(rs))} | {statistics.median(ttft) * 1000:.0f} ms"
                f" | {max(ttft) * 1000:.0f} ms | {statistics.median(total):.2f} s |")

    for subject in SUBJECTS:
        rs = [r for r in results if r["subject"] == subject]
        if rs:
            lines.append(row(subject, rs))
    lines.append(row("**all**", results))
    for name, rs in (("computable", [r for r in results if r["computable"]]),
                     ("not computable, with class context", [r for r in results
                                                             if not r["computable"] and r["context"]]),
                     ("not computable, no context", [r for r in results if not r["computable"] and not r["context"]])):
        if rs:
            lines.append(row(name, rs))
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    chosen = [q for q in QUESTIONS if not args.subjects or q.subject in args.subjects.split(",")]
    if args.limit:
        chosen = chosen[:args.limit]
    runner = Runner(args)
    results = []
    try:
        await runner.start()
        for q in chosen:
            r = await runner.ask(q)
            results.append(r)
            if args.show:
                mark = "RIGHT" if r["right"] else "WRONG"
                print(f"[{mark}] ({r['subject']}, {r['ttft_s'] * 1000:.0f} ms) {q.text}\n    {r['answer'][:400]!r}\n"
                      f"    checker: {r['checker']}", flush=True)
    finally:
        await runner.close()
    print(report(results, args, runner.startup))
    return {"args": vars(args), "startup": runner.startup, "results": results}


def rescore(path: str) -> None:
    """The answers of an earlier run judged again by the current checkers (runs of the whole set only)."""
    record = json.loads(Path(path).read_text())
    results = record["results"]
    if len(results) != len(QUESTIONS):
        raise SystemExit(f"{path} has {len(results)} answers, the set {len(QUESTIONS)}: rescore whole runs only")
    for q, r in zip(QUESTIONS, results, strict=True):
        if r["question"] != q.text:
            raise SystemExit(f"{path} does not follow the question set's order ({r['question']!r})")
        r["right"] = q.checker.check(r["answer"], " ".join([q.text, q.topic or "", *q.transcript]))
        r["checker"] = q.checker.describe()
    print(report(results, argparse.Namespace(**record["args"]), record["startup"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=("embedded", "openai", "fake"), default="embedded")
    parser.add_argument("--model", default="smollm2", help="embedded model: smollm2 or gemma3")
    parser.add_argument("--chat-template", default="", help="llama.cpp template name for a GGUF without one")
    parser.add_argument("--url", default="", help="OpenAI-compatible base URL (backend openai)")
    parser.add_argument("--model-name", default="local", help="model name sent to the OpenAI-compatible server")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--pipeline", choices=("tutor", "plain"), default="tutor")
    parser.add_argument("--no-unsure", action="store_true", help="never replace a low-confidence answer")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--subjects", default="")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--show", action="store_true",
                        help="print every question, answer and verdict, and what the tutor withheld")
    parser.add_argument("--json", default="", help="write every answer to this file")
    parser.add_argument("--rescore", default="", help="judge the answers saved in this file again; runs nothing")
    args = parser.parse_args()
    if args.rescore:
        rescore(args.rescore)
        return
    if args.show:  # the tutor's own log: each withheld statement ("model answer corrected (...)"), each guess
        logging.basicConfig(level=logging.WARNING, format="    log: %(message)s")
        logging.getLogger("classcast.tutor").setLevel(logging.INFO)
    record = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
