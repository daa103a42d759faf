from outcrop.service.prompt import build_prompt
from outcrop.service.types import ChatRequest, Message

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_chat_template_renders_system_and_turns():
    req = ChatRequest(system="Be brief.", messages=[Message("user", "Hi")])
    p = build_prompt(req, CHATML, "<|im_start|>", "<|im_end|>", completion_only=False)
    assert (
        p.text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert p.add_special is False  # the template wrote the BOS text itself


def test_completion_model_gets_qa_transcript_with_implicit_stop():
    req = ChatRequest(
        messages=[
            Message("user", "What is 2+2?"),
            Message("assistant", "4"),
            Message("user", "And 3+3?"),
        ]
    )
    p = build_prompt(req, None, "<bos>", "<eos>", completion_only=True)
    assert p.text == "Q: What is 2+2?\nA: 4\nQ: And 3+3?\nA:"
    assert "\nQ:" in p.implicit_stops


def test_raw_prompt_is_used_verbatim():
    p = build_prompt(ChatRequest(prompt="Once upon"), CHATML, "", "", completion_only=False)
    assert p.text == "Once upon"
