"""Attention over packed rows, one example at a time.

A training step lays all its examples end to end in a single row (no padding at all). The
stock SDPA path then attends over the whole row with a block-diagonal mask that it builds
densely, so its cost grows with the square of the *row*: at batch 8 x ~140 tokens that was
29% of a step's time on CPU, almost all of it spent on pairs the mask throws away. Here
each example gets its own causal ``scaled_dot_product_attention`` over views of the row —
the cost is the sum of the squares of the examples, and no mask is built.

Registered with transformers' ``AttentionInterface`` under :data:`NAME`; the trainer
passes ``packed_segments=((start, length), ...)`` through the model's forward kwargs.
Without segments (a plain forward) the row is one causal sequence.
"""

from __future__ import annotations

from typing import Any

NAME = "outcrop_packed"

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
    segments = packed_segments or ((0, n),)
    if query.shape[0] != 1 and len(segments) > 1:
        raise ValueError("packed attention expects a single packed row")
    gqa = query.shape[1] != key.shape[1]
    outs = []
    for start, length in segments:
        q = query[:, :, start : start + length]
        k = key[:, :, start : start + length]
        v = value[:, :, start : start + length]
        mask = None
        if sliding_window and length > sliding_window:
            i = torch.arange(length, device=query.device)
            near = i[:, None] - i[None, :]
            mask = (near >= 0) & (near < sliding_window)
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


def supports(config: Any) -> bool:
    """Models whose attention is plain scaled dot product (with an optional window)."""
    return not getattr(config, "attn_logit_softcapping", None)


def use_packed_attention(model: Any) -> bool:
    """Switch ``model`` (and its sub-configs) to packed attention when it supports it."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not supports(base.config):
        return False
    base.set_attn_implementation(NAME)
    return True
