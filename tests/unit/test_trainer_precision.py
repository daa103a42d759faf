"""bf16 training keeps what must stay exact: RoPE buffers, the export's fp32 originals,
and the choice of precision follows the CPU's real bf16 support. Tiny random models."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from outcrop.training.hyper import HyperParameters  # noqa: E402
from outcrop.training.trainer import (  # noqa: E402
    Example,
    apply_method,
    collate,
    compute_dtype,
    merged_changes,
)


def _llama(state=None):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    if state is not None:
        model.load_state_dict(state)
    return model


def _hp(precision: str) -> HyperParameters:
    return HyperParameters(method="lora", lora_rank=4, lora_alpha=8, precision=precision)


def test_bf16_lora_casts_frozen_weights_but_not_rope_or_adapters():
    model = apply_method(_llama(), _hp("bf16"))
    rope = [b for n, b in model.named_buffers() if n.endswith("inv_freq")]
    assert rope and all(b.dtype == torch.float32 for b in rope)
    for name, p in model.named_parameters():
        expected = torch.float32 if "lora_" in name else torch.bfloat16
        assert p.dtype == expected, name


def test_lora_export_adds_the_update_to_the_fp32_originals():
    original = {k: v.clone() for k, v in _llama().state_dict().items()}
    trained = apply_method(_llama(original), _hp("bf16"))
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    # the same adapters on an fp32 copy, merged by peft itself: the reference
    reference = apply_method(_llama(original), _hp("fp32"))
    lora_state = {k: v for k, v in trained.state_dict().items() if "lora_" in k}
    reference.load_state_dict(lora_state, strict=False)
    expected = reference.merge_and_unload().state_dict()

    def originals(names):
        return {k: original[k] for k in names}

    exported = merged_changes(trained, _hp("bf16"), originals)
    assert len(exported) == 2 * 7  # 2 layers x 7 adapted projections
    for key, value in exported.items():
        assert torch.allclose(torch.from_numpy(value), expected[key], atol=1e-6), key
        assert not torch.equal(torch.from_numpy(value), original[key]), key  # it trained


def test_auto_precision_follows_native_bf16_flags():
    assert compute_dtype("auto", frozenset({"avx512f", "avx512bw", "avx512_bf16"})) == (
        torch.bfloat16
    )
    assert compute_dtype("auto", frozenset({"avx512f", "avx512bw", "avx2"})) == torch.float32
    assert compute_dtype("auto", frozenset({"asimd", "bf16"})) == torch.bfloat16
    assert compute_dtype("fp32", frozenset({"amx_bf16"})) == torch.float32
    assert compute_dtype("bf16", frozenset()) == torch.bfloat16


def test_no_example_is_predicted_from_the_one_before_it():
    exs = [Example([1, 2, 3], [False, True, True]), Example([4, 5], [True, True])]
    batch = collate(exs, pad_id=0)
    assert batch.tgt[0].tolist() == [False, True, True, False, True]
