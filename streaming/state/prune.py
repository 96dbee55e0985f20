"""The Python path of the vocabulary's prune (StateStage.prune): which codes the rows still
hold, and the rows recoded to a pruned vocabulary. The C path (streaming.state._state_c's
live_codes and recode) gives the same answers in one pass; this is its reference and the
fallback where the extension is not built."""

from __future__ import annotations

from array import array
from collections.abc import Hashable, Sequence


def live_codes(
    states: Sequence[dict[Hashable, array]], coded: list[int], stride: int, size: int
) -> bytearray:
    """C_STATE.live_codes in Python: 1 at each of ``size`` codes some key's rows hold."""
    live = bytearray(size)
    for held in states:
        for rows in held.values():
            for col in coded:
                for code in rows[col::stride]:
                    if not (0 <= code < size) or code != int(code):
                        raise ValueError(
                            f"a row holds code {code}, not one of the vocabulary's {size}"
                        )
                    live[int(code)] = 1
    return live


def recode(
    states: Sequence[dict[Hashable, array]], coded: list[int], stride: int, mapping: array
) -> None:
    """C_STATE.recode in Python: each code c at the coded positions becomes mapping[c]."""
    for held in states:
        for rows in held.values():
            for col in coded:
                rows[col::stride] = array("d", [mapping[int(c)] for c in rows[col::stride]])
