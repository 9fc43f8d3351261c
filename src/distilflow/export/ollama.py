"""`distilflow export JOB --format ollama`: the GGUF file and, beside it, a Modelfile that serves the student as it
was trained: `FROM ./FILE.gguf`, a TEMPLATE that writes the student's prompt (its chat template, or the plain
completion text, around the task's own prompt), the stop strings that end its answers, and temperature 0 where the
task's answers are right or wrong. `ollama create NAME -f Modelfile` then runs it.

The chat template is Jinja and Ollama's is Go's text/template, so the template is not translated: the student's
own template is rendered around marker strings, the text between the markers is cut into the pieces of a turn
(the start, a user turn, an assistant turn, the generation prompt), and the Go template writes those pieces around
`.System` and each of `.Messages`. Before anything is written the pieces are put back together in Python for a few
conversations and compared with the template's own rendering; a template they cannot reproduce is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilflow.errors import DistilflowError
from distilflow.models.prompts import COMPLETION_TURN_END, PromptFormat, render_chat, render_completion
from distilflow.tasks import Task

MODELFILE = "Modelfile"
_USER, _USER2, _ANSWER, _SYSTEM, _INPUT = ("DISTILFLOWUSERTEXT", "DISTILFLOWSECONDUSER", "DISTILFLOWANSWER",
                                           "DISTILFLOWSYSTEM", "DISTILFLOWINPUT")


@dataclass(frozen=True)
class PromptPieces:
    """The text a student's prompt is made of, around the system text, each message and the answer to come."""

    head: str  # before the first turn when there is no system text (a default system turn included)
    system_head: str | None  # before the system text (None: the template has no system turn)
    system_tail: str
    user_head: str
    user_tail: str
    answer_head: str  # before an assistant turn of the conversation
    answer_tail: str  # after it (the end of the turn: where the student stops)
    generation: str  # after the last message: where the answer starts

    def render(self, system: str | None, messages: list[dict[str, str]]) -> str:
        """What the Go template writes for these messages (the same concatenation, in Python)."""
        out = [self.head if not system or self.system_head is None else self.system_head + system + self.system_tail]
        for message in messages:
            if message["role"] == "user":
                out.append(self.user_head + message["content"] + self.user_tail)
            elif message["role"] == "assistant":
                out.append(self.answer_head + message["content"] + self.answer_tail)
        return "".join(out) + self.generation


def _between(text: str, start: str | None, end: str | None) -> str:
    """The text after marker `start` (or from the beginning) and before marker `end` (or to the end)."""
    begin = 0 if start is None else text.index(start) + len(start)
    finish = len(text) if end is None else text.index(end, begin)
    return text[begin:finish]


def _refused(what: str) -> DistilflowError:
    return DistilflowError(f"the student's chat template cannot be written as an Ollama template ({what}); export "
                           "--format gguf and write the Modelfile's TEMPLATE by hand")


def _without_suffix(text: str, suffix: str, what: str) -> str:
    if not text.endswith(suffix):
        raise _refused(f"{what} does not end the way its other turns begin")
    return text[:len(text) - len(suffix)]


def _without_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise _refused(f"{what} does not begin the way a turn ends elsewhere")
    return text[len(prefix):]


def chat_pieces(tokenizer: Any) -> PromptPieces:
    """The pieces of the tokenizer's chat template, cut out of renderings around marker strings."""
    user, answer = {"role": "user", "content": _USER}, {"role": "assistant", "content": _ANSWER}
    one = render_chat(tokenizer, [user])
    closed = render_chat(tokenizer, [user], generation_prompt=False)
    answered = render_chat(tokenizer, [user, answer], generation_prompt=False)
    two = render_chat(tokenizer, [user, answer, {"role": "user", "content": _USER2}])
    answer_tail = _between(answered, _ANSWER, None)
    user_tail = _between(closed, _USER, None)
    user_head = _without_prefix(_between(two, _ANSWER, _USER2), answer_tail, "a second user turn")
    system_head, system_tail = None, ""
    try:
        with_system = render_chat(tokenizer, [{"role": "system", "content": _SYSTEM}, user])
    except Exception:  # noqa: BLE001 - templates without a system role raise (Gemma's): the system text is dropped
        with_system = None
    if with_system is not None:
        system_head = _between(with_system, None, _SYSTEM)
        system_tail = _without_suffix(_between(with_system, _SYSTEM, _USER), user_head, "its system turn")
    return PromptPieces(
        head=_without_suffix(_between(one, None, _USER), user_head, "its first turn"), system_head=system_head,
        system_tail=system_tail, user_head=user_head, user_tail=user_tail,
        answer_head=_without_prefix(_between(answered, _USER, _ANSWER), user_tail, "an assistant turn"),
        answer_tail=answer_tail, generation=_without_prefix(_between(one, _USER, None), user_tail, "the answer"))


