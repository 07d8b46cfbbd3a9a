"""The schema of ``anytime-reasoner grade``."""

from __future__ import annotations

from pydantic import Field

from anytime_reasoner.config.base import StrictModel


class GradeConfig(StrictModel):
    """``anytime-reasoner grade input=F.jsonl output=G.jsonl``."""

    input: str = Field(..., description="JSONL with 'response' and 'ground_truth' per line")
    output: str = Field(..., description="JSONL written with 'correct' and 'extracted' per line")
    timeout: float = Field(10.0, gt=0.0, description="seconds allowed per item before it counts as wrong")
    workers: int = Field(2, ge=1, description="grading processes")
    progress: bool = True
