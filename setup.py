"""The one compiled part: streaming.formats._avro_flat, flat Avro records read in C.

Everything else is in pyproject.toml. ``optional``: where no C compiler is found the install
still succeeds and the Avro decoder reads with its generated Python instead (the same answers,
slower); ``streaming.formats.avro_compiled.C_READER`` says which one runs.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streaming.formats._avro_flat",
            ["streaming/formats/_avro_flat.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        )
    ]
)
