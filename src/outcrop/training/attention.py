"""Attention over packed rows, one example at a time.

A training step lays all its examples end to end in a single row (no padding at all). The
stock attention then works over the whole row — its cost grows with the square of the
*row*: at batch 8 x ~140 tokens that was 29% of a step's time on CPU. (And it only keeps
the examples apart when the forward is called without a KV cache: transformers detects
packed rows from restarting position ids only then, and a model whose config says
``use_cache`` makes one by default.) Here each example gets its own causal
``scaled_dot_product_attention`` over views of the row — the cost is the sum of the
squares of the examples, no mask is built, and there is nothing to detect.

For short bf16 examples the attention is spelled out as two batched matmuls and a softmax:
PyTorch's CPU flash kernel is built for long sequences, and below ~300 tokens its bf16
backward pass takes about twice as long (140 tokens, 9 heads: 1.7 ms vs 3.5 ms per
forward+backward).

Registered with transformers' ``AttentionInterface`` under :data:`NAME`; the trainer
passes ``packed_segments=((start, length), ...)`` through the model's forward kwargs.
Without segments (a plain forward) the row is one causal sequence.
"""

from __future__ import annotations

from typing import Any

NAME = "outcrop_packed"
SMALL = 256
"""Examples up to this many tokens use :func:`_small_attention` in bf16."""

Segments = tuple[tuple[int, int], ...]


def packed_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    packed_segments: Segments | None = None,
    **_: Any,
):
    """``query`` (1, H, N, D), ``key``/``value`` (1, H_kv, N, D) -> ((1, N, H, D), None)."""
    import torch
    import torch.nn.functional as F

    if attention_mask is not None:
        raise ValueError("packed attention takes segments, not a mask")
    n = query.shape[2]
    if key.shape[2] != n:
        raise ValueError("packed attention is for training: no KV cache, keys = queries")
    segments = packed_segments or ((0, n),)
    if query.shape[0] != 1 and len(segments) > 1:
        raise ValueError("packed attention expects a single packed row")
    gqa = query.shape[1] != key.shape[1]
    bf16 = query.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")
    outs = []
    for start, length in segments:
        q = query[:, :, start : start + length]
        k = key[:, :, start : start + length]
        v = value[:, :, start : start + length]
        mask = None
        small = length <= SMALL and bf16 and not dropout
        if small or (sliding_window and length > sliding_window):
            i = torch.arange(length, device=query.device)
            near = i[:, None] - i[None, :]
            mask = near >= 0
            if sliding_window:
                mask &= near < sliding_window
        if small:
            outs.append(_small_attention(q, k, v, scaling, mask))
            continue
        outs.append(
            F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=mask is None,
                dropout_p=dropout,
                scale=scaling,
                enable_gqa=gqa,
            )  # fmt: skip
        )
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _small_attention(q: Any, k: Any, v: Any, scale: float | None, mask: Any):
    """Causal attention as matmuls; query heads grouped over their shared key/value head."""
    import torch

    b, heads, length, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    scores = q.view(b, kv_heads, group, length, dim) @ k.unsqueeze(2).transpose(-1, -2)
    scores = scores * (scale if scale is not None else dim**-0.5)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return (weights @ v.unsqueeze(2)).view(b, heads, length, dim)


def supports(config: Any) -> bool:
    """Causal models whose attention is plain scaled dot product (optional window)."""
    return (
        not getattr(config, "attn_logit_softcapping", None)
        and getattr(config, "is_causal", True)
        and not getattr(config, "use_bidirectional_attention", False)
    )


def use_packed_attention(model: Any) -> bool:
    """Switch ``model`` (and its sub-configs) to packed attention when it supports it."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not supports(base.config):
        return False
    base.set_attn_implementation(NAME)
    return True
