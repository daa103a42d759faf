from __future__ import annotations

import base64
import json

import pytest
from botocore.eventstream import EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError
from botocore.parsers import EventStreamJSONParser
from botocore.session import get_session

from outcrop.api.eventstream import chunk_frame, encode_frame, event_frame, exception_frame
from outcrop.errors import ModelTimeoutError, ThrottlingError, ValidationError

MESSAGE_STOP_HEX = (
    "0000007a00000051ca2c46650b3a6576656e742d7479706507000b6d65737361676553746f700d3a636f6e74"
    "656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d74797065070005"
    "6576656e747b2273746f70526561736f6e223a22656e645f7475726e227d5fbf09fc"
)


@pytest.fixture(scope="module")
def shapes():
    model = get_session().get_service_model("bedrock-runtime")
    converse = model.operation_model("ConverseStream").output_shape.members["stream"]
    invoke = model.operation_model("InvokeModelWithResponseStream").output_shape.members["body"]
    return {"converse": converse, "invoke": invoke}


def decode(data: bytes):
    buf = EventStreamBuffer()
    buf.add_data(data)
    return list(buf)


def parse(data: bytes, shape) -> list[dict]:
    parser = EventStreamJSONParser()
    return [parser.parse(m.to_response_dict(), shape) for m in decode(data)]


class _Raw:
    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    def stream(self):
        # Split at odd offsets: frames cross HTTP chunk boundaries on the wire.
        for i in range(0, len(self.data), self.step):
            yield self.data[i : i + self.step]


def iterate(data: bytes, shape, op: str, step: int = 7) -> list[dict]:
    return list(EventStream(_Raw(data, step), shape, EventStreamJSONParser(), op))


def test_message_stop_matches_reference_vector() -> None:
    assert event_frame("messageStop", {"stopReason": "end_turn"}).hex() == MESSAGE_STOP_HEX


def test_encode_frame_generic_headers_decode() -> None:
    (msg,) = decode(encode_frame({":message-type": "event", "x-é": "ünï"}, b"\x00\xff"))
    assert msg.headers == {":message-type": "event", "x-é": "ünï"}
    assert msg.payload == b"\x00\xff"


def test_converse_stream_sequence_parses(shapes) -> None:
    events = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        (
            "contentBlockStart",
            {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "w"}}},
        ),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city": "Par'}}},
        ),
        ("messageStop", {"stopReason": "tool_use"}),
        (
            "metadata",
            {
                "usage": {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8},
                "metrics": {"latencyMs": 12},
            },
        ),
    ]
    data = b"".join(event_frame(t, p) for t, p in events)
    assert parse(data, shapes["converse"]) == [{t: p} for t, p in events]
    assert iterate(data, shapes["converse"], "ConverseStream") == [{t: p} for t, p in events]


def test_non_ascii_round_trips(shapes) -> None:
    text = 'héllo 世界 🚀 \u2028 "q" \\'
    frame = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})
    (out,) = parse(frame, shapes["converse"])
    assert out["contentBlockDelta"]["delta"]["text"] == text
    (chunk,) = parse(chunk_frame({"outputText": text}), shapes["invoke"])
    assert json.loads(chunk["chunk"]["bytes"]) == {"outputText": text}


def test_lone_surrogate_does_not_crash(shapes) -> None:
    frame = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "a\ud800"}})
    (out,) = parse(frame, shapes["converse"])
    assert out["contentBlockDelta"]["delta"]["text"] == "a\ud800"


@pytest.mark.parametrize(
    "body",
    [{"outputText": "Hi"}, b'{"outputText": "Hi"}', {"type": "content_block_delta", "index": 0}],
)
def test_chunk_frame(shapes, body) -> None:
    frame = chunk_frame(body)
    (msg,) = decode(frame)
    assert msg.headers[":event-type"] == "chunk"
    assert (
        json.loads(msg.payload)["bytes"]
        == base64.b64encode(
            body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        ).decode()
    )
    (out,) = iterate(frame, shapes["invoke"], "InvokeModelWithResponseStream")
    assert json.loads(out["chunk"]["bytes"]) == (
        json.loads(body) if isinstance(body, bytes) else body
    )


@pytest.mark.parametrize(
    ("error", "op"),
    [
        (ThrottlingError, "ConverseStream"),
        (ValidationError, "ConverseStream"),
        (ThrottlingError, "InvokeModelWithResponseStream"),
        # modelTimeoutException exists only in InvokeModelWithResponseStream's union.
        (ModelTimeoutError, "InvokeModelWithResponseStream"),
    ],
)
def test_exception_frame_raises_with_code(shapes, error, op) -> None:
    exc = error("Too many requests")
    frame = exception_frame(exc.stream_shape, exc.message)
    (msg,) = decode(frame)
    assert msg.headers[":message-type"] == "exception"
    assert msg.to_response_dict()["status_code"] == 400
    if op == "ConverseStream":
        shape, first = shapes["converse"], event_frame("messageStart", {"role": "assistant"})
    else:
        shape, first = shapes["invoke"], chunk_frame({"outputText": "a"})
    stream = iter(EventStream(_Raw(first + frame, 5), shape, EventStreamJSONParser(), op))
    next(stream)  # the event before the error is delivered
    with pytest.raises(EventStreamError) as info:
        next(stream)
    assert info.value.response["Error"] == {"Code": exc.stream_shape, "Message": exc.message}


def test_header_block_is_cached_and_frames_independent() -> None:
    from outcrop.api import eventstream

    assert eventstream._event_headers("contentBlockDelta") is eventstream._event_headers(
        "contentBlockDelta"
    )
    a = event_frame("contentBlockDelta", {"x": 1})
    b = event_frame("contentBlockDelta", {"x": 2})
    assert decode(a)[0].payload == b'{"x":1}'
    assert decode(b)[0].payload == b'{"x":2}'
