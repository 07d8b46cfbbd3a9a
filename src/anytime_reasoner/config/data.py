"""The schema of ``anytime-reasoner data``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from anytime_reasoner.config.base import StrictModel, split_list


class DataBuildConfig(StrictModel):
    """``anytime-reasoner data SOURCE ... out=DIR``."""

    sources: list[str] = Field(
        ...,
        min_length=1,
        description="names (aime, amc, math500, minerva, olympiad_bench, "
        "train/aime, train/math), .json/.jsonl/.parquet files, or hub datasets owner/name",
    )
    out: str = Field("data", description="folder (one <source>.jsonl each) or a .jsonl file (all sources merged)")
    data_dir: str | None = Field(None, description="folder with test/ and train/ JSON (else $ANYTIME_REASONER_DATA)")
    tokenizer: str | None = Field(None, description="tokenizer path: drop prompts over max_prompt_tokens")
    max_prompt_tokens: int = Field(1024, ge=1, description="templated prompt length cap (needs tokenizer)")
    strict: bool = Field(False, description="raise on the first bad row instead of counting and skipping it")
    split: str = Field("train", description="split of a hub dataset")
    parquet: bool = Field(True, description="also write .parquet when pyarrow is installed")

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [p for v in value for p in split_list(v)]
        return split_list(value)
