"""engine/decode.py: the sampling loop samples exactly what ``model.generate`` samples, and the
reserved KV cache holds exactly what transformers' growing cache holds."""

import pytest
import torch
from transformers import DynamicCache, LogitsProcessorList
from transformers.cache_utils import DynamicLayer

from anytime_reasoner.engine.base import ForcedAnswer, SamplingParams
from anytime_reasoner.engine.decode import ReservedLayer, decode, draw_by_cdf, output_cache, position_ids, reserve
from anytime_reasoner.engine.hf import LogprobRecorder, TransformersEngine, generation_kwargs, left_pad

pytestmark = pytest.mark.usefixtures("single_thread")

PAD = 256  # tests/conftest.py: <pad>
PREFIXES = [[5, 6, 7, 8, 9, 10, 11], [20, 21], [30, 31, 32], [40, 41, 42, 43]] * 4  # 16 rows, left-padded


@pytest.mark.parametrize(
    ("temperature", "top_p"),
    [(0.0, 1.0), (0.7, 1.0), (1.0, 0.8)],  # greedy; temperature alone; top-p alone
)
@pytest.mark.parametrize("prefilled", [False, True])
def test_decode_samples_what_generate_samples(tiny_model, temperature, top_p, prefilled):
    """Same seed, same prefixes: the same tokens as ``generate``, row for row, including the pad ids
    after a stop (stop id 7 and 33 are common enough in the tiny model's samples to end some rows)."""
    ids, mask = left_pad(PREFIXES, PAD, torch.device("cpu"))  # [16, 7]
    params = SamplingParams(max_new_tokens=24, temperature=temperature, top_p=top_p, stop_token_ids=(7, 33))
    with torch.no_grad():
        torch.manual_seed(3)
        expected = tiny_model.generate(input_ids=ids, attention_mask=mask, **generation_kwargs(tiny_model, params, PAD))
        cache = None
        if prefilled:  # the engine's path: the prefix minus its last token already in a cache
            head = tiny_model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids(mask[:, :-1]))
            cache = output_cache(head)
        torch.manual_seed(3)
        got, _ = decode(tiny_model, ids, mask, cache, params, LogitsProcessorList(), PAD, draw="multinomial")
    assert torch.equal(got, expected)
    assert any(t in (7, 33) for row in expected[:, ids.shape[1] : -1].tolist() for t in row)  # some row stopped early


def test_decode_logprobs_equal_generate_logprobs(tiny_model):
    """The processors see the same logits as under ``generate``: the recorded log-probs agree."""
    ids, mask = left_pad(PREFIXES[:4], PAD, torch.device("cpu"))
    params = SamplingParams(max_new_tokens=10, temperature=0.9, top_p=1.0, stop_token_ids=())
    recorders = [LogprobRecorder(0.9), LogprobRecorder(0.9)]
    with torch.no_grad():
        torch.manual_seed(0)
        kwargs = generation_kwargs(tiny_model, params, PAD)
        by_generate = tiny_model.generate(
            input_ids=ids, attention_mask=mask, logits_processor=LogitsProcessorList([recorders[0]]), **kwargs
        )
        torch.manual_seed(0)
        by_decode, _ = decode(tiny_model, ids, mask, None, params, LogitsProcessorList([recorders[1]]), PAD, draw="multinomial")
    assert torch.equal(by_decode, by_generate)
    assert torch.allclose(recorders[1].finish(by_decode), recorders[0].finish(by_generate), atol=1e-6)


def test_finished_rows_leave_the_batch_and_keep_their_cache(tiny_model):
    """Rows that finished leave the model's batch (the forward sees fewer rows), yet the tokens are
    those of the full batch and the returned cache holds every row: each row's keys through its stop
    token as in the full batch (to float rounding: other batch shapes), zeros after it where the row left."""
    ids, mask = left_pad(PREFIXES, PAD, torch.device("cpu"))  # [16, 7]
    stops = tuple(range(0, 256, 16))  # one id in 16 ends a row: rows end from step 0 to past 24
    params = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=1.0, stop_token_ids=stops)
    rows_seen: dict[str, list[int]] = {"full": [], "shrunk": []}
    runs = {}
    for name, at in (("full", None), ("shrunk", 0.25)):
        hook = tiny_model.register_forward_pre_hook(
            lambda _m, _a, kw, name=name: rows_seen[name].append(kw["input_ids"].shape[0]), with_kwargs=True
        )
        with torch.no_grad():
            torch.manual_seed(3)
            runs[name] = decode(tiny_model, ids, mask, None, params, LogitsProcessorList(), PAD, shrink_at=at)
        hook.remove()
    (full_ids, full_cache), (got_ids, got_cache) = runs["full"], runs["shrunk"]
    assert torch.equal(got_ids, full_ids)
    assert set(rows_seen["full"]) == {16} and min(rows_seen["shrunk"]) < 16  # some rows left
    assert rows_seen["shrunk"] == sorted(rows_seen["shrunk"], reverse=True)
    width, filled = ids.shape[1], full_cache.get_seq_length()
    assert got_cache.get_seq_length() == filled and got_cache.layers[0].keys.shape[0] == 16
    left = 0
    for row, new in enumerate(full_ids[:, width:].tolist()):
        stop = width + next((i for i, t in enumerate(new) if t in stops), len(new))  # the stop token's position
        for full_layer, got_layer in zip(full_cache.layers, got_cache.layers, strict=True):
            held = slice(0, min(stop + 1, filled))
            assert torch.allclose(got_layer.keys[row, :, held], full_layer.keys[row, :, held], atol=1e-5)
            assert torch.allclose(got_layer.values[row, :, held], full_layer.values[row, :, held], atol=1e-5)
        got_after = got_cache.layers[-1].keys[row, :, stop + 1 : filled]  # [H, n, D] (layer 0 sees the pad embedding: zeros)
        zero = (got_after == 0).all(dim=-1).all(dim=0)  # [n] positions never written: the row had left
        kept = int(zero.long().argmax()) if bool(zero.any()) else zero.numel()
        assert bool(zero[kept:].all())  # once it left, nothing after
        want = full_cache.layers[-1].keys[row, :, stop + 1 : stop + 1 + kept]  # the pads it ran before leaving
        assert torch.allclose(got_after[:, :kept], want, atol=1e-5)
        left += kept < zero.numel()
    assert left > 0


