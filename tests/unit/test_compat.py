"""One test per transformers-version shim in `internvl.core.compat`, run on whatever release is installed
(the locked, the newest and the oldest sets all run them: `make test`, `make test-latest`, `make test-oldest`)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from internvl.core import compat


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def test_transformers_version_is_the_installed_release():
    import transformers

    assert ".".join(map(str, compat.transformers_version())) in transformers.__version__


def test_cache_arg_name_follows_the_rename():
    expected = "cache" if compat.transformers_version() >= (5, 24) else "past_key_values"
    assert compat.cache_arg_name() == expected


def test_cache_kwargs_drive_a_stock_model_without_deprecation(tiny_llama):
    ids = torch.tensor([[1, 2, 3, 4]])
    cache = compat.new_dynamic_cache(tiny_llama.config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = tiny_llama(input_ids=ids[:, :3], use_cache=True, **compat.cache_kwargs(cache))
        step = tiny_llama(input_ids=ids[:, 3:], use_cache=True, **compat.cache_kwargs(compat.output_cache(out)))
    assert compat.output_cache(step).get_seq_length() == 4
    full = tiny_llama(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(step.logits[:, -1], full[:, -1], rtol=1e-5, atol=1e-5)


def test_new_dynamic_cache_is_empty(tiny_llama):
    for config in (None, tiny_llama.config):
        assert compat.new_dynamic_cache(config).get_seq_length() == 0


def test_pop_cache_accepts_either_name_but_not_both():
    marker = object()
    assert compat.pop_cache({"past_key_values": marker}) is marker
    assert compat.pop_cache({"cache": marker}) is marker
    assert compat.pop_cache({}, past_key_values=marker) is marker
    assert compat.pop_cache({}) is None
    kwargs = {"cache": marker, "other": 1}
    compat.pop_cache(kwargs)
    assert kwargs == {"other": 1}
    with pytest.raises(ValueError, match="not both"):
        compat.pop_cache({"cache": marker}, past_key_values=object())


def test_model_output_names_the_cache_field_per_release():
    from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

    marker = object()
    for cls in (BaseModelOutputWithPast, CausalLMOutputWithPast):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = compat.model_output(cls, cache=marker)
        assert compat.output_cache(out) is marker
    assert compat.output_cache(None) is None


def test_split_generation_kwargs_folds_settings_and_keeps_inputs():
    from transformers import GenerationConfig

    base = GenerationConfig(max_new_tokens=5)
    config, rest = compat.split_generation_kwargs(
        base, {"max_new_tokens": 9, "num_beams": 2, "vision_hidden_states": 7}
    )
    assert (config.max_new_tokens, config.num_beams) == (9, 2)
    assert rest == {"vision_hidden_states": 7}
    assert base.to_dict() == GenerationConfig(max_new_tokens=5).to_dict()  # the caller's object is untouched


def test_tokenizer_load_kwargs(tmp_path):
    assert compat.tokenizer_load_kwargs(tmp_path) == {}  # no config file
    cfg = tmp_path / "tokenizer_config.json"
    cfg.write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    assert compat.tokenizer_load_kwargs(tmp_path) == {"legacy": True}
    cfg.write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": False}))
    assert compat.tokenizer_load_kwargs(tmp_path) == {}
    cfg.write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer"}))
    assert compat.tokenizer_load_kwargs(tmp_path) == {}
    cfg.write_bytes(b"\xff not json")
    assert compat.tokenizer_load_kwargs(tmp_path) == {}


def test_persist_tokenizer_flags_round_trip(tmp_path):
    from internvl.data.synthetic import build_tokenizer
    from internvl.inference.chat import load_tokenizer

    src = build_tokenizer(tmp_path / "src")
    tok = load_tokenizer(src)
    assert tok.legacy is True
    tok.save_pretrained(tmp_path / "out")
    compat.persist_tokenizer_flags(tok, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["legacy"] is True
    assert load_tokenizer(tmp_path / "out").legacy is True


def test_crop_cache_keeps_a_prefix():
    from internvl.core.compat import crop_cache, new_dynamic_cache

    cache = new_dynamic_cache()
    k = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(1, 2, 5, 3)
    cache.update(k, k + 1, 0)
    crop_cache(cache, 3)
    assert cache.get_seq_length() == 3
    with pytest.raises(ValueError, match="cannot crop a cache of 3 tokens to 4"):
        crop_cache(cache, 4)
