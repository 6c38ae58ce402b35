"""Builds the media engine's native extension (sfu/engine/native) against libsrtp 2.

Which libsrtp: the one aiortc already uses, inside pylibsrtp's binding (libsrtp 2.x built against OpenSSL's
AES-NI code, and exporting the libsrtp API), when it is importable here; else Debian's libsrtp2 (`libsrtp2-dev`).
Debian builds its libsrtp2 against NSS, whose PKCS #11 layer (a session, a lock and a context per call) made SRTP
protect about a quarter of the server's CPU per forwarded packet in the fan-out bench; the OpenSSL build does the
same AES-GCM in a fraction of that (bench/RESULTS.md, "SRTP through OpenSSL"). Both are libsrtp 2 (one ABI,
soname libsrtp2.so.1), compiled here against Debian's header. Linking the binding also means one libsrtp in the
process: aiortc's DTLS-SRTP sessions and the engine's are the same library. `CLASSCAST_SRTP=debian` forces
Debian's. `_native.srtp_version()` says which one a build uses.

Everything else is pyproject.toml. `make install` runs `setup.py build_ext --inplace` so the extension sits next to
its Python package in the checkout (the virtualenv's editable install points there). pip's editable install
builds it too, in an isolated environment: pylibsrtp is then found through the interpreter pip runs (`-I`), or,
on a fresh environment where it is not installed yet, Debian's is linked and the Makefile's `build_ext --inplace
--force` after the install replaces it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import subprocess
import sys

from setuptools import Extension, setup


def _find_binding() -> str | None:
    try:
        spec = importlib.util.find_spec("pylibsrtp._binding")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        return spec.origin
    # pip's isolated build (`pip install -e .`) hides the environment's packages from this process, but runs it
    # with the environment's interpreter: ask that interpreter, isolated from pip's overrides, where pylibsrtp is
    found = subprocess.run([sys.executable, "-I", "-c", "import pylibsrtp._binding as b; print(b.__file__)"],
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() or None if found.returncode == 0 else None


def pylibsrtp_binding() -> str | None:
    """The path of pylibsrtp's shared object when it exports libsrtp 2's API, else None."""
    if os.environ.get("CLASSCAST_SRTP", "").strip().lower() == "debian":
        return None
    found = _find_binding()
    path = os.path.realpath(found) if found else None
    if not path or not os.path.isfile(path):
        return None
    try:
        lib = ctypes.PyDLL(path)  # its Python symbols resolve against this interpreter
        for symbol in ("srtp_create", "srtp_protect", "srtp_unprotect", "srtp_protect_rtcp", "srtp_unprotect_rtcp"):
            getattr(lib, symbol)  # the engine needs these exported
        get = lib.srtp_get_version_string
        get.restype = ctypes.c_char_p
        name = get() or b""
    except (OSError, AttributeError):
        return None
    return path if name.startswith(b"libsrtp2 2.") else None


binding = pylibsrtp_binding()
if binding is not None:
    where = os.path.dirname(binding)
    link = {"library_dirs": [where], "libraries": [":" + os.path.basename(binding)], "runtime_library_dirs": [where]}
else:
    link = {"libraries": ["srtp2"]}

setup(
    ext_modules=[
        Extension(
            "sfu.engine._native",
            sources=["sfu/engine/native/core.c", "sfu/engine/native/reader.c", "sfu/engine/native/module.c"],
            include_dirs=["sfu/engine/native"],
            depends=["sfu/engine/native/core.h"],  # a changed constant in the header rebuilds (it did not)
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            **link,
        )
    ]
)
