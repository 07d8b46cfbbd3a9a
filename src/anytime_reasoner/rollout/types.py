"""Typed structures that cross layers: the anytime rollout tree of a batch of questions.

A question has G thinkings; each thinking is cut at every budget of the plan (S cuts) and has A
summaries per cut. Inserted text (cut marker, ``</think>``, answer delimiter) is stored apart from
sampled text: it is never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Summary:
    inserted_ids: list[int]  # forced tokens between the cut and the summary (never trained)
    sampled_ids: list[int]  # the sampled summary tokens
    text: str  # decoded sampled summary
    reward: float  # 1.0 if correct and well-formed, else 0.0
    extracted: str | None = None  # the answer the grader extracted, if any
    finish_reason: str = "stop"
    sampled_logprobs: list[float] | None = None  # the engine's log-prob of each sampled token, if reported


@dataclass
class Thinking:
    prompt_ids: list[int]
    thinking_ids: list[int]  # sampled thinking, including the closing think-end token if sampled
    closed: bool  # True when the thinking ended with the think-end token
    cuts: list[int]  # per budget: how many thinking tokens precede that budget's inserted text
    summaries: list[list[Summary]] = field(default_factory=list)  # [S][A]
    finish_reason: str = "stop"  # "stop" (think-end or EOS) or "length" (hit the largest budget)
    thinking_logprobs: list[float] | None = None  # the engine's log-prob of each thinking token, if reported

    @property
    def length(self) -> int:
        return len(self.thinking_ids)


@dataclass
class RolloutBatch:
    """Rollouts of B questions: ``thinkings[b][g]``, every one with S cuts and A summaries each."""

    budgets: tuple[int, ...]
    thinkings: list[list[Thinking]]  # [B][G]
    ground_truths: list[list[str]] = field(default_factory=list)  # [B][n_truths]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: thinking, summary, grading

    def select(self, questions: list[int]) -> RolloutBatch:
        """The rollouts of the given questions (indices into ``thinkings``), in that order."""
        return RolloutBatch(
            budgets=self.budgets,
            thinkings=[self.thinkings[b] for b in questions],
            ground_truths=[self.ground_truths[b] for b in questions] if self.ground_truths else [],
            timings=dict(self.timings),
        )

    @classmethod
    def cat(cls, parts: list[RolloutBatch]) -> RolloutBatch:
        """The questions of every part, in order (one budget grid; timings added up)."""
        if not parts or any(p.budgets != parts[0].budgets for p in parts):
            raise ValueError("RolloutBatch.cat: needs at least one part, all with the same budgets")
        timings: dict[str, float] = {}
        for part in parts:
            for name, seconds in part.timings.items():
                timings[name] = timings.get(name, 0.0) + seconds
        return cls(
            budgets=parts[0].budgets,
            thinkings=[row for p in parts for row in p.thinkings],
            ground_truths=[truths for p in parts for truths in p.ground_truths],
            timings=timings,
        )

    def informative(self) -> list[bool]:
        """Per question: its summaries' scores are not all equal. DAPO's dynamic sampling keeps these
        (it filters on accuracy: a group all right or all wrong carries no correctness signal)."""
        flat = self.scores().flatten(start_dim=1)  # [B, G·S·A]
        return (flat.amax(dim=1) > flat.amin(dim=1)).tolist()

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, G, S, A)."""
        first = self.thinkings[0][0]
        return (len(self.thinkings), len(self.thinkings[0]), len(self.budgets), len(first.summaries[0]))

    def scores(self) -> torch.Tensor:
        """Summary rewards, float32 ``[B, G, S, A]``."""
        return torch.tensor(
            [[[[s.reward for s in per_budget] for per_budget in t.summaries] for t in row] for row in self.thinkings],
            dtype=torch.float32,
        )

    def thinking_lengths(self) -> torch.Tensor:
        """Thinking lengths in tokens, int64 ``[B, G]``."""
        return torch.tensor([[t.length for t in row] for row in self.thinkings], dtype=torch.long)

    def cut_lengths(self) -> torch.Tensor:
        """Thinking tokens kept at each budget, int64 ``[B, G, S]``; budgets of one thinking with
        equal cuts share one summary prefix."""
        return torch.tensor([[t.cuts for t in row] for row in self.thinkings], dtype=torch.long)

    def closed_within(self) -> torch.Tensor:
        """bool ``[B, G, S]``: the thinking closed itself (think-end) within budget s."""
        closed = torch.tensor([[t.closed for t in row] for row in self.thinkings], dtype=torch.bool)  # [B, G]
        budgets = torch.tensor(self.budgets, dtype=torch.long)  # [S]
        return closed[..., None] & (self.thinking_lengths()[..., None] <= budgets)  # [B, G, S]

    def truncated(self) -> torch.Tensor:
        """bool ``[B, G]``: the thinking reached the largest budget without closing."""
        return torch.tensor([[t.finish_reason == "length" and not t.closed for t in row] for row in self.thinkings])

    def segment_mask(self) -> torch.Tensor:
        """bool ``[B, G, S]``: segment s = thinking tokens in (b_{s-1}, b_s]; False when empty
        (the thinking ended at or before b_{s-1})."""
        starts = torch.tensor((0,) + self.budgets[:-1], dtype=torch.long)  # [S]
        return self.thinking_lengths()[..., None] > starts  # [B, G, S]
