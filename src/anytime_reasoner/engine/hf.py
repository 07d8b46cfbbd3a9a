"""Generation with a Hugging Face causal LM, CPU or CUDA, with prefix reuse.

:class:`TransformersEngine` samples ``n`` continuations per prefix. Prefix reuse (docs/ALGORITHM.md §3.4): the
distinct prefixes of a chunk are left-padded into ``ids [k, T]`` and ``ids[:, :-1]`` is run once
through the model into a ``DynamicCache``; the cache rows are then gathered n-fold
(``Cache.batch_select_indices`` with row indices ``[0,0,…,1,1,…]``, which also allows a different
n per prefix) and the sampling loop (``engine/decode.py``: ``generate``'s sampling over a KV cache
reserved up front, finished rows leaving the batch, tokens drawn by inverse CDF; ``draw="multinomial"``
and ``shrink_at=None`` give ``generate``'s tokens) runs the last prefix token on that cache; position ids come from
the full attention mask (``cumsum - 1``), the same ones the prefill used, so the result is plain
``generate`` on the full prefix, minus ``n - 1`` re-encodings of it.

Fallback: a model whose cache cannot be gathered by rows (no ``Cache`` returned, or
linear-attention/recurrent layers) is served by ``model.generate`` re-encoding the prefix for each
sample (one log line says so); ``reuse_prefix=False`` (the benchmark's baseline) re-encodes each
prefix in the sampling loop.

Sampling is exactly temperature / top-p from the model: the model's own ``generation_config``
knobs that would change the distribution (top-k, min-p, typical-p, repetition penalty, …) are
neutralized. ``temperature == 0`` means greedy. A seed is applied inside ``torch.random.fork_rng``
so the global RNG is left as it was. Big requests are split into chunks of at most
``max_batch_rows`` sampled rows and (optionally) ``max_batch_tokens`` padded tokens; prefixes are
sorted by length first so chunks carry little padding.

Prefixes already held (``engine/prefix_cache.py``): after a call with ``SamplingParams(keep_cache=True)``
the sampling loop's caches are kept; the next call forks every prefix whose head they hold (the
summaries after cuts of the thinkings just sampled) and runs only the rest through the model.

Answers in the thinking's pass (:meth:`TransformersEngine.sample_with_answers`): one ``generate``
call samples the thinking and its answer; :class:`AnswerForcer`, a logits processor after the
log-prob recorder, follows each row's phase from its last token (thinking, forced text, answer) and,
where a token is forced, leaves only that token's logit finite, so temperature and top-p then pick
it. An answer that reaches its cap gets a forced stop id so its row ends (stripped afterwards, finish
``"length"``). The result is split per row into the thinking and its ``Answer``.

Log-probs (``params.logprobs``): a logits processor placed before generate's temperature/top-p
warpers sees the raw float32 logits of each step, keeps ``log_softmax(logits / T)`` of that step
only (``[rows, vocab]``, never the whole ``[steps, rows, vocab]``) and gathers it at the token
sampled from it when the next step (or the end) shows which one that was.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from transformers import LogitsProcessor, LogitsProcessorList, cache_utils

from anytime_reasoner.engine.base import Answer, Completion, ForcedAnswer, SampleCounts, SamplingParams, sample_counts
from anytime_reasoner.engine.decode import (
    SHRINK_AT,
    Draw,
    ReservedLayer,
    cache_kwarg,
    decode,
    forward_kwargs,
    output_cache,
    position_ids,
)
from anytime_reasoner.engine.held_attention import HeldPrefix, attending_held, supports_held_attention
from anytime_reasoner.engine.prefix_cache import HeldIndex, HeldRows, Hit, fork, held_heads

log = logging.getLogger(__name__)

# Generation-config knobs that change the sampling distribution, and their neutral values.
_NEUTRAL_KNOBS = (
    ("min_p", 0.0),
    ("typical_p", 1.0),
    ("epsilon_cutoff", 0.0),
    ("eta_cutoff", 0.0),
    ("repetition_penalty", 1.0),
    ("no_repeat_ngram_size", 0),
    ("min_new_tokens", 0),
    ("min_length", 0),
)


@dataclass
class EngineStats:
    """Counters over the engine's lifetime (for benchmarks and logs)."""

    generate_calls: int = 0
    sampled_rows: int = 0
    prefill_tokens: int = 0  # prefix tokens run through the model (excluding left padding)
    padded_prefill_tokens: int = 0  # the same including left padding
    reused_prefix_tokens: int = 0  # prefix tokens taken from the previous call's held cache (not run again)
    held_rows: int = 0  # sampled rows that read their held heads in place (engine/held_attention.py)
    prefill_seconds: float = 0.0  # in the shared-prefix prefill forwards (and the forks from a held cache)
    generate_seconds: float = 0.0  # in the sampling calls (decoding, plus any prefix they encode themselves)


