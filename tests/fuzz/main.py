"""One Python fuzz target under atheris: `python -m tests.fuzz.main NAME [libFuzzer flags] [corpus dirs]`.

The target's packages are imported under atheris' instrumentation hook before anything else imports them, so
coverage of the parser (not of this harness) guides the mutations. Flags and corpus directories go to libFuzzer
unchanged (`-max_total_time=S`, `-runs=N`, `-artifact_prefix=DIR/`, ...); tests/fuzz/run.py is the usual driver.
"""

from __future__ import annotations

import importlib
import sys


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python -m tests.fuzz.main TARGET [libFuzzer flags] [corpus dirs]")
    name = sys.argv[1]
    import atheris

    spec = importlib.import_module(f"tests.fuzz.targets.{name}")  # declares INSTRUMENT, imports nothing heavy
    with atheris.instrument_imports(include=list(spec.INSTRUMENT)):
        for module in spec.INSTRUMENT:
            importlib.import_module(module)
    if hasattr(spec, "setup"):
        spec.setup()
    from tests.fuzz.harness import bounded

    atheris.Setup([sys.argv[0], *sys.argv[2:]], bounded(spec))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
