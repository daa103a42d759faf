"""The training worker: ``python -m outcrop.training.worker JOB_DIR``.

Reads ``JOB_DIR/spec.json`` (written by :mod:`outcrop.service.customization`), trains, exports
the GGUF and reports through the files :mod:`outcrop.jobs.files` names:

* ``progress.json`` — phase, epoch, step, loss, tokens/s (replaced atomically)
* ``checkpoint.pt`` — after every epoch; a restarted worker resumes from it
* ``result.json`` — written last, after the GGUF is complete, loads in llama.cpp and
  (with ``--model-bucket``) was pushed to the bucket from here
* ``error.json`` — a failure the user can act on (``message`` is the job's failureMessage)

It dies with its parent (``PR_SET_PDEATHSIG``), so a killed server leaves no orphan
training behind; the next server start resumes the job from its checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from outcrop.jobs.files import (
    ERROR,
    PROGRESS,
    SPEC,
    JobFailure,
    die_with_parent,
    write_json,
)
from outcrop.jobs.publish import finish
from outcrop.locations import Location, write_output

CHECKPOINT = "checkpoint.pt"
TRAIN_RECORDS = "train.jsonl"
VALIDATION_RECORDS = "validation.jsonl"
TRAINING_METRICS = "training_artifacts/step_wise_training_metrics.csv"
STEP_LOG = "steps.csv"
"""``step,epoch,loss`` per optimizer step, appended as training runs (the console's live
chart reads it; the output location's CSV is only written at each epoch's end)."""
VALIDATION_METRICS = (
    "validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv"
)


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _csv(header: str, rows: list[tuple[int, int, float]]) -> bytes:
    return (header + "\n" + "".join(f"{s},{e},{v:.6f}\n" for s, e, v in rows)).encode()


def base_model_file(spec: dict[str, Any]) -> Path:
    """The base model's GGUF: the file the server resolved or, on a training node that does
    not share the server's disk (a Ray actor), this node's own copy from its data dir."""
    base = Path(spec["base_gguf"])
    if base.exists():
        return base
    from outcrop.models.catalog import Catalog
    from outcrop.models.store import model_store
    from outcrop.settings import Settings

    card = Catalog().get(spec["base_model_id"])
    if card is None:
        raise JobFailure(f"The base model file {base} is not on this node.")
    return model_store(Settings()).ensure(card)


def run(job_dir: Path) -> dict[str, Any]:
    spec = json.loads((job_dir / SPEC).read_text())
    threads = int(spec.get("threads") or 1)
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(int(spec["hp"]["seed"]))

    from outcrop.training.export import export_gguf
    from outcrop.training.hyper import HyperParameters
    from outcrop.training.model_io import GgufInfo, load_base, original_weights
    from outcrop.training.trainer import (
        ExampleError,
        Renderer,
        StepReport,
        Trainer,
        TrainState,
        apply_method,
        merged_changes,
        tokenize_records,
    )

    hp = HyperParameters(**spec["hp"])
    parent = os.getppid()
    progress: dict[str, Any] = {"phase": "loading", "updated": time.time()}

    def report(**values: Any) -> None:
        progress.update(values, updated=time.time())
        write_json(job_dir / PROGRESS, progress)

    report()
    base = base_model_file(spec)
    info = GgufInfo.read(base)
    model, tokenizer = load_base(base, Path(spec["cache_root"]))

    report(phase="tokenizing")
    bos_text = tokenizer.convert_ids_to_tokens(info.bos_id) if info.bos_id is not None else ""
    eos_text = tokenizer.convert_ids_to_tokens(info.eos_id) if info.eos_id is not None else ""
    renderer = Renderer(
        info.chat_template, spec["completion_only"], bos_text or "", eos_text or "",
        spec.get("default_system"),
    )  # fmt: skip
    try:
        train = tokenize_records(
            read_records(job_dir / TRAIN_RECORDS), renderer, tokenizer, info.bos_id,
            info.add_bos, hp.max_sequence_length, info.eos_id,
        )  # fmt: skip
        validation = tokenize_records(
            read_records(job_dir / VALIDATION_RECORDS), renderer, tokenizer, info.bos_id,
            info.add_bos, hp.max_sequence_length, info.eos_id, what="validation data",
        )  # fmt: skip
    except ExampleError as exc:
        raise JobFailure(str(exc)) from None

    model = apply_method(model, hp)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (info.eos_id or 0)
    trainer = Trainer(model, hp, pad_id, checkpoint=job_dir / CHECKPOINT)
    resumed = trainer.resume()
    output = Location.from_dict(spec["output"])
    total = trainer.steps_per_epoch(len(train)) * hp.epoch_count
    report(
        phase="training", epoch=trainer.state.epoch, step=trainer.state.step,
        total_steps=total, epochs=hp.epoch_count, resumed=resumed,
        examples=len(train), loss=None, precision=str(trainer.dtype).removeprefix("torch."),
    )  # fmt: skip

    def on_step(r: StepReport) -> None:
        if os.getppid() != parent:
            os._exit(3)  # the server is gone; its successor resumes from the checkpoint
        report(
            epoch=r.epoch, step=r.step, total_steps=r.total_steps, loss=r.loss,
            tokens_per_s=r.tokens / r.seconds if r.seconds else None,
        )  # fmt: skip
        with (job_dir / STEP_LOG).open("a") as log:
            log.write(f"{r.step},{r.epoch},{r.loss:.6f}\n")

    def on_epoch(state: TrainState) -> None:
        write_output(
            output.child(TRAINING_METRICS),
            _csv("step_number,epoch_number,training_loss", state.step_metrics),
        )
        if state.validation_metrics:
            write_output(
                output.child(VALIDATION_METRICS),
                _csv("step_number,epoch_number,validation_loss", state.validation_metrics),
            )
        report(
            completed_epochs=state.epoch,
            validation_loss=state.validation_metrics[-1][2] if state.validation_metrics else None,
        )

    state = trainer.fit(train, validation, on_step=on_step, on_epoch=on_epoch)

    report(phase="exporting")
    changed = merged_changes(
        model, hp, lambda names: original_weights(base, Path(spec["cache_root"]), names)
    )
    out = Path(spec["model_path"])
    export_gguf(base, changed, out, name=spec.get("model_name"))
    _check_loads(out)
    result = {
        "path": str(out),
        "training_loss": state.epoch_losses[-1] if state.epoch_losses else None,
        "validation_losses": [v for _, _, v in state.validation_metrics],
        "steps": state.step,
    }
    report(phase="completed")
    return result


def _check_loads(path: Path) -> None:
    """A model llama.cpp cannot load must never be registered."""
    import llama_cpp as ll

    params = ll.llama_model_default_params()
    model = ll.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise JobFailure("The exported model could not be loaded by llama.cpp.")
    ll.llama_model_free(model)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    job_dir = Path(argv[0])
    try:
        result = run(job_dir)
    except JobFailure as exc:
        write_json(job_dir / ERROR, {"message": str(exc)})
        return 2
    except MemoryError:
        write_json(job_dir / ERROR, {"message": "Training ran out of memory."})
        return 2
    except Exception as exc:
        traceback.print_exc()
        write_json(job_dir / ERROR, {"message": f"Training failed: {type(exc).__name__}: {exc}"})
        return 1
    return finish(job_dir, result)  # its model file pushed first, with a bucket


if __name__ == "__main__":
    sys.exit(main())
