"""The compiled parts: streaming.formats._avro_flat, flat Avro records read in C;
streaming.state._state_c, the state stage's hot path in C; streaming.explain._relu_ig,
exact integrated gradients of two-hidden-layer ReLU networks in C; and
streaming.engine._encode, JSON predictions in C.

Everything else is in pyproject.toml. ``optional``: where no C compiler is found the install
still succeeds and each part runs its Python instead (the same answers, slower):
``streaming.formats.avro_compiled.C_READER``, ``streaming.state.store.C_STATE``,
``streaming.explain.piecewise.C_IG`` and ``streaming.engine.outputs.C_ENCODE`` say which one
runs.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streaming.formats._avro_flat",
            ["streaming/formats/_avro_flat.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        ),
        Extension(
            "streaming.state._state_c",
            ["streaming/state/_state_c.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        ),
        Extension(
            "streaming.engine._encode",
            ["streaming/engine/_encode.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        ),
        Extension(
            "streaming.explain._relu_ig",
            ["streaming/explain/_relu_ig.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        ),
    ]
)