def completion_pieces() -> PromptPieces:
    """Plain text (models/prompts.py): the system text, then each earlier turn as "prompt answer", a blank line
    between them, then the last prompt, which the student continues with " answer"."""
    return PromptPieces(head="", system_head="", system_tail=COMPLETION_TURN_END, user_head="", user_tail="",
                        answer_head=" ", answer_tail=COMPLETION_TURN_END, generation="")


def _check(pieces: PromptPieces, tokenizer: Any, prompt_format: PromptFormat) -> None:
    """The pieces must rebuild what the student was trained on, for a few conversations, or nothing is written."""
    conversations = [[{"role": "user", "content": "Hello there"}],
                     [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "c"}]]
    for messages in conversations:
        expected = render_completion(messages) if prompt_format == "completion" else render_chat(tokenizer, messages)
        if pieces.render(None, messages) != expected:
            raise _refused("it writes a turn differently depending on where it is")


def _go_text(text: str) -> str:
    """Literal text inside a Go template: its own `{{` would open an action."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(pieces: PromptPieces, task: Task) -> str:
    """Ollama's TEMPLATE: the pieces around `.System` and each of `.Messages`, each user turn wrapped in the task's
    prompt (the student saw "Message: ...\\nLabel:", not the bare message)."""
    before, _, after = task.prompt_for_input(_INPUT).partition(_INPUT)
    system = _go_text(pieces.head)
    if pieces.system_head is not None:
        otherwise = "{{ else }}" + system if system else ""
        system = ("{{ if .System }}" + _go_text(pieces.system_head) + "{{ .System }}" + _go_text(pieces.system_tail)
                  + otherwise + "{{ end }}")
    user = _go_text(pieces.user_head + before) + "{{ .Content }}" + _go_text(after + pieces.user_tail)
    answer = _go_text(pieces.answer_head) + "{{ .Content }}" + _go_text(pieces.answer_tail)
    return (system + '{{ range .Messages }}{{ if eq .Role "user" }}' + user + '{{ else if eq .Role "assistant" }}'
            + answer + "{{ end }}{{ end }}" + _go_text(pieces.generation))


def stop_strings(pieces: PromptPieces, tokenizer: Any) -> list[str]:
    """Where the student's answer ends: the end of its turn (`<|im_end|>`, or the blank line of completion text),
    and the end-of-sequence token."""
    stops = [pieces.answer_tail.strip() or pieces.answer_tail]
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    return [s for s in stops if s]


def _quoted(value: str, what: str) -> str:
    """A Modelfile value in triple quotes (kept verbatim, newlines included; Ollama has no escapes)."""
    if '"""' in value:
        raise DistilflowError(f"the student's {what} contains three double quotes, which a Modelfile cannot hold; "
                              "export --format gguf and write the Modelfile by hand")
    return f'"""{value}"""'


def modelfile_text(*, gguf_name: str, model_name: str, task: Task, tokenizer: Any, prompt_format: PromptFormat,
                   max_tokens: int) -> str:
    """The Modelfile of the student in `gguf_name` (a file in the same folder)."""
    pieces = completion_pieces() if prompt_format == "completion" else chat_pieces(tokenizer)
    _check(pieces, tokenizer, prompt_format)
    example = task.prompt_for_input("...").replace("\n", " ")
    lines = [f"# {model_name}: a distilflow student ({task.name}, {prompt_format} prompt), served as it was trained.",
             f"#   ollama create {model_name} -f Modelfile",
             f'#   ollama run {model_name} "..."     (the student reads: {example})',
             f"FROM ./{gguf_name}",
             f"TEMPLATE {_quoted(go_template(pieces, task), 'chat template')}"]
    lines += [f"PARAMETER stop {_quoted(stop, 'end-of-turn text')}" for stop in stop_strings(pieces, tokenizer)]
    if task.serving_temperature is not None:
        lines.append(f"PARAMETER temperature {task.serving_temperature:g}")
    lines.append(f"PARAMETER num_predict {max_tokens}")  # the answer length it was evaluated with
    return "\n".join(lines) + "\n"


def modelfile_target(folder: Path) -> Path:
    return folder / MODELFILE
