"""Reading an Ollama Modelfile in tests, without Ollama: its commands (Ollama's quoting: a value in triple quotes is
kept verbatim, newlines included) and a renderer for the part of Go's text/template its TEMPLATE uses (`if`,
`else if`, `else`, `range`, `eq`, fields, string literals), with Ollama's values: `.System` and `.Messages`."""

from __future__ import annotations

import re
from typing import Any

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.DOTALL)


def modelfile_commands(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, value) in order; `PARAMETER stop x` reads as ("PARAMETER stop", "x")."""
    commands = []
    pattern = re.compile(r'^(FROM|TEMPLATE|SYSTEM|PARAMETER \w+)[ \t]+("""(.*?)"""|"([^"\n]*)"|([^\n]*))[ \t]*$',
                         re.MULTILINE | re.DOTALL)
    lines = "\n".join(line for line in text.split("\n") if not line.startswith("#"))
    for match in pattern.finditer(lines):
        value = next(v for v in (match.group(3), match.group(4), match.group(5)) if v is not None)
        commands.append((match.group(1), value))
    return commands


def _tokens(template: str) -> list[tuple[str, str]]:
    out, last = [], 0
    for match in _ACTION.finditer(template):
        if match.start() > last:
            out.append(("text", template[last:match.start()]))
        out.append(("action", match.group(1)))
        last = match.end()
    if last < len(template):
        out.append(("text", template[last:]))
    return out


def _value(expression: str, scope: dict[str, Any]) -> Any:
    expression = expression.strip()
    if expression.startswith('"'):
        return expression[1:-1]
    if expression.startswith("eq "):
        left, right = re.fullmatch(r'eq\s+(\S+)\s+(".*?"|\S+)', expression).groups()
        return _value(left, scope) == _value(right, scope)
    assert expression.startswith("."), expression
    return scope.get(expression[1:], "")


def _block(tokens: list[tuple[str, str]], start: int) -> tuple[list[tuple[str, list]], int]:
    """The branches of an if (condition, body tokens) up to its end; returns them and the index after `end`."""
    branches, body, depth, i = [], [], 0, start
    condition = tokens[start - 1][1][3:]
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "action" and (text.startswith("if ") or text.startswith("range ")):
            depth += 1
        elif kind == "action" and text == "end":
            if depth == 0:
                branches.append((condition, body))
                return branches, i + 1
            depth -= 1
        elif kind == "action" and depth == 0 and text.startswith("else"):
            branches.append((condition, body))
            condition, body = (text[8:] if text.startswith("else if ") else '"always"'), []
            i += 1
            continue
        body.append((kind, text))
        i += 1
    raise AssertionError("unclosed block")


def _render(tokens: list[tuple[str, str]], scope: dict[str, Any]) -> str:
    out, i = [], 0
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "text":
            out.append(text)
            i += 1
        elif text.startswith("if "):
            branches, i = _block(tokens, i + 1)
            body = next((b for c, b in branches if _value(c, scope)), [])
            out.append(_render(body, scope))
        elif text.startswith("range "):
            branches, i = _block(tokens, i + 1)
            for item in _value(text[6:], scope):
                out.append(_render(branches[0][1], {**scope, **item}))
        else:
            out.append(str(_value(text, scope)))
            i += 1
    return "".join(out)


def render_template(template: str, messages: list[dict[str, str]], system: str = "") -> str:
    """What Ollama renders for a chat: `.System` and `.Messages` (each with `.Role` and `.Content`)."""
    items = [{"Role": m["role"], "Content": m["content"]} for m in messages]
    return _render(_tokens(template), {"System": system, "Messages": items})
