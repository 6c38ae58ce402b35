"""A local OpenAI-compatible server to measure the tutor's `openai` backend against: llama.cpp's own HTTP server
(xllamacpp) with a packaged GGUF, on 127.0.0.1. Runs until interrupted.

    .venv/bin/python -m bench.tutor_eval.llama_server --port 8091 [--model smollm2] [--threads 1]
    .venv/bin/python -m bench.tutor_eval --backend openai --url http://127.0.0.1:8091/v1 --model-name smollm2
"""

from __future__ import annotations

import argparse
import signal
import threading


def main() -> None:
    import xllamacpp

    from control.tutor import models

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--model", default="smollm2", choices=models.LLMS)
    parser.add_argument("--chat-template", default="")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=2048)
    args = parser.parse_args()
    params = xllamacpp.CommonParams()
    params.model.path = str(models.llm_gguf(args.model))
    if args.chat_template:
        params.chat_template = args.chat_template
    params.n_ctx = args.ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.verbosity = 0
    server = xllamacpp.Server(params)
    print(f"serving {args.model} at {server.listening_address}/v1", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server


if __name__ == "__main__":
    main()
