"""The compiled parts: streaming.formats._avro_flat, flat Avro records read in C;
streaming.state._state_c, the state stage's hot path in C; streaming.explain._relu_ig,
exact integrated gradients of two-hidden-layer ReLU networks in C;
streaming.explain._top_codes, the strongest reason codes of explained rows in C; and
streaming.engine._encode, JSON predictions in C.

Everything else is in pyproject.toml. ``optional``: where no C compiler is found the install
still succeeds and each part runs its Python instead (the same answers, slower):
``streaming.formats.avro_compiled.C_READER``, ``streaming.state.store.C_STATE``,
``streaming.explain.piecewise.C_IG``, ``streaming.explain.reasons.C_TOP`` and
``streaming.engine.outputs.C_ENCODE`` say which one runs.
"""

from setuptools import Extension, setup


def c_extension(module: str) -> Extension:
    """``streaming.x._y`` built from ``streaming/x/_y.c``; optional (see above). Each may
    include ``streaming/_buffers.h`` (how the extensions take array arguments)."""
    return Extension(
        module,
        [module.replace(".", "/") + ".c"],
        include_dirs=["streaming"],
        depends=["streaming/_buffers.h", "streaming/formats/_flat_batch.h"],
        extra_compile_args=["-O2", "-Wall"],
        optional=True,
    )


setup(
    ext_modules=[
        c_extension("streaming.formats._avro_flat"),
        c_extension("streaming.formats._json_flat"),
        c_extension("streaming.state._state_c"),
        c_extension("streaming.engine._encode"),
        c_extension("streaming.explain._relu_ig"),
        c_extension("streaming.explain._top_codes"),
    ]
)
