"""The state changelog's record format: one record per key (its rows) and one per partition
(where the state stands), so that a compacted topic keeps exactly the latest of each.

A key's record: ``key`` = the input record's key, value = the partition's applied offset when
it was written (8 bytes: which snapshot it belongs to), a 4-byte length, the (code, value)
pairs of the distinct-only values the rows use (strings as text, anything else as JSON), then
the rows as little-endian float64 ``(ts, offset, field...)``. The vocabulary codes of a
process are its own (they depend on arrival order), so each record carries its codes' values
and a restore recodes them in its own vocabulary. A key that expired is a tombstone (None).

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

from streaming.state.store import C_STATE, PartitionState, Vocabulary

META_KEY = b"\x00streaming.state.partition"
"""The partition record's key (no card key starts with a NUL byte in practice; a pipeline
whose keys might is told at start, see streaming.state.changelog)."""

_HEAD = struct.Struct("<qI")
"""A key record's head: the applied offset of its snapshot, the length of its code table."""
_SWAP = sys.byteorder != "little"
NATIVE = C_STATE is not None and not _SWAP
"""encode_rows in C (it writes the host's doubles as they are: little-endian hosts only)."""
_US, _RS = "\x1f", "\x1e"
_RS_B = _RS.encode()


class Labels(dict[float, bytes]):
    """Code (as a row holds it) -> its ``code US value`` entry, made once per code from the
    vocabulary: a commit then joins cached bytes instead of formatting every value again."""

    def __init__(self, values: list[Any]) -> None:
        super().__init__()
        self._values = values
        self.by_code: list[bytes | None] = []
        """The same entries by int code, kept by the C encoder (no float made per lookup)."""

    def __missing__(self, code: float) -> bytes:
        value = self._values[int(code)]
        if type(value) is not str or _US in value or _RS in value:
            raise NotText
        entry = self[code] = f"{int(code)}{_US}{value}".encode()
        return entry


class NotText(Exception):
    """A value that is not plain text: the record's table goes as JSON (from Python)."""


def encode_rows(
    rows: array, coded: list[int], stride: int, labels: Labels, applied: int, native: bool = True
) -> bytes:
    """A key's rows as bytes, written in the snapshot of ``applied``; ``coded`` are the row
    positions of distinct-only columns. The rows go as they are, with the values of the codes
    they use (in code order): the remapping is the restore's (rare) work, not each commit's.
    ``native``: by the C extension where it is built (the same bytes; a table that is not
    plain text is written by the Python below)."""
    if native and NATIVE:
        try:
            return C_STATE.encode_rows(rows, coded, stride, labels, applied)
        except NotText:
            pass
    used: set[float] = set()
    for col in coded:
        used.update(rows[col::stride])
    try:
        head = b"S" + _RS_B.join(map(labels.__getitem__, sorted(used)))
    except NotText:
        values = labels._values
        pairs = [(int(c), values[int(c)]) for c in sorted(used)]
        head = b"J" + json.dumps(pairs, separators=(",", ":")).encode()
    data = rows.tobytes() if not _SWAP else _swapped(rows)
    return _HEAD.pack(applied, len(head)) + head + data


def snapshot_of(data: bytes) -> int:
    """The applied offset of the snapshot a key record was written in."""
    return _HEAD.unpack_from(data)[0]


def decode_rows(data: bytes, coded: list[int], stride: int, codes: Vocabulary) -> array:
    """The rows of ``encode_rows``, the distinct-only values coded in this process's
    vocabulary."""
    _applied, size = _HEAD.unpack_from(data)
    start = _HEAD.size
    table = {code: codes[value] for code, value in _unpack_table(data[start : start + size])}
    rows = array("d")
    rows.frombytes(data[start + size :])
    if _SWAP:
        rows.byteswap()
    if len(rows) % stride:
        raise ValueError(f"a state record of {len(rows)} values is not rows of {stride}")
    for col in coded:
        rows[col::stride] = array("d", [table[int(c)] for c in rows[col::stride]])
    return rows


def _swapped(rows: array) -> bytes:
    out = array("d", rows)
    out.byteswap()
    return out.tobytes()


def _unpack_table(head: bytes) -> list[tuple[int, Any]]:
    if head[:1] == b"J":
        return [(int(c), v) for c, v in json.loads(head[1:])]
    text = head[1:].decode()
    if not text:
        return []
    return [(int(c), v) for c, v in (item.split(_US, 1) for item in text.split(_RS))]


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
