"""Customization building blocks without a model: hyperparameters, JSONL validation,
prompt rendering for training, packing."""

from __future__ import annotations

import json

import pytest

from outcrop.errors import ValidationError
from outcrop.locations import DataLocations
from outcrop.training.data import validate_jsonl
from outcrop.training.hyper import parse_hyperparameters
from outcrop.training.trainer import Example, Renderer, collate

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_hyperparameters_take_bedrock_strings_and_check_ranges():
    hp = parse_hyperparameters(
        {"epochCount": "3", "batchSize": "4", "learningRate": "0.0001", "loraRank": "8"}, 8192
    )
    assert (hp.epoch_count, hp.batch_size, hp.learning_rate, hp.lora_alpha) == (3, 4, 1e-4, 16)
    assert hp.as_bedrock()["epochCount"] == "3"
    for bad in (
        {"epochCount": "11"},
        {"batchSize": "0"},
        {"learningRate": "2"},
        {"learningRateWarmupSteps": "-1"},
        {"method": "qlora"},
        {"maxSequenceLength": "9000"},
        {"epochCount": "two"},
        {"unknownThing": "1"},
    ):
        with pytest.raises(ValidationError) as err:
            parse_hyperparameters(bad, 8192)
        assert next(iter(bad)) in err.value.message


def test_precision_is_a_hyperparameter():
    assert parse_hyperparameters({}, 8192).precision == "auto"
    hp = parse_hyperparameters({"precision": "FP32"}, 8192)
    assert hp.precision == "fp32" and hp.as_bedrock()["precision"] == "fp32"
    with pytest.raises(ValidationError, match="precision"):
        parse_hyperparameters({"precision": "fp8"}, 8192)


def test_validate_jsonl_names_the_bad_line():
    good = json.dumps({"prompt": "q", "completion": "a"})
    records = validate_jsonl(f"{good}\n\n{good}\n".encode(), "FINE_TUNING", "training data")
    assert [r["line"] for r in records] == [1, 3]
    assert records[0]["turns"] == [["user", "q"], ["assistant", "a"]]
    with pytest.raises(ValidationError, match="invalid JSON on line 2: "):
        validate_jsonl(f"{good}\n{{oops\n".encode(), "FINE_TUNING", "training data")
    with pytest.raises(ValidationError, match="line 1.*completion is empty"):
        validate_jsonl(b'{"prompt": "q", "completion": " "}', "FINE_TUNING", "training data")
    with pytest.raises(ValidationError, match="empty"):
        validate_jsonl(b"\n\n", "FINE_TUNING", "training data")
    with pytest.raises(ValidationError, match='line 1.*"input"'):
        validate_jsonl(good.encode(), "CONTINUED_PRE_TRAINING", "training data")


def test_conversation_schema_is_checked():
    convo = {
        "schemaVersion": "bedrock-conversation-2024",
        "system": [{"text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"text": "Hi"}]},
            {"role": "assistant", "content": [{"text": "Hello"}]},
        ],
    }
    (record,) = validate_jsonl(json.dumps(convo).encode(), "FINE_TUNING", "training data")
    assert record["system"] == "Be brief." and record["turns"][1] == ["assistant", "Hello"]
    convo["messages"][1]["role"] = "user"
    with pytest.raises(ValidationError, match=r"messages\[1\].role"):
        validate_jsonl(json.dumps(convo).encode(), "FINE_TUNING", "training data")


def test_s3_uris_map_under_the_data_dir(tmp_path):
    locations = DataLocations(tmp_path)
    loc = locations.parse("s3://bucket/train/data.jsonl", "training data")
    assert loc.path == tmp_path / "s3" / "bucket" / "train" / "data.jsonl"
    assert locations.parse("file:///x/y.jsonl", "training data").path.as_posix() == "/x/y.jsonl"
    with pytest.raises(ValidationError, match="not supported"):
        locations.parse("https://example.com/a", "training data")


def test_chat_rendering_targets_only_the_assistant_turns():
    r = Renderer(CHATML, False, "", "<|im_end|>", "You are a helpful assistant.")
    segments = r.segments({"system": None, "turns": [["user", "Q?"], ["assistant", "A."]]})
    assert segments == [
        (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n",
            False,
        ),
        ("A.<|im_end|>\n", True),
    ]


def test_completion_rendering_matches_the_served_transcript():
    r = Renderer(None, True, "<bos>", "<eos>", None)
    segments = r.segments(
        {"system": None, "turns": [["user", "Capital of France?"], ["assistant", "Paris."]]}
    )
    assert segments == [("Q: Capital of France?\nA:", False), (" Paris.", True), ("<eos>", True)]


def test_packing_leaves_no_padding_and_restarts_positions():
    exs = [Example([n] * n, [False] * (n - 2) + [True] * 2) for n in (5, 3, 4, 2)]
    batch = collate(exs, pad_id=0)
    assert batch.ids.shape == (1, 14)
    assert batch.pos[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 0, 1]
    assert batch.segments == ((0, 5), (5, 3), (8, 4), (12, 2))
    # 4 x 2 targets, less the first token of the 2-token example: nothing of its own before it
    assert int(batch.tgt.sum()) == 7 and batch.tokens == 14


def test_unpacked_rows_are_right_padded_without_targets_on_padding():
    exs = [Example([7] * n, [False] * (n - 1) + [True]) for n in (3, 5)]
    batch = collate(exs, pad_id=0, packed=False)
    assert batch.ids.tolist() == [[7, 7, 7, 0, 0], [7, 7, 7, 7, 7]]
    assert batch.tgt.sum(dim=1).tolist() == [1, 1]
    assert batch.segments is None and batch.tokens == 8
