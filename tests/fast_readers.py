"""What the fast readers (Avro's compiled model readers, JSON read by msgspec) are held to: a
model with one field of each kind of check they do, and whether two records are the same."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt


class Kinds(BaseModel):
    """One field of each kind of check, with its edges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s: str = Field(min_length=1, max_length=5)
    t: str
    i: StrictInt = Field(ge=-10, le=10)
    n: int = Field(gt=-(2**40), lt=2**40)
    d: Annotated[StrictFloat, Field(allow_inf_nan=False)] = Field(ge=0.5, le=100)
    g: float = Field(gt=0, allow_inf_nan=False)
    h: float
    b: StrictBool
    c: Literal["x", "yy", "zzz"]
    e: Literal["RED", "GREEN"]


def identical(a: BaseModel, b: BaseModel) -> bool:
    """The same instance state: values of the same types (repr: nan, -0.0) in the same field
    order, and the same fields set, extras and private attributes (model == ignores some)."""
    if type(a) is not type(b) or list(a.__dict__) != list(b.__dict__):
        return False
    for x, y in zip(a.__dict__.values(), b.__dict__.values(), strict=True):
        if type(x) is not type(y) or repr(x) != repr(y):
            return False
    return (
        a.__pydantic_fields_set__ == b.__pydantic_fields_set__
        and a.__pydantic_extra__ == b.__pydantic_extra__
        and a.__pydantic_private__ == b.__pydantic_private__
    )
