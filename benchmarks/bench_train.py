"""Training throughput: outcrop's trainer vs a plain Hugging Face Trainer + peft baseline.

The same LoRA job — base model, examples, batch size, sequence length, steps, LoRA config,
learning rate, torch threads — runs through both in one process, and the script prints
real (non-padding) tokens per second for each and the ratio. The data are instruction
pairs of varied length (as real data are), the loss is on completion tokens only in both.

    python benchmarks/bench_train.py [--data-dir DIR] [--model ID] [--steps 8]
                                     [--batch-size 8] [--seq-len 512] [--threads 1]
                                     [--rounds 2] [--headline-only]

The baseline is what the Hugging Face docs recommend for this: ``Trainer`` with
``DataCollatorForSeq2Seq`` (dynamic padding to the longest example of each batch, labels
-100 on prompt and padding), peft LoRA on the same modules, constant learning rate, fp32
(its default). The headline ratio is outcrop at its default precision (``auto``: bf16 on
CPUs that multiply bf16 natively) against that. Where bf16 is native, two more runs say
where the gain comes from: outcrop forced to fp32 (same precision as the baseline), and
the baseline with ``bf16=True`` (same precision as outcrop). Rounds alternate all runs.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

WORDS = (
    "the a rock layer of sandstone shale limestone river valley cliff formed over "
    "millions years when sea level rose fell and sediment settled in thin beds that "
    "geologists read like pages of a book each band records climate water depth life"
).split()


def synthetic_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    return [
        {
            "system": None,
            "turns": [["user", text(8, 160)], ["assistant", text(4, 40)]],
            "line": i + 1,
        }
        for i in range(n)
    ]


def load(args):
    from outcrop.models.catalog import Catalog
    from outcrop.models.store import ModelStore
    from outcrop.settings import Settings
    from outcrop.training.model_io import GgufInfo, load_base

    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    card = Catalog().get(args.model)
    path = ModelStore(settings.data_dir).ensure(card, progress=True)
    cache = settings.data_dir / "cache" / "hf"
    load_base(path, cache)  # convert once, outside the timings
    return card, path, cache, GgufInfo.read(path)


def examples(args, card, path, cache, info):
    from outcrop.training.model_io import load_base
    from outcrop.training.trainer import Renderer, tokenize_records

    _, tok = load_base(path, cache)
    renderer = Renderer(
        info.chat_template, card.chat_template == "completion",
        tok.convert_ids_to_tokens(info.bos_id) if info.bos_id is not None else "",
        tok.convert_ids_to_tokens(info.eos_id) if info.eos_id is not None else "",
        card.default_system,
    )  # fmt: skip
    records = synthetic_records(args.steps * args.batch_size)
    return tok, tokenize_records(
        records, renderer, tok, info.bos_id, info.add_bos, args.seq_len, info.eos_id
    )


def hyper(args, precision: str):
    from outcrop.training.hyper import HyperParameters

    return HyperParameters(
        epoch_count=1, batch_size=args.batch_size, learning_rate=2e-4,
        max_sequence_length=args.seq_len, lora_rank=16, lora_alpha=32, precision=precision,
    )  # fmt: skip


def run_outcrop(args, path, cache, exs, pad_id, precision: str) -> tuple[float, float]:
    import torch

    from outcrop.training.model_io import load_base
    from outcrop.training.trainer import Trainer, apply_method

    torch.manual_seed(0)
    model, _ = load_base(path, cache)
    hp = hyper(args, precision)
    trainer = Trainer(apply_method(model, hp), hp, pad_id)
    tokens, seconds, loss = 0, 0.0, 0.0
    for i, batch in enumerate(trainer.batches(exs, 0)):
        started = time.perf_counter()
        loss, _ = trainer.train_step(batch)
        if i > 0:  # the first step warms allocator and kernels: not timed, in both
            seconds += time.perf_counter() - started
            tokens += batch.tokens
    return tokens / seconds, loss


def run_hf(args, path, cache, exs, tok, bf16: bool) -> tuple[float, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from outcrop.training.model_io import load_base
    from outcrop.training.trainer import LORA_TARGETS

    torch.manual_seed(0)
    model, _ = load_base(path, cache)
    model = get_peft_model(
        model,
        LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
            target_modules=list(LORA_TARGETS),
        ),
    )  # fmt: skip
    data = [
        {
            "input_ids": e.ids,
            "attention_mask": [1] * len(e.ids),
            "labels": [t if m else -100 for t, m in zip(e.ids, e.targets, strict=True)],
        }
        for e in exs
    ]
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    seq2seq = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    batch_tokens: list[int] = []

    def collate(features):
        batch = seq2seq(features)
        batch_tokens.append(int(batch["attention_mask"].sum()))
        return batch

    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    targs = TrainingArguments(
        output_dir=str(Path(args.out) / "hf"), per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, learning_rate=2e-4, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=True, seed=0, optim="adamw_torch", bf16=bf16,
    )  # fmt: skip
    Trainer(
        model=model, args=targs, train_dataset=data, data_collator=collate, callbacks=[Clock()]
    ).train()
    # The dataloader may collate one batch ahead; steps and batches pair up in order.
    return sum(batch_tokens[1 : len(times)]) / sum(times[1:]), losses[-1] if losses else float(
        "nan"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="huggingface.smollm2-135m-instruct-v1:0")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--out", default="/tmp/outcrop-bench-train")
    parser.add_argument(
        "--headline-only", action="store_true",
        help="only outcrop at its default precision and the default HF baseline",
    )  # fmt: skip
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    card, path, cache, info = load(args)
    tok, exs = examples(args, card, path, cache, info)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (info.eos_id or 0)
    n_tokens = sum(len(e) for e in exs)
    n_target = sum(sum(e.targets) for e in exs)
    print(
        f"{card.model_id}: {len(exs)} examples, {n_tokens} tokens ({n_target} completion), "
        f"batch {args.batch_size}, seq len {args.seq_len}, {args.steps} steps, "
        f"LoRA r16, {args.threads} thread(s)"
    )
    from outcrop.training.trainer import compute_dtype

    native_bf16 = str(compute_dtype("auto")) == "torch.bfloat16"
    # (label, runner): outcrop at its default precision against the plain HF baseline is
    # the headline; the same-precision pairs show where the gain comes from.
    contenders = {
        "outcrop (auto)": lambda: run_outcrop(args, path, cache, exs, pad_id, "auto"),
        "HF Trainer + peft (fp32, default)": lambda: run_hf(args, path, cache, exs, tok, False),
    }
    if native_bf16 and not args.headline_only:
        contenders["outcrop (fp32)"] = lambda: run_outcrop(args, path, cache, exs, pad_id, "fp32")
        contenders["HF Trainer + peft (bf16=True)"] = lambda: run_hf(
            args, path, cache, exs, tok, True
        )
    best: dict[str, float] = {}
    for r in range(args.rounds):  # alternate, so load from other processes hits all of them
        for label, run in contenders.items():
            tps, loss = run()
            best[label] = max(best.get(label, 0.0), tps)
            print(f"round {r + 1}: {label:34s} {tps:7.1f} tokens/s (last loss {loss:.3f})")
    print(f"best of {args.rounds} round(s), tokens/s:")
    for label, tps in best.items():
        print(f"  {label:34s} {tps:8.1f}")
    pairs = [("outcrop (auto)", "HF Trainer + peft (fp32, default)")]
    if "outcrop (fp32)" in best:
        pairs += [
            ("outcrop (fp32)", "HF Trainer + peft (fp32, default)"),
            ("outcrop (auto)", "HF Trainer + peft (bf16=True)"),
        ]
    for ours, theirs in pairs:
        print(f"ratio {ours} / {theirs}: {best[ours] / best[theirs]:.2f}x")


if __name__ == "__main__":
    main()
