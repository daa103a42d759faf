"""Hyperparameters under Bedrock's names, as Bedrock sends them: a map of strings.

Bedrock's own (documented ranges for its text models):

==========================  =======  ==============  ==========
name                        type     range           default
==========================  =======  ==============  ==========
epochCount                  int      1 .. 10         2
batchSize                   int      1 .. 64         8
learningRate                float    0 < lr <= 1     0.0002
learningRateWarmupSteps     int      0 .. 250        0
==========================  =======  ==============  ==========

outcrop's own: ``method`` (``lora`` | ``full``, default ``lora``), ``loraRank`` (1 .. 256,
default 16), ``loraAlpha`` (1 .. 1024, default 2 x rank), ``maxSequenceLength`` (16 .. the
base model's context, default 512), ``seed`` (default 42), ``precision`` (``auto`` |
``bf16`` | ``fp32``, default ``auto``: bf16 compute where the CPU multiplies bfloat16
natively, fp32 otherwise; adapters, optimizer state and loss stay fp32 either way).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from outcrop.errors import ValidationError

_INT_RANGES: dict[str, tuple[int, int]] = {
    "epochCount": (1, 10),
    "batchSize": (1, 64),
    "learningRateWarmupSteps": (0, 250),
    "loraRank": (1, 256),
    "loraAlpha": (1, 1024),
    "seed": (0, 2**31 - 1),
}
KNOWN = (
    "epochCount",
    "batchSize",
    "learningRate",
    "learningRateWarmupSteps",
    "method",
    "loraRank",
    "loraAlpha",
    "maxSequenceLength",
    "seed",
    "precision",
)
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class HyperParameters:
    epoch_count: int = 2
    batch_size: int = 8
    learning_rate: float = 2e-4
    warmup_steps: int = 0
    method: str = "lora"
    lora_rank: int = 16
    lora_alpha: int = 32
    max_sequence_length: int = 512
    seed: int = 42
    precision: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_bedrock(self) -> dict[str, str]:
        """The effective values, under the wire names (what Get*Job reports)."""
        out = {
            "epochCount": str(self.epoch_count),
            "batchSize": str(self.batch_size),
            "learningRate": repr(self.learning_rate),
            "learningRateWarmupSteps": str(self.warmup_steps),
            "method": self.method,
            "maxSequenceLength": str(self.max_sequence_length),
            "precision": self.precision,
        }
        if self.method == "lora":
            out["loraRank"] = str(self.lora_rank)
            out["loraAlpha"] = str(self.lora_alpha)
        return out


def _bad(name: str, value: str, constraint: str) -> ValidationError:
    return ValidationError(
        f"Hyperparameter {name} has an invalid value {value!r}: it must be {constraint}."
    )


def parse_hyperparameters(raw: dict[str, Any] | None, context_length: int) -> HyperParameters:
    """Check ``raw`` against the documented ranges; unknown names are rejected."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise ValidationError(
            f"Unknown hyperparameter(s) {', '.join(unknown)}; supported: {', '.join(KNOWN)}."
        )
    values: dict[str, Any] = {}
    for name, (low, high) in {
        **_INT_RANGES,
        "maxSequenceLength": (16, context_length),
    }.items():
        if name not in raw:
            continue
        text = str(raw[name]).strip()
        try:
            value = int(text)
        except ValueError:
            raise _bad(name, text, f"an integer from {low} to {high}") from None
        if not low <= value <= high:
            raise _bad(name, text, f"an integer from {low} to {high}")
        values[name] = value
    if "learningRate" in raw:
        text = str(raw["learningRate"]).strip()
        try:
            lr = float(text)
        except ValueError:
            raise _bad("learningRate", text, "a number greater than 0 and at most 1") from None
        if not 0.0 < lr <= 1.0:
            raise _bad("learningRate", text, "a number greater than 0 and at most 1")
        values["learningRate"] = lr
    method = str(raw.get("method", "lora")).strip().lower()
    if method not in ("lora", "full"):
        raise _bad("method", str(raw["method"]), "one of lora, full")
    precision = str(raw.get("precision", "auto")).strip().lower()
    if precision not in PRECISIONS:
        raise _bad("precision", str(raw["precision"]), "one of " + ", ".join(PRECISIONS))
    rank = values.get("loraRank", 16)
    return HyperParameters(
        epoch_count=values.get("epochCount", 2),
        batch_size=values.get("batchSize", 8),
        learning_rate=values.get("learningRate", 2e-4 if method == "lora" else 2e-5),
        warmup_steps=values.get("learningRateWarmupSteps", 0),
        method=method,
        lora_rank=rank,
        lora_alpha=values.get("loraAlpha", 2 * rank),
        max_sequence_length=values.get("maxSequenceLength", min(512, context_length)),
        seed=values.get("seed", 42),
        precision=precision,
    )
