"""Packed training rows must train exactly what each example alone would.

Tiny randomly initialized models (no download): the loss and gradients of one packed row
with per-example attention equal those of the examples run one by one through the stock
transformers attention. Gemma 3's sliding-window layers are covered with a window shorter
than the examples.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from outcrop.training.attention import use_packed_attention  # noqa: E402
from outcrop.training.trainer import Example, collate, target_loss  # noqa: E402


def _llama():
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _gemma3():
    config = transformers.Gemma3TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=64,
    )  # fmt: skip
    return transformers.Gemma3ForCausalLM(config)


def _examples() -> list[Example]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (9, 4, 12, 6):
        ids = torch.randint(1, 64, (n,), generator=g).tolist()
        out.append(Example(ids, [False] * (n // 2) + [True] * (n - n // 2)))
    return out


def _loss_and_grads(model, batches):
    model.zero_grad()
    total, count = 0, 0
    for batch in batches:
        s, n = target_loss(model, batch)
        total, count = total + s, count + n
    (total / count).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(total.detach() / count), grads


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("make", [_llama, _gemma3], ids=["llama", "gemma3-sliding"])
def test_packed_row_equals_examples_one_by_one(make, dtype):
    """fp32 must match exactly; bf16 (the matmul path for short examples) to its precision."""
    torch.manual_seed(0)
    model = make().to(getattr(torch, dtype))
    model.set_attn_implementation("eager")
    exs = _examples()
    ref_loss, ref_grads = _loss_and_grads(model, [collate([e], 0) for e in exs])

    assert use_packed_attention(model)
    loss, grads = _loss_and_grads(model, [collate(exs, 0)])
    if dtype == "bfloat16":
        assert loss == pytest.approx(ref_loss, rel=2e-2)
        return
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for name, g in ref_grads.items():
        assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-6), name


def test_padded_rows_equal_examples_one_by_one():
    torch.manual_seed(0)
    model = _llama()
    model.set_attn_implementation("eager")
    exs = _examples()
    ref_loss, _ = _loss_and_grads(model, [collate([e], 0) for e in exs])
    loss, _ = _loss_and_grads(model, [collate(exs, 0, packed=False)])
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_chunked_loss_equals_the_whole(monkeypatch):
    import outcrop.training.trainer as trainer

    torch.manual_seed(0)
    model = _llama()
    use_packed_attention(model)
    batch = collate(_examples(), 0)
    whole_loss, whole = _loss_and_grads(model, [batch])
    monkeypatch.setattr(trainer, "LOGIT_CHUNK", 3 * 64)  # 3 positions per chunk
    loss, grads = _loss_and_grads(model, [batch])
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    for name, g in whole.items():
        assert torch.allclose(grads[name], g, rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("window", [None, 5])
def test_small_bf16_attention_matches_the_flash_kernel(window):
    from outcrop.training.attention import _small_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, 12, 8, generator=g) for h in (4, 2, 2))
    i = torch.arange(12)
    mask = (i[:, None] - i[None, :]) >= 0
    if window:
        mask &= (i[:, None] - i[None, :]) < window
    ours = _small_attention(q, k, v, 0.3, mask)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, scale=0.3, enable_gqa=True
    )
    assert torch.allclose(ours, ref, atol=1e-5)
