"""Request bodies of the server (OpenAI's chat completions, and the anytime endpoint), validated
strictly: an unknown field is an error naming it, never silently ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from anytime_reasoner.algo.budgets import BudgetError, parse_grid

MAX_GRID = 10_000  # budgets a grid may spell at all (the server's max_budgets is the real limit)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class StreamOptions(Strict):
    include_usage: bool = False


class ChatRequest(Strict):
    """``POST /v1/chat/completions`` (OpenAI's fields, plus vLLM's ``thinking_token_budget``)."""

    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    thinking_token_budget: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("at most 4 non-empty strings")
        return value

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_cap(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class AnytimeRequest(Strict):
    """``POST /v1/anytime``: answers at every budget of ``budgets`` from one thinking."""

    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    budgets: list[int] | str  # a list, or a grid such as 250:8000:250 (validated to a list)
    stream: bool = True
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: Any) -> list[int]:
        if isinstance(value, str) and value.count(":") == 2:  # size a grid before building it
            try:
                start, stop, step = (int(p) for p in value.strip("[] ").split(":"))
            except ValueError:
                start, stop, step = 0, 0, 1
            if step > 0 and (stop - start) // step + 1 > MAX_GRID:
                raise ValueError(f"the grid {value!r} has more than {MAX_GRID} budgets")
        try:
            return list(parse_grid(value, field="budgets"))
        except BudgetError as err:
            raise ValueError(str(err).split(": ", 1)[-1]) from None


class AnswerNowRequest(Strict):
    """``POST /v1/anytime/{id}/answer``: ``stop`` ends the thinking at this cut."""

    stop: bool = False
