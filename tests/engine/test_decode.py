"""engine/decode.py: the sampling loop samples exactly what ``model.generate`` samples, and the
reserved KV cache holds exactly what transformers' growing cache holds."""

import pytest
import torch
from transformers import DynamicCache, LogitsProcessorList
from transformers.cache_utils import DynamicLayer

from anytime_reasoner.engine.base import ForcedAnswer, SamplingParams
from anytime_reasoner.engine.decode import ReservedLayer, decode, output_cache, position_ids, reserve
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
        got, _ = decode(tiny_model, ids, mask, cache, params, LogitsProcessorList(), PAD)
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
        by_decode, _ = decode(tiny_model, ids, mask, None, params, LogitsProcessorList([recorders[1]]), PAD)
    assert torch.equal(by_decode, by_generate)
    assert torch.allclose(recorders[1].finish(by_decode), recorders[0].finish(by_generate), atol=1e-6)


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
    engines = {d: TransformersEngine(tiny_model, pad_token_id=PAD, max_batch_rows=4, decoder=d) for d in ("loop", "generate")}
    assert engines["loop"].sample(prefixes, 3, params) == engines["generate"].sample(prefixes, 3, params)
    with_answers = {d: e.sample_with_answers(prefixes, 3, params, answer) for d, e in engines.items()}
    assert with_answers["loop"] == with_answers["generate"]
    assert any(c.answer is not None for row in with_answers["loop"] for c in row)