@dataclass(frozen=True)
class HeldStart:
    """Rows that start after held heads (engine/held_attention.py): each row's head length but one
    ``offset [R]`` (the position of its last token), where it reads its head ``layout``, and the logits
    after its head ``first_logits [R, V]`` (the head's last token ran once per prefix)."""

    offset: torch.Tensor  # [R]
    layout: HeldPrefix
    first_logits: torch.Tensor  # [R, V]


@dataclass
class TransformersEngine:
    """Sample from any HF causal LM; see the module docstring for how prefixes are reused."""

    model: Any  # a transformers PreTrainedModel with generate()
    pad_token_id: int
    max_batch_rows: int = (
        128  # sampled rows per generate() call (a tiny model is bound by per-step overhead: fewer, larger calls)
    )
    max_batch_tokens: int | None = None  # rows × (padded prefix + max_new_tokens) per call
    reuse_prefix: bool = True
    decoder: Literal["loop", "generate"] = "loop"  # engine/decode.py, or model.generate (the reference, slower)
    prefix_caching: bool = True  # honour SamplingParams.keep_cache (False: re-encode every prefix; a benchmark's baseline)
    shrink_at: float | None = SHRINK_AT  # finished rows leave the decoding batch at this share of it (None: never)
    draw: Draw = "cdf"  # the loop's draw: inverse CDF, or generate's torch.multinomial (the same tokens as generate)
    max_held_bytes: int = 2 * 2**30  # KV cache kept for the next call at most; past it a decoding call's cache is dropped
    held_attention: bool = True  # summaries read their held heads in place (engine/held_attention.py); False: forked row by row
    max_held_rows: int = 2048  # sampled rows per call reading held heads in place (each row's own cache is short)
    max_held_scores: int = 2**26  # held-part attention scores per layer and call (query heads × queries × held positions)
    stats: EngineStats = field(default_factory=EngineStats)
    _reuse_ok: bool | None = field(default=None, init=False, repr=False)  # learned at first prefill
    _held: list[HeldRows] = field(default_factory=list, init=False, repr=False)  # from a keep_cache call, for the next

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows: must be >= 1, got {self.max_batch_rows}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sample(self, prefixes: Sequence[Sequence[int]], n: SampleCounts, params: SamplingParams) -> list[list[Completion]]:
        return self._sample(prefixes, n, params, None)

    def sample_with_answers(
        self, prefixes: Sequence[Sequence[int]], n: SampleCounts, params: SamplingParams, answer: ForcedAnswer
    ) -> list[list[Completion]]:
        """The thinkings of :meth:`sample`, each with the answer sampled after it in the same pass."""
        return self._sample(prefixes, n, params, answer)

    def _sample(
        self, prefixes: Sequence[Sequence[int]], n: SampleCounts, params: SamplingParams, answer: ForcedAnswer | None
    ) -> list[list[Completion]]:
        counts = sample_counts(n, len(prefixes))
        if any(len(p) == 0 for p in prefixes):
            raise ValueError("prefixes: every prefix needs at least one token")
        out: list[list[Completion]] = [[] for _ in prefixes]
        lengths = [len(p) for p in prefixes]
        longest = params.max_new_tokens if answer is None else answer.longest(params.max_new_tokens)
        held, self._held = self._held, []  # consumed by this call, hit or miss
        index = HeldIndex(held) if held else None
        hits = self._held_hits(index, prefixes, answer)
        with torch.no_grad(), _eval_mode(self.model), _seeded(params.seed, self.device):
            if index is not None and hits is not None:
                return self._sample_held(prefixes, counts, params, index, hits)
            for group in plan_chunks(lengths, counts, longest, self.max_batch_rows, self.max_batch_tokens):
                done = self._sample_chunk([prefixes[i] for i in group], [counts[i] for i in group], params, answer, index)
                for i, completions in zip(group, done, strict=False):
                    out[i] = completions
        return out

    # -- prefixes whose heads are held: read in place ------------------------------------------

    def _held_hits(
        self, index: HeldIndex | None, prefixes: Sequence[Sequence[int]], answer: ForcedAnswer | None
    ) -> list[Hit] | None:
        """Every prefix's held head, when the call can read them in place (engine/held_attention.py):
        all held, the engine's own loop, no answer forced, a model whose attention can be switched."""
        if index is None or answer is not None or not self.held_attention or not self.prefix_caching:
            return None
        if self.decoder != "loop" or self._reuse_ok is False or not supports_held_attention(self.model):
            return None
        hits = [index.find(p) for p in prefixes]
        return None if any(h is None for h in hits) else [h for h in hits if h is not None]

    def _sample_held(
        self, prefixes: Sequence[Sequence[int]], counts: list[int], params: SamplingParams, index: HeldIndex, hits: list[Hit]
    ) -> list[list[Completion]]:
        """:meth:`sample` of prefixes all held, in chunks of whole thinkings (``plan_held_chunks``)."""
        out: list[list[Completion]] = [[] for _ in prefixes]
        heads = [getattr(self.model.config, "num_attention_heads", 1) * h.kept for h in hits]  # scores per query of each prefix
        for group in plan_held_chunks(hits, counts, heads, self.max_held_rows, self.max_held_scores):
            done = self._held_chunk(
                [prefixes[i] for i in group], [counts[i] for i in group], [hits[i] for i in group], params, index
            )
            for i, completions in zip(group, done, strict=True):
                out[i] = completions
        return out

    def _held_chunk(
        self, prefixes: list[Sequence[int]], counts: list[int], hits: list[Hit], params: SamplingParams, index: HeldIndex
    ) -> list[list[Completion]]:
        """Sample ``counts`` rows after each prefix, reading its held head in place: the heads gathered once
        per thinking, the rests (the inserted text) run once per prefix and added to their thinking's
        entry, then each prefix's rows sampled from its rest's last logits and decoded from there."""
        start = time.perf_counter()
        ids, mask = left_pad([p[h.reused :] for p, h in zip(prefixes, hits, strict=True)], self.pad_token_id, self.device)
        kv, entry = held_heads(index.held, hits, self.device)  # the thinkings' heads; [k] each prefix's
        seen = kv.seen(entry, torch.tensor([h.kept for h in hits], device=self.device))  # [k, P]
        offset = torch.tensor([h.reused for h in hits], device=self.device)  # [k] the head's length
        counts_at = torch.tensor(counts, device=self.device)
        rows = torch.repeat_interleave(torch.arange(len(prefixes), device=self.device), counts_at)  # [R]
        config = self.model.config
        group = config.num_attention_heads // (getattr(config, "num_key_value_heads", None) or config.num_attention_heads)  # g
        with attending_held(self.model):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position_ids(mask) + offset[:, None],
                use_cache=True,
                held_prefix=HeldPrefix.of(kv, entry, seen, group * ids.shape[1]),
                **forward_kwargs(self.model),
            )  # the rests, once per prefix
            cache = output_cache(out)
            if cache is None:
                raise RuntimeError("held-prefix attention: the model's forward returned no cache")
            kv, seen = kv.with_rests(entry, seen, [(layer.keys, layer.values) for layer in cache.layers], mask)
            self.stats.prefill_tokens += int(mask.sum())
            self.stats.padded_prefill_tokens += mask.numel()
            self.stats.prefill_seconds += time.perf_counter() - start
            self.stats.reused_prefix_tokens += int(offset.sum())
            self.stats.held_rows += len(rows)
            layout = HeldPrefix.of(kv, entry[rows], seen[rows], group)  # one new token a step
            held = HeldStart((offset + mask.sum(1) - 1)[rows], layout, out.logits[rows, -1])
            last = ids[rows, -1:]  # [R, 1]
            out_ids, logprobs, _ = self._generate(last, torch.ones_like(last), None, params, held=held)  # [R, 1 + new], [R, new]
        sampled = []
        every_logprobs = logprobs.tolist() if logprobs is not None else None  # one conversion, not one a row
        for r, row in enumerate(out_ids[:, 1:].cpu().tolist()):
            done = finish(row, params.stop_token_ids)
            if every_logprobs is not None:
                done = replace(done, logprobs=tuple(every_logprobs[r][: len(done.token_ids)]))
            sampled.append(done)
        starts = [0] + torch.cumsum(counts_at.cpu(), 0).tolist()
        return [sampled[a:b] for a, b in zip(starts[:-1], starts[1:], strict=False)]

    # -- one chunk of prefixes ---------------------------------------------------------------

    def _sample_chunk(
        self,
        prefixes: list[Sequence[int]],
        counts: list[int],
        params: SamplingParams,
        answer: ForcedAnswer | None,
        index: HeldIndex | None = None,
    ) -> list[list[Completion]]:
        rows = torch.repeat_interleave(torch.arange(len(prefixes)), torch.tensor(counts))  # [R]
        longest = params.max_new_tokens if answer is None else answer.longest(params.max_new_tokens)
        sampled: list[Completion] = []
        for sub, ids, mask, cache in self._encoded_slices(prefixes, rows, index, longest):
            forcer = AnswerForcer(answer, params, len(sub), ids.shape[1]) if answer is not None else None
            out, logprobs, kept = self._generate(ids, mask, cache, params, forcer)  # [r, T + new], [r, new]
            if params.keep_cache and self.prefix_caching and kept is not None:
                self._hold(out, ids.shape[1], [tuple(prefixes[i]) for i in sub.tolist()], kept)
            tokens = out[:, ids.shape[1] :].cpu()  # [r, new]
            every_logprobs = logprobs.tolist() if logprobs is not None else None  # one conversion, not one a row
            for r, row in enumerate(tokens.tolist()):
                row_logprobs = every_logprobs[r] if every_logprobs is not None else None
                if forcer is not None:
                    sampled.append(forcer.split(r, row, row_logprobs))
                    continue
                done = finish(row, params.stop_token_ids)
                if row_logprobs is not None:
                    done = replace(done, logprobs=tuple(row_logprobs[: len(done.token_ids)]))
                sampled.append(done)
        starts = [0] + torch.cumsum(torch.tensor(counts), 0).tolist()
        return [sampled[a:b] for a, b in zip(starts[:-1], starts[1:], strict=False)]

    def _encoded_slices(
        self, prefixes: list[Sequence[int]], rows: torch.Tensor, index: HeldIndex | None, new_tokens: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any | None]]:
        """Per slice of at most ``max_batch_rows`` sampled rows (``rows [R]``: each row's prefix):
        the slice, its ``ids [r, T]``, ``mask [r, T]`` and a cache holding ``ids[:, :-1]`` (None when
        the sampling call runs the whole prefix). The chunk's distinct prefixes are forked from the
        held cache when it holds the head of every one, else prefilled; either cache is then
        gathered row by row."""
        slices = [rows[i : i + self.max_batch_rows].to(self.device) for i in range(0, len(rows), self.max_batch_rows)]
        hits = [index.find(p) for p in prefixes] if index is not None else []
        if index is not None and hits and all(h is not None for h in hits):
            ids, mask, cache = self._fork(index, [h for h in hits if h is not None], prefixes, new_tokens)  # [k, T] ×2
        else:
            ids, mask = left_pad(prefixes, self.pad_token_id, self.device)  # [k, T], [k, T]
            cache = self._prefill(ids[:, :-1], mask[:, :-1]) if self.reuse_prefix and ids.shape[1] > 1 else None
        for j, sub in enumerate(slices):
            sub_cache = None
            if cache is not None:
                # the last slice may consume the chunk's cache itself; earlier ones gather from a copy
                sub_cache = cache if j == len(slices) - 1 else copy.deepcopy(cache)
                sub_cache.batch_select_indices(sub)
            self._count(mask[sub], encoded_last_only=sub_cache is not None)
            yield sub, ids[sub], mask[sub], sub_cache

    def _fork(
        self, index: HeldIndex, hits: list[Hit], prefixes: list[Sequence[int]], new_tokens: int
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """The chunk's prefixes forked from the held cache (``prefix_cache.fork``), counted."""
        start = time.perf_counter()
        ids, mask, cache = fork(self.model, index.held, hits, prefixes, self.pad_token_id, new_tokens)
        self.stats.prefill_seconds += time.perf_counter() - start
        self.stats.reused_prefix_tokens += sum(h.reused for h in hits)
        run = mask[:, max(h.reused for h in hits) : -1]  # [k, U - 1] the rests but their last tokens
        self.stats.prefill_tokens += int(run.sum())
        self.stats.padded_prefill_tokens += run.numel()
        return ids, mask, cache

    def _hold(self, out: torch.Tensor, width: int, prefixes: list[tuple[int, ...]], cache: Any) -> None:
        """Keep one decoding call's cache for the next call (plain attention layers only, within
        ``max_held_bytes``: the next call encodes again what was not kept)."""
        layers = getattr(cache, "layers", ())
        if not layers or not all(isinstance(layer, ReservedLayer) for layer in layers):
            return
        held = HeldRows(out, width, tuple(prefixes), cache)
        if held.nbytes + sum(h.nbytes for h in self._held) <= self.max_held_bytes:
            self._held.append(held)

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> Any | None:
        """Run ``ids [k, T-1]`` once; return its cache if it can be gathered by rows, else None."""
        if self._reuse_ok is False:
            return None
        kwargs = forward_kwargs(self.model)
        start = time.perf_counter()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True, **kwargs)
        self.stats.prefill_seconds += time.perf_counter() - start
        self.stats.prefill_tokens += int(mask.sum())
        self.stats.padded_prefill_tokens += mask.numel()
        cache = output_cache(out)
        if self._reuse_ok is None:
            self._reuse_ok = expandable(cache)
            if not self._reuse_ok:
                log.warning(
                    "TransformersEngine: %s cache cannot be expanded by rows; re-encoding each prefix per sample",
                    type(cache).__name__,
                )
        return cache if self._reuse_ok else None

    def _generate(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        cache: Any | None,
        params: SamplingParams,
        forcer: AnswerForcer | None = None,
        held: HeldStart | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any | None]:
        """The prefix and the tokens sampled after it, ``[rows, T + new]`` (finished rows padded after
        their stop), their log-probs ``[rows, new]`` when ``params.logprobs``, and the sampling loop's
        cache (None under ``generate``). With ``forcer``: the thinking, its forced text and its answer
        in one pass (``forcer.split`` reads each row). With ``held``: ``ids`` are the last token of each
        row's held head, which ran already (the loop only)."""
        if forcer is not None:
            params = replace(params, max_new_tokens=forcer.longest, stop_token_ids=forcer.answer.stop_ids)
        recorder = LogprobRecorder(params.temperature) if params.logprobs else None
        processors = LogitsProcessorList(
            [p for p in (recorder, forcer) if p is not None]
        )  # the recorder sees the logits before any forcing
        start = time.perf_counter()
        kept = None
        if self.decoder == "generate" or self._reuse_ok is False:  # a cache of another kind: generate() knows it
            out = self._generate_by_transformers(ids, mask, cache, params, processors)  # [rows, T + new]
        else:
            out, kept = decode(
                self.model,
                ids,
                mask,
                cache,
                params,
                processors,
                self.pad_token_id,
                shrink_at=self.shrink_at,
                draw=self.draw,
                position_offset=held.offset if held is not None else None,
                held=held.layout if held is not None else None,
                first_logits=held.first_logits if held is not None else None,
            )  # [rows, T + new]
        self.stats.generate_seconds += time.perf_counter() - start
        self.stats.generate_calls += 1
        self.stats.sampled_rows += ids.shape[0]
        logprobs = recorder.finish(out).cpu() if recorder is not None else None
        return out, logprobs, kept

    def _generate_by_transformers(
        self, ids: torch.Tensor, mask: torch.Tensor, cache: Any | None, params: SamplingParams, processors: LogitsProcessorList
    ) -> torch.Tensor:
        """``model.generate`` (on the whole prefix for models whose cache :func:`decode` cannot hold)."""
        kwargs = generation_kwargs(self.model, params, self.pad_token_id)
        if processors:
            kwargs["logits_processor"] = processors
        if cache is not None:
            kwargs[cache_kwarg(self.model)] = cache
        return self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)  # [rows, T + new]

    def _count(self, mask: torch.Tensor, *, encoded_last_only: bool) -> None:
        """Count the prefix tokens the sampling call itself runs: only the last one per row when cached."""
        if encoded_last_only:
            self.stats.prefill_tokens += mask.shape[0]
            self.stats.padded_prefill_tokens += mask.shape[0]
        else:
            self.stats.prefill_tokens += int(mask.sum())
            self.stats.padded_prefill_tokens += mask.numel()


