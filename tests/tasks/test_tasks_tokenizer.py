"""The local byte-level tokenizer: round trips, single-id special tokens, the chat template."""

import pytest
from transformers import AutoTokenizer

from anytime_reasoner.tasks.tokenizer import TokenizerSpec, build_tokenizer, load_tokenizer, save_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TokenizerSpec(vocab_size=400, corpus_problems=100))


@pytest.mark.parametrize(
    "text",
    [
        "Find $x$ such that \\frac{1}{2}x^2 = 8. ∑ ∫ √2 ≠ π — 世界 🙂 naïve",
        "  leading spaces, tabs\tand\r\nnewlines\n\n",
        "a=47 best=47\n...\n\n...\n\n</think>\n\n**Final Answer**\n\\boxed{83}",
    ],
)
def test_round_trip_of_arbitrary_text(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_digits_and_special_tokens_are_single_ids(tokenizer):
    for token in ("<think>", "</think>", "<|im_end|>", "<|endoftext|>", "<|im_start|>"):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert ids == [tokenizer.convert_tokens_to_ids(token)]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    # "12345" is five digit tokens.
    assert [tokenizer.decode([i]) for i in tokenizer.encode("12345", add_special_tokens=False)] == list("12345")
    # Think tokens survive skip_special_tokens (a grader counts </think>), eos does not.
    ids = tokenizer.encode("x</think>y<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "x</think>y"


def test_chat_template_ends_with_think(tokenizer):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids[-2:] == [tokenizer.convert_tokens_to_ids("<think>"), tokenizer.encode("\n")[0]]


def test_save_and_load_as_transformers_tokenizer(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path)
    text = "a=47 best=47\n</think>ü"
    for loaded in (AutoTokenizer.from_pretrained(str(tmp_path)), load_tokenizer(tmp_path)):
        assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
        assert loaded.eos_token_id == tokenizer.eos_token_id
        assert loaded.apply_chat_template(
            [{"role": "user", "content": "q"}], add_generation_prompt=True, tokenize=False
        ).endswith("<think>\n")


def test_vocabulary_is_small_and_deterministic(tokenizer):
    assert len(tokenizer) <= 400 + 5
    again = build_tokenizer(TokenizerSpec(vocab_size=400, corpus_problems=100))
    text = "c=83 best=83\ncheck best=83\n"
    assert again.encode(text) == tokenizer.encode(text)
