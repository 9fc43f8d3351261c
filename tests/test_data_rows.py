import json

import pytest

from conftest import write_jsonl
from distilflow.tasks import read_examples
from distilflow.errors import DataError
from distilflow.tasks import get_task


def read(tmp_path, task, rows):
    return read_examples(write_jsonl(tmp_path / "rows.jsonl", rows), get_task(task), "train")


def test_natural_fields_for_every_task(tmp_path):
    nli = read(tmp_path, "nli", [{"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": "entailment"},
                                 {"premise": "p", "hypothesis": "h", "label": 2}])
    assert [e.reference for e in nli] == ["entailment", "contradiction"]
    assert "A dog runs." in nli[0].messages[-1]["content"] and nli[0].messages[-1]["role"] == "user"

    qa = read(tmp_path, "qa", [{"question": "Who?", "context": "Bob did it.", "answers": ["Bob"]},
                               {"question": "Where?", "answer": "Paris"},
                               {"question": "When?", "context": "c", "answers": {"text": ["1999", "in 1999"]}}])
    assert [e.reference for e in qa] == [["Bob"], ["Paris"], ["1999", "in 1999"]]

    math = read(tmp_path, "math", [{"question": "2+2?", "answer": "Two and two.\n#### 4"},
                                   {"question": "Big?", "answer": "#### 1,234"}, {"question": "No ref"}])
    assert [e.reference for e in math] == ["4", "1234", None]

    summ = read(tmp_path, "summarization", [{"document": "Long text here.", "summary": "Short."},
                                            {"document": ["Sentence one.", "Sentence two."], "summary": ["a", "b"]}])
    assert summ[0].reference == ["Short."] and "Sentence one. Sentence two." in summ[1].messages[-1]["content"]

    conv = read(tmp_path, "conversation", [{"messages": [{"role": "system", "content": "Be nice."},
                                                         {"role": "user", "content": "Hi"},
                                                         {"role": "assistant", "content": "Hello!"}]}])
    assert conv[0].reference == ["Hello!"] and [m["role"] for m in conv[0].messages] == ["system", "user"]
    assert conv[0].source_line == 1 and conv[0].id == "train-1"


def test_chat_form_for_classification_tasks(tmp_path):
    nli = read(tmp_path, "nli", [{"messages": [{"role": "user", "content": "P/H?"},
                                               {"role": "assistant", "content": "Neutral."}]}])
    assert nli[0].reference == "neutral"
    math = read(tmp_path, "math", [{"messages": [{"role": "user", "content": "1+1?"},
                                                 {"role": "assistant", "content": "1+1=2\n#### 2"}]}])
    assert math[0].reference == "2"


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"question": "a", "answer": "#### 1"}\n\n{"question": "b", "answer": "#### 2"}\n')
    examples = read_examples(path, get_task("math"), "test")
    assert [e.source_line for e in examples] == [1, 3]


@pytest.mark.parametrize("task, lines, message", [
    ("conversation", ['{"messages": [{"role": "user", "content": "hi"}]}'] * 2 + ["{not json"], "line 3: invalid JSON"),
    ("nli", ['{"premise": "p", "hypothesis": "h", "label": "maybe"}'], "line 1: unknown NLI label 'maybe'"),
    ("nli", ['{"premise": "p"}'], "line 1: missing field 'hypothesis'"),
    ("qa", ['{"question": 42}'], "line 1: field 'question' must be a string, not int"),
    ("math", ['{"question": "q", "answer": "no number here"}'], "line 1: the answer 'no number here' holds no final number"),
    ("conversation", ['{"messages": [{"role": "robot", "content": "x"}]}'], "messages[0].role must be one of"),
    ("conversation", ['{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}'],
     "must end with a user turn"),
    ("summarization", ['[1, 2]'], "line 1: expected a JSON object, got list"),
])
def test_bad_rows_name_file_line_and_problem(tmp_path, task, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        read_examples(path, get_task(task), "train")
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_empty_missing_folder_and_non_utf8_files(tmp_path):
    task = get_task("qa")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="the file is empty"):
        read_examples(tmp_path / "empty.jsonl", task, "train")
    with pytest.raises(DataError, match="file not found"):
        read_examples(tmp_path / "missing.jsonl", task, "train")
    with pytest.raises(DataError, match="is a folder"):
        read_examples(tmp_path, task, "train")
    (tmp_path / "latin1.jsonl").write_bytes(json.dumps({"question": "x"}).encode() + b"\n" + b'{"question": "\xe9"}\n')
    with pytest.raises(DataError, match="line 2: is not valid UTF-8"):
        read_examples(tmp_path / "latin1.jsonl", task, "train")


def test_summarization_accepts_scitldr_and_cnn_field_names(tmp_path):
    rows = read(tmp_path, "summarization", [
        {"source": ["First sentence.", "Second one."], "target": ["tl;dr one", "tl;dr two"], "paper_id": "x"},
        {"article": "News text.", "highlights": "Short news."},
    ])
    assert "First sentence. Second one." in rows[0].messages[-1]["content"]
    assert rows[0].reference == ["tl;dr one", "tl;dr two"] and rows[1].reference == ["Short news."]
