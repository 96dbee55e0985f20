"""A raw card transaction, as the card network sends it (no precomputed features)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "PLN", "JPY", "CAD")
CATEGORIES = (
    "grocery",
    "fuel",
    "restaurants",
    "travel",
    "electronics",
    "digital_goods",
    "gambling",
    "cash",
    "apparel",
    "health",
)
COUNTRIES = ("DE", "FR", "GB", "US", "ES", "IT", "NL", "PL", "SE", "CH", "NG", "BR")
CHANNELS = ("pos", "ecommerce", "atm", "moto")

# Literal[tuple] spells out each member: the lists above are the single source.
Currency = Literal[CURRENCIES]  # type: ignore[valid-type]
Category = Literal[CATEGORIES]  # type: ignore[valid-type]
Country = Literal[COUNTRIES]  # type: ignore[valid-type]
Channel = Literal[CHANNELS]  # type: ignore[valid-type]
# JSON numbers only (an int is fine, "12.5" as a string is an upstream bug), never NaN/inf.
FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class Transaction(BaseModel):
    """One card transaction; the per-card velocity features come from the state stage."""

    # cache_strings="keys": the field names repeat in every event, the values (ids) rarely do;
    # caching only the keys decodes ~13% faster than pydantic's default of caching all.
    model_config = ConfigDict(extra="forbid", frozen=True, cache_strings="keys")

    event_id: str = Field(min_length=1, max_length=64)
    card_id: str = Field(min_length=1, max_length=64)
    ts_ms: StrictInt = Field(gt=1_000_000_000_000, lt=100_000_000_000_000)
    """Event time, epoch milliseconds."""
    amount: FiniteFloat = Field(ge=0.01, le=1_000_000)
    """At least one cent: the features divide amounts by the card's average amount (a
    subnormal one, 2e-313, overflowed to inf)."""
    currency: Currency
    merchant_category: Category
    merchant_id: str = Field(min_length=1, max_length=64)
    country: Country
    channel: Channel
    card_present: StrictBool
    home_country: Country
    distance_from_home_km: FiniteFloat = Field(ge=0, le=20_040)
