import pytest

from conftest import task_scores
from distilflow.tasks import get_task


def test_nli_extraction_scoring_and_checks():
    task = get_task("nli")
    assert task.extract_answer("The answer is Contradiction.") == "contradiction"
    assert task.extract_answer("no idea") is None
    assert task_scores(task, ["entailment", "neutral", "x"], ["entailment", "contradiction", "neutral"]) == {"accuracy": 1 / 3}
    assert task.check_teacher_answer("neutral", "neutral", verify=True) is None
    assert task.check_teacher_answer("neutral", "entailment", verify=True) == "disagrees_with_reference"
    assert task.check_teacher_answer("neutral", "entailment", verify=False) is None
    assert task.check_teacher_answer("I'm sorry, I can't help with that.", None, verify=True) == "refusal"
    assert task.check_teacher_answer("   ", None, verify=True) == "empty"
    assert task.check_teacher_answer("perhaps", None, verify=True) == "unparseable"


def test_math_final_number_forms():
    task = get_task("math")
    assert task.extract_answer("so 3 + 4 = 7\n#### 7") == "7"
    assert task.extract_answer("It costs $1,250.00 in total.") == "1250"
    assert task.extract_answer("#### -3.5") == "-3.5"
    assert task.extract_answer("nothing") is None
    assert task_scores(task, ["#### 18", "the answer is 17", "18.0"], ["18", "18", "18"]) == {"accuracy": 2 / 3}


def test_qa_exact_match_and_f1_by_hand():
    task = get_task("qa")
    scores = task_scores(task, ["The Panthers", "Denver Broncos won", "nothing"],
                        [["Panthers"], ["Denver Broncos"], ["Carolina"]])
    # EM: 1 (articles dropped), 0, 0.  F1: 1, 2*(2/3*1)/(2/3+1) = 0.8, 0
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((1 + 0.8 + 0) / 3)
    assert task.extract_answer("Answer: Paris\nBecause it is the capital.") == "Paris"


def test_summarization_bounds_and_rouge():
    task = get_task("summarization")
    assert task.check_teacher_answer("Too short", ["ref"], verify=True) == "too_short"
    assert task.check_teacher_answer(" ".join(["word"] * 300), ["ref"], verify=True) == "too_long"
    perfect = task_scores(task, ["the cat sat on the mat"], [["the cat sat on the mat"]])
    assert perfect["rougeL"] == pytest.approx(1.0) and perfect["rouge1"] == pytest.approx(1.0)


def test_conversation_bleu_and_chrf_against_sacrebleu():
    import sacrebleu

    task = get_task("conversation")
    predictions = ["I am fine, thank you.", "See you tomorrow at noon."]
    references = [["I am fine, thanks."], ["See you tomorrow at noon."]]
    scores = task_scores(task, predictions, references)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [[r[0] for r in references]]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [[r[0] for r in references]]).score)
    # a conversation turn that declines is a valid answer, not a refusal to filter
    assert task.check_teacher_answer("I'm sorry, we are closed on Sundays.", None, verify=True) is None


def _examples(references):
    from distilflow.tasks import Example

    return [Example(f"train-{i}", [{"role": "user", "content": f"input {i}"}], r, "train.jsonl", i + 1)
            for i, r in enumerate(references)]


@pytest.mark.parametrize("name", ["nli", "conversation", "qa", "math", "summarization"])
def test_a_task_of_open_answers_answers_the_stages_with_neutral_defaults(name):
    """What a stage asks every task (instead of asking which task it has): no label set, nothing to rank, nothing
    the data settles, no report section of its own; and it refuses a label set rather than ignore it."""
    from distilflow.errors import SpecError

    task = get_task(name)
    assert task.labels == () and task.answer_modes == ("generate",)
    assert task.choices("rank") == () and task.choices("generate") == ()
    examples = _examples([None, None])
    assert task.for_job({"train": examples}) is task and task.for_test_file(examples) is task
    assert task.report_sections({"distilled": [{"prediction": "x", "reference": "y"}]}) == {}
    with pytest.raises(SpecError, match=f"task type {name} has no label set"):
        task.with_labels(["a", "b"])
    assert get_task(name, []).labels == () and get_task(name, None).labels == ()


def test_the_spec_accepts_rank_and_labels_exactly_for_the_tasks_that_take_them(tmp_path):
    """The job spec's checks and the task interface say the same: `answer_mode: rank` where a task ranks,
    `labels:` where a task takes a label set; the task a spec states carries them."""
    from distilflow.errors import SpecError
    from distilflow.jobspec import parse_spec
    from distilflow.tasks import TASKS, task_for_spec

    own_keys = {"extraction": {"schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}

    def parsed(task_type: str, **extra):
        try:
            return parse_spec({"task_type": task_type, "teacher": {"model": "t", "backend": "hf"},
                               "student": {"model": "s"}, "training_data": "x.jsonl", **own_keys.get(task_type, {}),
                               **extra}, "job.yaml", tmp_path)
        except SpecError:
            return None

    for name, cls in TASKS.items():
        ranked = parsed(name, evaluation={"answer_mode": "rank"})
        assert (ranked is not None) == ("rank" in cls.answer_modes), name
        try:
            task_for_spec(parsed(name)).with_labels(["a", "b"])
            takes_labels = True
        except SpecError:
            takes_labels = False
        labelled = parsed(name, labels=["a", "b"])
        assert (labelled is not None) == takes_labels, name
        if labelled is not None:
            assert task_for_spec(labelled).labels == ("a", "b")
        assert task_for_spec(parsed(name)).labels == () and task_for_spec(parsed(name)).name == name