class LogprobRecorder(LogitsProcessor):
    """Collect the log-prob of every sampled token (see the module docstring). Runs before the
    warpers, so it sees raw float32 logits; it returns them unchanged."""

    def __init__(self, temperature: float) -> None:
        self.scale = 1.0 / temperature if temperature > 0 else 1.0
        self.pending: torch.Tensor | None = None  # [rows, vocab] log-softmax of the last step
        self.taken: list[torch.Tensor] = []  # per step: [rows]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._take(input_ids)
        self.pending = torch.log_softmax(scores.float() * self.scale, dim=-1)  # [rows, vocab]
        return scores

    def _take(self, input_ids: torch.Tensor) -> None:
        if self.pending is not None:  # the token sampled from the pending step is the last one now
            self.taken.append(self.pending.gather(1, input_ids[:, -1:]).squeeze(1))  # [rows]
            self.pending = None

    def finish(self, output_ids: torch.Tensor) -> torch.Tensor:
        """``[rows, new]`` log-probs, given generate's full output ``[rows, T + new]``."""
        self._take(output_ids)
        if not self.taken:
            return torch.zeros(output_ids.shape[0], 0)
        return torch.stack(self.taken, dim=1)  # [rows, new]


_THINK, _FORCE, _ANSWER, _CAPPED, _DONE = range(5)


