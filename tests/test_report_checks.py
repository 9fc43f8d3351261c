"""The report cannot be fooled by a broken student: degenerate answers are counted per model and a student far
above its teacher gets a warning at the top; retention is shown on every metric; classification reports carry a
confusion matrix."""

from __future__ import annotations

from distilflow.metrics.degeneration import check_answer, degeneration_shares, vocabulary
from distilflow.report.checks import answer_checks_table, retention_table, warnings
from distilflow.report.html import render_html
from distilflow.report.markdown import render_markdown
from distilflow.report.plots import all_plots

ABSTRACT = ("We propose a state-based model of human reading that predicts eye movements. The model uses a "
            "recurrent network trained on a large corpus, and its accuracy matches human readers.")
GOOD = "A state-based recurrent model of human reading predicts eye movements as accurately as humans."
BROKEN = ["The use to a help a state-based-based-based- the a.",
          "We, which of a human, the acc-based- The model-based- The model-",
          "zorgle blimf qwertz state the thing flurb", ""]


def test_checks_flag_repetition_non_words_empty_and_unfinished():
    known = vocabulary([ABSTRACT])
    good = check_answer(GOOD, known, output_tokens=20, max_tokens=40)
    assert not good.degenerate
    checks = [check_answer(text, known, output_tokens=40, max_tokens=40) for text in BROKEN]
    assert checks[0].repetitive and checks[1].repetitive
    assert checks[2].non_words and not checks[2].repetitive
    assert checks[3].empty
    assert all(c.unfinished for c in checks)  # they all ran to max_tokens
    shares = degeneration_shares([good, *checks])
    assert shares["degenerate"] == 0.8 and shares["empty"] == 0.2 and shares["unfinished"] == 0.8
    assert degeneration_shares([check_answer(GOOD, known, None, None)])["unfinished"] is None


def _report(student_degenerate: float) -> dict:
    def model(score: float, degenerate: float) -> dict:
        return {"evaluated": True, "task_metrics": {"chrf": score, "rougeL": score / 100},
                "intervals": {}, "degeneration": {"degenerate": degenerate, "empty": 0.0, "repetitive": degenerate,
                                                  "non_words": 0.0, "unfinished": 0.0}}
    return {"job": "j", "task_type": "summarization", "metric_names": ["chrf", "rougeL"], "primary_metric": "chrf",
            "labels": ["teacher", "baseline", "distilled"], "created_at": "now", "notes": [], "examples": [],
            "models": {"teacher": model(40.0, 0.05), "baseline": model(5.0, 0.9),
                       "distilled": model(30.0, student_degenerate)}}


def test_a_student_far_more_degenerate_than_its_teacher_gets_a_warning_at_the_top():
    report = _report(0.6)
    found = warnings(report)
    assert len(found) == 2 and "distilled" in found[1] and "60.0%" in found[1] and "5.0%" in found[1]
    markdown = render_markdown(report)
    assert markdown.index("Warning") < markdown.index("## Quality")
    assert 'class="warning"' in render_html(report, {})
    assert warnings(_report(0.1))[1:] == []  # within the margin: no warning for the distilled student
    header, rows = answer_checks_table(report)
    assert header[1] == "degenerate (any)" and rows[2][1] == "60.0%"


def test_retention_is_shown_for_every_metric():
    header, rows = retention_table(_report(0.1))
    assert [r[0] for r in rows] == ["chrf", "rougeL"] and rows[0][4] == "75.0%"
    assert "Retention on every metric" in render_markdown(_report(0.1))


def test_a_classification_report_draws_a_confusion_matrix():
    report = _report(0.0) | {"confusion": {"teacher": {"a": {"a": 3, "b": 1}, "b": {"b": 2}},
                                           "distilled": {"a": {"a": 2, "not_a_label": 2}, "b": {"b": 2}}}}
    plots = all_plots(report)
    assert "confusion" in plots and plots["confusion"].startswith("<svg")
