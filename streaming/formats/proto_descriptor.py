"""A pipeline's Protobuf message class from its carried descriptor (a FileDescriptorSet that
protoc made from the ``.proto``): no generated code, no protoc at run time.

    python -m streaming.formats.proto_descriptor PROTO   # (re)writes PROTO's .desc beside it
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def compile_proto(proto: str | Path) -> bytes:
    """The FileDescriptorSet of ``proto`` as protoc makes it (needs grpcio-tools: dev only)."""
    from grpc_tools import protoc

    proto = Path(proto).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.desc"
        code = protoc.main(
            ["protoc", f"-I{proto.parent}", f"--descriptor_set_out={out}", proto.name]
        )
        if code != 0:
            raise ValueError(f"{proto}: protoc failed (exit {code})")
        return out.read_bytes()


def message_class(descriptor_set: bytes, full_name: str) -> Any:
    """The message class ``full_name`` of a serialized FileDescriptorSet, in a pool of its own."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def main() -> None:
    proto = Path(sys.argv[1])
    proto.with_suffix(".desc").write_bytes(compile_proto(proto))
    print(f"wrote {proto.with_suffix('.desc')}")


if __name__ == "__main__":
    main()