class AnswerForcer(LogitsProcessor):
    """Follow every row of one ``generate`` call through thinking → forced text → answer and force
    the tokens that are not sampled (see the module docstring and :class:`ForcedAnswer`).

    ``params.max_new_tokens`` is the thinking budget, ``params.stop_token_ids`` end a thinking;
    ``width`` is the prefix width (generated tokens start there). Row state is kept in plain lists:
    a call has at most ``max_batch_rows`` rows.
    """

    def __init__(self, answer: ForcedAnswer, params: SamplingParams, rows: int, width: int) -> None:
        self.answer, self.budget, self.width = answer, params.max_new_tokens, width
        self.thinking_stops = set(params.stop_token_ids) - {answer.close_id}
        self.stops = set(answer.stop_ids)
        self.longest = answer.longest(self.budget)
        self.phase = [_THINK] * rows
        self.count = [0] * rows  # tokens of the current phase so far
        self.thinking: list[int | None] = [None] * rows  # thinking length, once it ended with an answer to come
        self.inserted: list[tuple[int, ...]] = [()] * rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.width:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self._advance(row, token)
        forced = [(row, token) for row in range(len(self.phase)) if (token := self._forced(row)) is not None]
        if not forced:
            return scores
        rows = torch.tensor([r for r, _ in forced], device=scores.device)  # [f]
        tokens = torch.tensor([t for _, t in forced], device=scores.device)  # [f]
        scores = scores.clone()
        scores[rows] = float("-inf")
        scores[rows, tokens] = 0.0
        return scores

    def _advance(self, row: int, token: int) -> None:
        """Move ``row`` on by the token just sampled (or forced) there."""
        phase = self.phase[row]
        self.count[row] += 1
        if phase == _THINK:
            if token == self.answer.close_id:
                self._start_forcing(row, self.answer.after_close)
            elif token in self.thinking_stops:
                self.phase[row] = _DONE
            elif self.count[row] == self.budget:
                self._start_forcing(row, self.answer.after_budget)
        elif phase == _FORCE and self.count[row] == len(self.inserted[row]):
            self.phase[row], self.count[row] = _ANSWER, 0
        elif phase == _ANSWER:
            if token in self.stops:
                self.phase[row] = _DONE
            elif self.count[row] == self.answer.max_answer_tokens:
                self.phase[row] = _CAPPED
        elif phase == _CAPPED:
            self.phase[row] = _DONE

    def _start_forcing(self, row: int, inserted: tuple[int, ...]) -> None:
        self.thinking[row], self.inserted[row] = self.count[row], inserted
        self.phase[row], self.count[row] = (_FORCE if inserted else _ANSWER), 0

    def _forced(self, row: int) -> int | None:
        if self.phase[row] == _FORCE:
            return self.inserted[row][self.count[row]]
        if self.phase[row] == _CAPPED:
            return self.answer.stop_ids[0]
        return None

    def split(self, row: int, tokens: list[int], logprobs: list[float] | None) -> Completion:
        """Row ``row`` of the output (``tokens`` after the prefix) as the thinking with its answer."""
        length = self.thinking[row]
        if length is None:  # ended by a stop id other than close_id: no answer
            done = finish(tokens, tuple(self.thinking_stops))
            return replace(done, logprobs=tuple(logprobs[: len(done.token_ids)]) if logprobs is not None else None)
        start = length + len(self.inserted[row])
        answer = finish(tokens[start : start + self.answer.max_answer_tokens], self.answer.stop_ids)
        end = start + len(answer.token_ids)
        if logprobs is not None:
            answer = replace(answer, logprobs=tuple(logprobs[start:end]))
        closed = tokens[length - 1] == self.answer.close_id
        return Completion(
            tuple(tokens[:length]),
            "stop" if closed else "length",
            tuple(logprobs[:length]) if logprobs is not None else None,
            Answer(self.inserted[row], answer),
        )


