"""The training loop: examples -> token ids with target masks -> packed rows -> LoRA/full
fine-tune with AdamW, a checkpoint per epoch, and a loss on the positions that need one.

Why it is faster than a generic Trainer on CPU:

* **packing without padding** — a step's examples are laid end to end in one row, with
  position ids restarting per example; no padding to the longest example.
* **attention per example** (:mod:`outcrop.training.attention`) — each example attends
  only to itself, so attention costs the sum of the squares of the example lengths, not
  the square of the row, and no mask is materialized. (transformers' own path attends
  across packed examples unless the forward runs without a KV cache — see that module.)
* **bf16 where the CPU has it** — frozen weights stored in bf16, autocast for compute,
  fp32 adapters/optimizer state and an fp32 loss; fp32 on CPUs without native bf16.
* **loss where it is taken** — the LM head runs only on positions whose next token is a
  target (completion tokens for FINE_TUNING), so the ``hidden x vocab`` projection and its
  softmax are not computed for prompt tokens at all.
* a plain loop: no callbacks, no collator objects, no per-step host syncs beyond the loss.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcrop.service.prompt import compile_template
from outcrop.training.hyper import HyperParameters

# --------------------------------------------------------------------------- rendering


class ExampleError(ValueError):
    """A record that cannot be trained on; the message names its line."""


class Renderer:
    """Turns a record into ``(text, is_target)`` segments, exactly as serving renders it.

    Chat models: the GGUF's chat template (what :mod:`outcrop.service.prompt` renders at
    inference); the target is each assistant turn. Completion models: the same ``Q:``/``A:``
    transcript serving uses for base models; the target is each answer and a final EOS.
    """

    def __init__(
        self,
        template: str | None,
        completion_only: bool,
        bos_text: str,
        eos_text: str,
        default_system: str | None,
    ) -> None:
        self.template = None if completion_only or not template else compile_template(template)
        self.bos_text = bos_text
        self.eos_text = eos_text
        self.default_system = default_system

    def _chat(self, messages: list[dict[str, str]], generation: bool) -> str:
        assert self.template is not None
        return self.template.render(
            messages=messages,
            add_generation_prompt=generation,
            bos_token=self.bos_text,
            eos_token=self.eos_text,
        )

    def segments(self, record: dict[str, Any]) -> list[tuple[str, bool]]:
        if "text" in record:
            return [(record["text"], True)]
        system = record.get("system")
        if system is None:
            system = self.default_system
        turns = record["turns"]
        if self.template is None:
            return self._transcript(system, turns)
        head = [{"role": "system", "content": system}] if system else []
        messages = head + [{"role": r, "content": t} for r, t in turns]
        segments: list[tuple[str, bool]] = []
        done = ""
        for k, (role, _) in enumerate(turns):
            if role != "assistant":
                continue
            upto = messages[: len(head) + k]
            before = self._chat(upto, generation=True)
            after = self._chat(upto + [messages[len(head) + k]], generation=False)
            if not before.startswith(done) or not after.startswith(before):
                raise ValueError("the chat template does not render turns incrementally")
            segments += [(before[len(done) :], False), (after[len(before) :], True)]
            done = after
        return segments

    def _transcript(self, system: str | None, turns: list[list[str]]) -> list[tuple[str, bool]]:
        segments: list[tuple[str, bool]] = []
        pending = system.strip() + "\n\n" if system else ""
        for role, text in turns:
            if role == "user":
                pending += ("\n" if segments else "") + f"Q: {text.strip()}\nA:"
            else:
                segments += [(pending, False), (" " + text.strip(), True)]
                pending = ""
        segments.append((self.eos_text, True))
        return segments


@dataclass
class Example:
    ids: list[int]
    targets: list[bool]
    """``targets[t]``: token ``t`` is predicted (and counted in the loss)."""
    line: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def tokenize_records(
    records: Sequence[dict[str, Any]],
    renderer: Renderer,
    tokenizer,  # noqa: ANN001
    bos_id: int | None,
    add_bos: bool,
    max_len: int,
    eos_id: int | None = None,
    what: str = "training data",
) -> list[Example]:
    """Token ids and target masks. Fine-tuning examples longer than ``max_len`` are an
    error naming the line; continued pre-training text is cut into ``max_len`` chunks."""
    out: list[Example] = []
    for record in records:
        line = record.get("line", 0)
        ids: list[int] = []
        targets: list[bool] = []
        segments = renderer.segments(record)
        if add_bos and bos_id is not None and not segments[0][0].startswith(renderer.bos_text):
            ids.append(bos_id)
            targets.append(False)
        for text, is_target in segments:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            targets += [is_target] * len(piece)
        if "text" in record:
            if eos_id is not None:
                ids.append(eos_id)
                targets.append(True)
            for start in range(0, len(ids), max_len):
                chunk = Example(
                    ids[start : start + max_len], targets[start : start + max_len], line
                )
                chunk.targets[0] = False
                if len(chunk) > 1:
                    out.append(chunk)
            continue
        if len(ids) > max_len:
            raise ExampleError(
                f"The {what} record on line {line} is {len(ids)} tokens long, more than "
                f"maxSequenceLength {max_len}."
            )
        if not any(targets[1:]):
            raise ExampleError(f"The {what} record on line {line} has no completion tokens.")
        out.append(Example(ids, targets, line))
    return out


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """One step's examples as tensors of shape (rows, width).

    With packed attention there is a single row holding every example end to end, and
    ``segments`` says where each starts and how long it is. Otherwise each example has a
    row of its own, right-padded: causal attention never lets a real token see the padding
    after it, so no mask is needed, and padding carries no targets.
    """

    ids: Any
    pos: Any
    tgt: Any
    segments: tuple[tuple[int, int], ...] | None
    tokens: int
    """Real (non-padding) tokens."""


def collate(examples: Sequence[Example], pad_id: int, packed: bool = True) -> Batch:
    """input_ids, position_ids (restarting per example) and target mask."""
    import torch

    if packed:
        ids = torch.tensor([[t for e in examples for t in e.ids]], dtype=torch.long)
        pos = torch.tensor([[i for e in examples for i in range(len(e))]], dtype=torch.long)
        tgt = torch.tensor([[m for e in examples for m in e.targets]], dtype=torch.bool)
        starts = [0]
        for e in examples:
            starts.append(starts[-1] + len(e))
        segments = tuple((a, b - a) for a, b in zip(starts, starts[1:], strict=False))
        # A first token has nothing of its own example before it: predicting it from the
        # previous example's last token would train across examples.
        tgt[0, starts[:-1]] = False
        return Batch(ids, pos, tgt, segments, starts[-1])
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    tgt = torch.zeros((len(examples), width), dtype=torch.bool)
    for r, e in enumerate(examples):
        ids[r, : len(e)] = torch.tensor(e.ids)
        tgt[r, : len(e)] = torch.tensor(e.targets)
    pos = torch.arange(width).expand(len(examples), width)
    return Batch(ids, pos, tgt, None, sum(len(e) for e in examples))


# --------------------------------------------------------------------------- model


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""/proc/cpuinfo flags of CPUs that multiply bfloat16 in hardware (x86 AVX512-BF16 and
AMX; Arm's ``bf16``). AVX-512 alone only emulates it — no faster than fp32 — although
PyTorch's own ``_is_mkldnn_bf16_supported`` says yes there."""


