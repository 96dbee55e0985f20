"""The state changelog's record format: one record per key (its rows) and one per partition
(where the state stands), so that a compacted topic keeps exactly the latest of each.

A key's record: ``key`` = the input record's key, value = a 4-byte length, a JSON list of the
distinct-only values the rows refer to, then the rows as little-endian float64 ``(ts, offset,
field...)``, the distinct-only columns as indexes into that list. The vocabulary codes of a
process are its own (they depend on arrival order), so values travel, never codes. A key that
expired is a tombstone (value None).

A partition's record: key = :data:`META_KEY`, value = JSON ``{"applied", "wm", "late"}``: the
highest input offset applied, the partition's event time and the late events' scoring times,
which a replay after a restore needs to be scored as the first time.
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from typing import Any

from streaming.state.store import PartitionState, Vocabulary

META_KEY = b"\x00streaming.state.partition"
"""The partition record's key (no card key starts with a NUL byte in practice; a pipeline
whose keys might is told at start, see streaming.state.changelog)."""

_LEN = struct.Struct("<I")
_SWAP = sys.byteorder != "little"


def encode_rows(rows: array, coded: list[int], stride: int, values: list[Any]) -> bytes:
    """A key's rows as bytes; ``coded`` are the row positions of distinct-only columns and
    ``values`` the vocabulary's code -> value list."""
    out = array("d", rows)
    table: list[Any] = []
    index: dict[int, int] = {}
    for col in coded:
        for i in range(col, len(out), stride):
            code = int(out[i])
            local = index.get(code)
            if local is None:
                local = index[code] = len(table)
                table.append(values[code])
            out[i] = local
    if _SWAP:
        out.byteswap()
    head = json.dumps(table, separators=(",", ":")).encode()
    return _LEN.pack(len(head)) + head + out.tobytes()


def decode_rows(data: bytes, coded: list[int], stride: int, codes: Vocabulary) -> array:
    """The rows of ``encode_rows``, the distinct-only values coded in this process's
    vocabulary."""
    (size,) = _LEN.unpack_from(data)
    table = json.loads(data[_LEN.size : _LEN.size + size])
    rows = array("d")
    rows.frombytes(data[_LEN.size + size :])
    if _SWAP:
        rows.byteswap()
    if len(rows) % stride:
        raise ValueError(f"a state record of {len(rows)} values is not rows of {stride}")
    local = [codes[v] for v in table]
    for col in coded:
        for i in range(col, len(rows), stride):
            rows[i] = local[int(rows[i])]
    return rows


def encode_meta(state: PartitionState) -> bytes:
    return json.dumps(
        {"applied": state.applied, "wm": state.wm, "late": state.late}, separators=(",", ":")
    ).encode()


def decode_meta(data: bytes, state: PartitionState) -> None:
    """Set where ``state`` stands from its partition record."""
    meta = json.loads(data)
    state.applied = int(meta["applied"])
    state.wm = None if meta["wm"] is None else int(meta["wm"])
    state.late = {int(o): int(t) for o, t in meta["late"].items()}
