"""The schema of ``anytime-reasoner plot``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from anytime_reasoner.config.base import StrictModel, split_list


class PlotConfig(StrictModel):
    """``anytime-reasoner plot a.json b.json ... out=FIG.png``."""

    inputs: list[str] = Field(..., min_length=1, description="results files (eval's results.json or the demo's)")
    out: str = Field("anytime.png", description="PNG written")
    labels: list[str] | None = Field(None, description="one legend label per input file (default: model / file name)")
    title: str | None = Field(None, description="figure title")

    @field_validator("inputs", "labels", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [p for v in value for p in split_list(v)]
        return split_list(value)
