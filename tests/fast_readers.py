"""What the fast readers (Avro's compiled model readers, JSON read by msgspec) are held to: a
model with one field of each kind of check they do, and whether two records are the same."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from hypothesis import strategies as st
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)


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


class Upper(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def _up(cls, v: str) -> str:
        return v.upper()


class _Checked(BaseModel):
    name: str

    @model_validator(mode="after")
    def _never_empty(self) -> _Checked:
        return self


class _Private(BaseModel):
    name: str
    _seen: int = PrivateAttr(default=0)


class _Inner(BaseModel):
    name: str


def models_pydantic_must_validate() -> list[type[BaseModel]]:
    """Each has something the checks do not express: a validator, a default, an alias, a
    pattern, None allowed, a multiple, kept extras, a coercing config, private attributes, a
    nested model, an int field with a float bound, a float bound no float equals, a Literal
    that is not all strs."""

    def one(annotation: Any, default: Any = ..., **config: Any) -> type[BaseModel]:
        namespace = {"__annotations__": {"name": annotation}, "name": default}
        if config:
            namespace["model_config"] = ConfigDict(**config)
        return type(f"M{uuid.uuid4().hex[:6]}", (BaseModel,), namespace)

    return [
        Upper,
        _Checked,
        _Private,
        one(str, "x"),
        one(str, Field(validation_alias="nom")),
        one(str, Field(pattern="^a")),
        one(str | None),
        one(int, Field(multiple_of=2)),
        one(str, extra="allow"),
        one(str, str_strip_whitespace=True),
        one(str, strict=True),
        one(_Inner),
        one(int, Field(ge=1.0)),
        one(Literal["a", 1]),
        one(float, Field(ge=2**53 + 1)),
    ]


def records_near(
    valid: Mapping[str, st.SearchStrategy[Any]], other: Mapping[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """A valid record (``valid``: each field's valid values), or one with one or two fields
    next to or outside their checks (``other``)."""

    @st.composite
    def near(draw: st.DrawFn) -> dict[str, Any]:
        record = draw(st.fixed_dictionaries(dict(valid)))
        for name in draw(st.sets(st.sampled_from(sorted(other)), max_size=2)):
            record[name] = draw(other[name])
        return record

    return near()