def test_draw_by_cdf_samples_the_row_distribution():
    """20,000 draws from (0.5, 0.3, 0.2, 0): each frequency within 0.015 of its probability (4 standard
    errors: sqrt(0.5 * 0.5 / 20000) = 0.0035) and the zero-probability token never; a one-hot row
    always gives its token; a row that sums to 4 is scaled by its total."""
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0]).expand(20_000, 4)
    counts = torch.bincount(draw_by_cdf(probs), minlength=4)
    assert torch.allclose(counts / 20_000, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.015) and counts[3] == 0
    assert set(draw_by_cdf(torch.tensor([[0.0, 0.0, 1.0, 0.0]] * 100)).tolist()) == {2}
    unnormalized = draw_by_cdf(torch.tensor([[2.0, 0.0, 0.0, 2.0]] * 2_000))
    assert set(unnormalized.tolist()) == {0, 3} and abs(float((unnormalized == 0).float().mean()) - 0.5) < 0.05
    for broken in ([float("nan"), 0.5], [float("inf"), 0.5], [0.0, 0.0]):  # diverged logits are an error, not a token
        with pytest.raises(ValueError, match="sampling: a row's token probabilities are NaN, infinite or all zero"):
            draw_by_cdf(torch.tensor([[0.5, 0.5], broken]))


def _kv(batch, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=g), torch.randn(batch, 2, length, 4, generator=g)  # [B, H, L, D]


def test_reserved_layer_holds_what_dynamic_layer_holds():
    """Prefill of 3 positions, then steps of 1, 2 and 1 positions with capacity 5: the last step goes
    past the reservation (3 + 1 + 2 + 1 = 7 > 5) and the layer grows; at every step its keys and values
    equal transformers' concatenating layer's, and inside the reservation it writes in place."""
    dynamic = DynamicLayer()
    keys, values = _kv(2, 3, seed=0)
    dynamic.update(keys, values)
    reserved = ReservedLayer(keys, values, capacity=5)
    buffer = reserved.key_buffer.data_ptr()
    for step, new in enumerate((1, 2, 1)):
        k, v = _kv(2, new, seed=step + 1)
        want_k, want_v = dynamic.update(k, v)
        got_k, got_v = reserved.update(k, v)
        assert torch.equal(got_k, want_k) and torch.equal(got_v, want_v)
        assert reserved.get_seq_length() == dynamic.get_seq_length()
        if step < 2:  # 4, then 6 > 5 positions: in place, then grown
            assert (reserved.key_buffer.data_ptr() == buffer) == (step == 0)
    reserved.crop(-2)  # 7 → 5 positions
    reserved.batch_select_indices(torch.tensor([1, 1, 0]))
    assert torch.equal(reserved.keys, dynamic.keys[[1, 1, 0], :, :5])


def test_reserve_swaps_plain_attention_layers_only(tiny_model):
    out = tiny_model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
    cache = reserve(output_cache(out), capacity=10)
    assert all(type(layer) is ReservedLayer for layer in cache.layers)
    assert cache.get_seq_length() == 3 and cache.layers[0].key_buffer.shape[-2] == 10
    empty = DynamicCache()  # nothing filled: nothing to reserve
    assert reserve(empty, capacity=10) is empty and not any(isinstance(x, ReservedLayer) for x in empty.layers)


def test_engine_loop_equals_engine_generate(tiny_model):
    """The engine with the loop and with ``model.generate`` returns the same completions, log-probs
    and forced answers (prefix reuse, several chunks, one pass)."""
    prefixes = [[5, 6, 7, 8, 9, 10, 11], [20], [30, 31, 32]]
    answer = ForcedAnswer(close_id=1, after_close=(70,), after_budget=(72, 73, 1, 70), max_answer_tokens=4, stop_ids=(2,))
    params = SamplingParams(max_new_tokens=7, temperature=0.8, top_p=0.9, stop_token_ids=(1, 2), seed=5, logprobs=True)
    engines = {
        d: TransformersEngine(tiny_model, pad_token_id=PAD, max_batch_rows=4, decoder=d, draw="multinomial")
        for d in ("loop", "generate")
    }
    assert engines["loop"].sample(prefixes, 3, params) == engines["generate"].sample(prefixes, 3, params)
    with_answers = {d: e.sample_with_answers(prefixes, 3, params, answer) for d, e in engines.items()}
    assert with_answers["loop"] == with_answers["generate"]
    assert any(c.answer is not None for row in with_answers["loop"] for c in row)
