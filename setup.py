"""Builds the media engine's native extension (sfu/engine/native) against Debian's libsrtp2 (`libsrtp2-dev`).

Everything else is pyproject.toml. `make install` runs `setup.py build_ext --inplace` so the extension sits next to
its Python package in the checkout (the virtualenv's editable install points there).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sfu.engine._native",
            sources=["sfu/engine/native/core.c", "sfu/engine/native/module.c"],
            include_dirs=["sfu/engine/native"],
            depends=["sfu/engine/native/core.h"],  # a changed constant in the header rebuilds (it did not)
            libraries=["srtp2"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
        )
    ]
)