def compute_dtype(precision: str, flags: frozenset[str] | None = None):  # noqa: ANN201
    """``bf16`` where the CPU multiplies bfloat16 natively (4.7x fp32's matmul speed on
    the reference machine), else fp32; ``precision`` forces one."""
    import torch

    from outcrop.models.formats import cpu_flags

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    native = bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))
    return torch.bfloat16 if native else torch.float32


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every attention and MLP projection of a block."""


def apply_method(model, hp: HyperParameters):  # noqa: ANN001
    """Wrap with LoRA adapters on every linear layer of the blocks, or train it all.

    With LoRA in bf16 the frozen base weights are stored in bf16 (half the memory, no cast
    per step); the adapters stay fp32 (peft keeps adapter weights in fp32), and so do all
    weights of a full fine-tune — autocast computes in bf16, the optimizer updates fp32.
    """
    import torch

    from outcrop.training.attention import use_packed_attention

    use_packed_attention(model)
    if hp.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    if compute_dtype(hp.precision) == torch.bfloat16:
        # Parameters only: buffers such as RoPE's inv_freq must stay fp32, or positions
        # drift (2^-9 relative error: ~1 rad for the fast frequencies at position 500).
        for p in model.parameters():
            p.data = p.data.to(torch.bfloat16)
    config = LoraConfig(
        r=hp.lora_rank,
        lora_alpha=hp.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config, autocast_adapter_dtype=True)


def _causal_parts(model):  # noqa: ANN001
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return base.get_decoder(), base.get_output_embeddings(), softcap


LOGIT_CHUNK = 1 << 25
"""Logits computed at once (128 MB in fp32). Gemma's 262k-token vocabulary makes a step's
full ``targets x vocab`` logits several GB, three times over with softmax and gradient."""


def _head_loss(head, softcap: float | None, h, labels):  # noqa: ANN001, ANN202
    import torch
    import torch.nn.functional as F

    logits = head(h).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, labels, reduction="sum")


def target_loss(model, batch: Batch):  # noqa: ANN001
    """Sum of cross-entropy over target tokens, and their count.

    The LM head is applied only to the positions that predict a target token, a chunk of
    positions at a time when the logits would be large: each chunk is recomputed in the
    backward pass instead of kept (activation checkpointing), so memory holds one chunk's
    logits, not all of them.
    """
    from torch.utils.checkpoint import checkpoint

    decoder, head, softcap = _causal_parts(model)
    extra = {"packed_segments": batch.segments} if batch.segments else {}
    hidden = decoder(
        input_ids=batch.ids, position_ids=batch.pos, use_cache=False, **extra
    ).last_hidden_state
    select = batch.tgt[:, 1:]
    h = hidden[:, :-1][select]
    labels = batch.ids[:, 1:][select]
    n = int(select.sum())
    rows = max(1, LOGIT_CHUNK // head.weight.shape[0])
    if n <= rows:
        return _head_loss(head, softcap, h, labels), n
    total = 0
    for i in range(0, n, rows):
        part = (head, softcap, h[i : i + rows], labels[i : i + rows])
        total = total + checkpoint(_head_loss, *part, use_reentrant=False)
    return total, n


# --------------------------------------------------------------------------- loop


@dataclass
class StepReport:
    epoch: int
    step: int
    total_steps: int
    loss: float
    tokens: int
    seconds: float


@dataclass
class TrainState:
    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    step_metrics: list[tuple[int, int, float]] = field(default_factory=list)
    validation_metrics: list[tuple[int, int, float]] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        model,  # noqa: ANN001
        hp: HyperParameters,
        pad_id: int,
        checkpoint: Path | None = None,
    ) -> None:
        import torch

        from outcrop.training.attention import NAME

        self.model = model
        self.hp = hp
        self.pad_id = pad_id
        self.checkpoint = checkpoint
        self.dtype = compute_dtype(hp.precision)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.packed = base.config._attn_implementation == NAME
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=hp.learning_rate, weight_decay=0.0, foreach=True
        )
        warm = hp.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / (warm + 1)) if warm else 1.0
        )
        self.state = TrainState()

    def steps_per_epoch(self, n_examples: int) -> int:
        return math.ceil(n_examples / self.hp.batch_size)

    def batches(self, examples: Sequence[Example], epoch: int):
        order = list(examples)
        random.Random(self.hp.seed * 1000 + epoch).shuffle(order)
        bs = self.hp.batch_size
        for i in range(0, len(order), bs):
            yield collate(order[i : i + bs], self.pad_id, self.packed)

    def _loss(self, batch: Batch):  # noqa: ANN202
        import torch

        bf16 = self.dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return target_loss(self.model, batch)

    def train_step(self, batch: Batch) -> tuple[float, int]:
        self.model.train()
        loss_sum, n = self._loss(batch)
        loss = loss_sum / max(n, 1)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), n

    def evaluate(self, examples: Sequence[Example]) -> float:
        import torch

        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(examples), self.hp.batch_size):
                chunk = examples[start : start + self.hp.batch_size]
                s, n = self._loss(collate(chunk, self.pad_id, self.packed))
                total += float(s)
                count += n
        return total / max(count, 1)

    def fit(
        self,
        train: Sequence[Example],
        validation: Sequence[Example] = (),
        on_step: Callable[[StepReport], None] | None = None,
        on_epoch: Callable[[TrainState], None] | None = None,
    ) -> TrainState:
        total = self.steps_per_epoch(len(train)) * self.hp.epoch_count
        for epoch in range(self.state.epoch, self.hp.epoch_count):
            losses = []
            for batch in self.batches(train, epoch):
                started = time.perf_counter()
                loss, _ = self.train_step(batch)
                self.state.step += 1
                losses.append(loss)
                self.state.step_metrics.append((self.state.step, epoch + 1, loss))
                if on_step:
                    on_step(
                        StepReport(
                            epoch + 1, self.state.step, total, loss, batch.tokens,
                            time.perf_counter() - started,
                        )
                    )  # fmt: skip
            self.state.epoch = epoch + 1
            self.state.epoch_losses.append(sum(losses) / max(len(losses), 1))
            if validation:
                self.state.validation_metrics.append(
                    (self.state.step, epoch + 1, self.evaluate(validation))
                )
            self.save_checkpoint()
            if on_epoch:
                on_epoch(self.state)
        return self.state

    # ------------------------------------------------------------------ checkpoints

    def _trainable_state(self) -> dict[str, Any]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> None:
        import torch

        if self.checkpoint is None:
            return
        blob = {
            "trainable": self._trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": self.state.__dict__,
            "hp": self.hp.to_dict(),
        }
        tmp = self.checkpoint.with_name(f".{self.checkpoint.name}.tmp-{os.getpid()}")
        torch.save(blob, tmp)
        os.replace(tmp, self.checkpoint)

    def resume(self) -> bool:
        """Continue from the last checkpoint, if one exists for these hyperparameters."""
        import torch

        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        blob = torch.load(self.checkpoint, weights_only=False)
        saved = {"precision": "auto", **blob.get("hp", {})}  # written before precision existed
        if saved != self.hp.to_dict():
            return False
        named = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in blob["trainable"].items():
                named[name].copy_(value)
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self.state = TrainState(**blob["state"])
        return True


def merged_changes(
    model,  # noqa: ANN001
    hp: HyperParameters,
    originals: Callable[[set[str]], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """HF name -> numpy weight for every tensor training changed (LoRA merged in).

    LoRA: each adapted weight is its fp32 original (from ``originals(names)``, when given)
    plus the adapter's fp32 update — not the bf16 copy training ran on, whose rounding
    would otherwise be baked into the export.
    """
    if hp.method == "lora":
        from peft.tuners.lora import LoraLayer

        deltas = {
            name.removeprefix("base_model.model.") + ".weight": module
            for name, module in model.named_modules()
            if isinstance(module, LoraLayer) and hasattr(module, "get_delta_weight")
        }
        base = dict(originals(set(deltas))) if originals else {}
        out = {}
        for key, module in deltas.items():
            weight = base.get(key)
            if weight is None:
                weight = module.get_base_layer().weight
            delta = module.get_delta_weight(module.active_adapters[0])
            out[key] = (weight.detach().float() + delta.detach().float()).numpy()
        return out
    tied = getattr(model.config, "tie_word_embeddings", False)
    return {
        k: v.detach().numpy()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
