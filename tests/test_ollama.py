"""The Ollama Modelfile of a student (export/ollama.py), without a job: its TEMPLATE, rendered the way Ollama
renders it (tests/go_template.py), writes exactly the prompt the student was trained on, for chat and completion
students; its stops end the student's turn; the temperature is the task's answer; templates it cannot reproduce
are refused before anything is written."""

from __future__ import annotations

import pytest

from go_template import modelfile_commands, render_template
from tiny_models import build_tokenizer

from distilflow.errors import DistilflowError
from distilflow.export.ollama import chat_pieces, modelfile_text
from distilflow.models.prompts import render_prompt
from distilflow.tasks import get_task

SMOLLM2_TEMPLATE = (  # SmolLM2-Instruct's: a default system turn when the conversation has none
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def parsed(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in modelfile_commands(text):
        out.setdefault(name, []).append(value)
    return out


def modelfile(tokenizer, task_type: str, prompt_format: str, labels=None) -> dict[str, list[str]]:
    return parsed(modelfile_text(gguf_name="s-f16.gguf", model_name="s", task=get_task(task_type, labels),
                                 tokenizer=tokenizer, prompt_format=prompt_format, max_tokens=12))


@pytest.mark.parametrize("prompt_format", ["chat", "completion"])
def test_a_classification_student_reads_its_task_prompt_and_answers_greedily(tokenizer, prompt_format):
    task = get_task("classification", ["card_arrival", "change_pin"])
    found = modelfile(tokenizer, "classification", prompt_format, ["card_arrival", "change_pin"])
    assert found["FROM"] == ["./s-f16.gguf"]
    assert found["PARAMETER temperature"] == ["0"] and found["PARAMETER num_predict"] == ["12"]
    messages, _ = task.example_from_fields({"text": "my card is late"})
    typed = [{"role": "user", "content": "my card is late"}]  # what `ollama run s "my card is late"` sends
    assert render_template(found["TEMPLATE"][0], typed) == render_prompt(tokenizer, messages, prompt_format)
    stops = found["PARAMETER stop"]
    assert ("\n\n" in stops) == (prompt_format == "completion")  # completion answers end at the blank line
    assert "<|im_end|>" in stops  # the end of a chat turn, and the tokenizer's end of sequence


@pytest.mark.parametrize("template", [None, SMOLLM2_TEMPLATE, LLAMA3_TEMPLATE])
def test_a_chat_template_is_reproduced_for_every_turn_with_or_without_a_system_text(tokenizer, template):
    import copy

    tokenizer = copy.deepcopy(tokenizer)
    if template:
        tokenizer.chat_template = template
    found = modelfile(tokenizer, "conversation", "chat")
    assert "PARAMETER temperature" not in found  # free text: the runtime's own default
    conversation = [{"role": "user", "content": "Hi {{ there }}"}, {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "How are you?"}]
    assert render_template(found["TEMPLATE"][0], conversation) == render_prompt(tokenizer, conversation)
    with_system = [{"role": "system", "content": "Be brief."}, *conversation]
    assert render_template(found["TEMPLATE"][0], with_system, system="Be brief.") == render_prompt(tokenizer,
                                                                                                     with_system)


def test_every_task_wraps_a_typed_input_in_the_prompt_it_trains_on(tokenizer):
    rows = {"nli": ({"premise": "A man plays.", "hypothesis": "Someone plays."},
                    "Premise: A man plays.\nHypothesis: Someone plays."),
            "qa": ({"question": "Who?"}, "Who?"), "math": ({"question": "1+1?"}, "1+1?"),
            "summarization": ({"document": "Long text."}, "Long text."),
            "classification": ({"text": "lost card"}, "lost card")}
    for task_type, (row, typed) in rows.items():
        task = get_task(task_type, ["a", "b"] if task_type == "classification" else None)
        messages, _ = task.example_from_fields(row)
        assert task.prompt_for_input(typed) == messages[-1]["content"], task_type
        assert task.serving_temperature == (None if task.free_text else 0.0), task_type


def test_a_template_that_writes_turns_by_position_is_refused(tokenizer):
    import copy

    odd = copy.deepcopy(tokenizer)  # the last turn is marked: a turn is written differently by where it is
    odd.chat_template = ("{% for m in messages %}<{{ m['role'] }}{% if loop.last %} last{% endif %}>{{ m['content'] }}"
                         "</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    with pytest.raises(DistilflowError, match="cannot be written as an Ollama template"):
        modelfile(odd, "conversation", "chat")
    assert chat_pieces(tokenizer).answer_tail == "<|im_end|>\n"