# -- helpers -------------------------------------------------------------------------------------


def plan_chunks(
    lengths: Sequence[int], counts: Sequence[int], max_new_tokens: int, max_rows: int, max_tokens: int | None
) -> list[list[int]]:
    """Group prefix indices (longest first) so a group has ≤ ``max_rows`` sampled rows and
    ≤ ``max_tokens`` padded tokens; a single prefix whose rows exceed the cap forms its own group
    (its rows are then split across several generate calls that share one prefill). One-token
    prefixes (nothing to prefill) never share a group with longer ones, so no prefill row is all
    padding."""
    order = sorted((i for i in range(len(lengths)) if counts[i] > 0), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    rows = 0
    for i in order:
        width = (lengths[groups[-1][0]] if groups else lengths[i]) + max_new_tokens
        fits = groups and rows + counts[i] <= max_rows and (lengths[i] > 1 or lengths[groups[-1][0]] == 1)
        if fits and max_tokens is not None:
            fits = (rows + counts[i]) * width <= max_tokens
        if fits:
            groups[-1].append(i)
            rows += counts[i]
        else:
            groups.append([i])
            rows = counts[i]
    return groups


def plan_held_chunks(
    hits: Sequence[Hit], counts: Sequence[int], scores: Sequence[int], max_rows: int, max_scores: int
) -> list[list[int]]:
    """Group prefix indices by the held row they read (a thinking's cuts stay together), then whole
    thinkings into chunks of ≤ ``max_rows`` sampled rows and ≤ ``max_scores`` held-part scores (a
    prefix's rows × its ``scores`` per query); a thinking over either cap is a chunk alone."""
    trees: dict[tuple[int, int], list[int]] = {}
    for i, h in enumerate(hits):
        if counts[i] > 0:
            trees.setdefault((h.source, h.row), []).append(i)
    chunks: list[list[int]] = []
    rows = size = 0
    for members in (trees[key] for key in sorted(trees)):
        tree_rows = sum(counts[i] for i in members)
        tree_size = sum(counts[i] * scores[i] for i in members)
        if chunks and rows + tree_rows <= max_rows and size + tree_size <= max_scores:
            chunks[-1].extend(members)
            rows, size = rows + tree_rows, size + tree_size
        else:
            chunks.append(list(members))
            rows, size = tree_rows, tree_size
    return chunks


def left_pad(prefixes: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``ids [k, T]`` and attention ``mask [k, T]`` (1 on real tokens)."""
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)  # [k, T]
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)  # [k, T]
    for row, p in enumerate(prefixes):
        if len(p):
            ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def finish(tokens: Sequence[int], stop_ids: Sequence[int]) -> Completion:
    """Keep tokens through the first stop id (finish ``"stop"``); else all of them (``"length"``)."""
    stops = set(stop_ids)
    for i, tok in enumerate(tokens):
        if tok in stops:
            return Completion(tuple(tokens[: i + 1]), "stop")
    return Completion(tuple(tokens), "length")


def expandable(cache: Any) -> bool:
    """True when a prefill cache can be gathered by rows: every layer is plain attention KV."""
    if cache is None or not isinstance(cache, cache_utils.Cache) or not hasattr(cache, "batch_select_indices"):
        return False
    linear = getattr(cache_utils, "LinearAttentionCacheLayerMixin", None)
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    return all(hasattr(layer, "batch_select_indices") and not (linear and isinstance(layer, linear)) for layer in layers)


def generation_kwargs(model: Any, params: SamplingParams, pad_id: int) -> dict[str, Any]:
    """``generate`` keyword arguments for exactly temperature/top-p sampling (or greedy)."""
    greedy = params.temperature == 0
    kwargs: dict[str, Any] = dict(
        max_new_tokens=params.max_new_tokens,
        do_sample=not greedy,
        num_beams=1,
        num_return_sequences=1,
        pad_token_id=pad_id,
        eos_token_id=list(params.stop_token_ids),
        use_cache=True,
        # every process decodes on its own: transformers turns on lock-step decoding across ranks for
        # FSDP-managed modules, but the trainer gathers the whole model first (train.fsdp.unsharded),
        # and ranks with different numbers of prompts would wait on each other forever
        synced_gpus=False,
    )
    if not greedy:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
    defaults = getattr(model, "generation_config", None)
    for name, neutral in _NEUTRAL_KNOBS:
        if defaults is not None and getattr(defaults, name, None) not in (None, neutral):
            kwargs[name] = neutral
    return kwargs


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Sample in eval mode (no dropout), then restore the model's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the block only; the caller's RNG state is restored afterwards."""
    if seed is None:
        yield
        return
    cuda = device.type == "cuda"
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
