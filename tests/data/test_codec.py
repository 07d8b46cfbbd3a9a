"""TokenizerCodec (ids from the tokenizer, one-line errors) and the chat-template prompt."""

import pytest

from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.prompts import build_prompt_ids
from anytime_reasoner.data.schema import INSTRUCTION as PROMPT_SUFFIX
from anytime_reasoner.errors import UserError


def test_multi_token_think_end_is_a_one_line_error(tiny_tokenizer):
    with pytest.raises(UserError) as err:
        TokenizerCodec.from_tokenizer(tiny_tokenizer, think_end="</thinking>")
    # "</thinking>" is 11 bytes → 11 tokens in the byte-level tokenizer
    assert str(err.value).startswith("model.think_end: '</thinking>' is 11 tokens")
    assert "\n" not in str(err.value)


def test_prompt_appends_think_opener(tiny_tokenizer):
    codec = TokenizerCodec.from_tokenizer(tiny_tokenizer)
    ids = build_prompt_ids(codec, "1+1?")
    # template: "<|user|>{content}\n<|assistant|>" → the helper appends "<think>\n"
    assert codec.decode(ids) == "<|user|>1+1?" + PROMPT_SUFFIX + "\n<|assistant|><think>\n"
    assert ids[-2:] == [258, 10]


def test_prompt_keeps_template_opener(tiny_tokenizer):
    codec = TokenizerCodec.from_tokenizer(tiny_tokenizer)
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<eos>", pad_token="<pad>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}<|assistant|><think>\n"
    ids = build_prompt_ids(TokenizerCodec.from_tokenizer(tok), "q")
    assert codec.decode(ids) == "q" + PROMPT_SUFFIX + "<|assistant|><think>\n"  # not doubled
