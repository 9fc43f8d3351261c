"""The comparison figures and the report files, from known per-model figures (no models needed)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from distilflow.report.html import render_html
from distilflow.report.plots import all_plots
from distilflow.report.markdown import render_markdown, write_report_files
from distilflow.report.data import assemble, comparison, improvement, loss_curve, relative
from distilflow.tasks import get_task


def model(bleu: float, low: float, high: float, latency: float, memory: float, params: int, **extra) -> dict:
    return {"evaluated": True, "task_metrics": {"bleu": bleu, "chrf": bleu + 10},
            "intervals": {"bleu": {"value": bleu, "low": low, "high": high, "n": 20},
                          "chrf": {"value": bleu + 10, "low": bleu + 5, "high": bleu + 15, "n": 20}},
            "scored_examples": 20, "latency_mean_s": latency, "latency_p50_s": latency, "latency_p95_s": latency * 2,
            "ttft_mean_s": latency / 10, "throughput_answers_per_s": 1 / latency, "peak_memory_mb": memory,
            "model_memory_mb": memory - 300, "parameters": params, "size_on_disk_mb": params / 1e6 * 4,
            "peak_memory_kind": "process_peak_rss", **extra}


MODELS = {"teacher": model(40.0, 35.0, 45.0, 2.0, 1300.0, 1_000_000_000),
          "baseline": model(10.0, 7.0, 13.0, 0.5, 600.0, 100_000_000),
          "distilled": model(30.0, 26.0, 34.0, 0.4, 600.0, 100_000_000)}


def test_comparison_figures():
    c = comparison(MODELS, ["bleu", "chrf"], "bleu")
    assert c["retention"] == pytest.approx(0.75)
    assert c["improvement_over_baseline"] == pytest.approx(20.0)
    assert c["improvement_intervals_overlap"] is False  # [7, 13] vs [26, 34]
    assert c["speedup"] == pytest.approx(5.0)
    assert c["latency_reduction"] == pytest.approx(0.8)
    assert c["memory_reduction"] == pytest.approx(1 - 600 / 1300)
    assert c["parameter_reduction"] == pytest.approx(0.9)
    rel = c["distilled_vs_teacher"]
    assert rel["retention"]["chrf"] == pytest.approx(40 / 50)
    assert rel["model_memory_reduction"] == pytest.approx(1 - 300 / 1000)
    assert rel["throughput_speedup"] == pytest.approx(5.0)
    assert rel["intervals_overlap"]["bleu"] is False
    gain = improvement(MODELS["baseline"], MODELS["distilled"], ["bleu"])["bleu"]
    assert gain["relative"] == pytest.approx(2.0)


def test_comparison_with_missing_models_says_not_available():
    c = comparison({"distilled": MODELS["distilled"]}, ["bleu"], "bleu")
    assert c["retention"] is None and c["speedup"] is None and c["improvement_over_baseline"] is None
    assert relative({}, MODELS["distilled"], ["bleu"])["parameter_reduction"] is None


def _report(tmp_path: Path) -> dict:
    task = get_task("conversation")
    models = {**MODELS, "teacher": {**MODELS["teacher"], "network": True, "base_url": "http://127.0.0.1:9/v1",
                                    "peak_memory_mb": None, "model_memory_mb": None, "parameters": None}}
    predictions = {label: [{"id": "test-1", "input": "<script>alert('x')</script> & hi",
                            "prediction": f"{label} says <b>hello</b>", "reference": ["hi <there>"]}]
                   for label in models}
    report = assemble(task, ["teacher", "baseline", "distilled"], models, predictions, examples_in_report=5)
    (tmp_path / "train_log.json").write_text(json.dumps([{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0},
                                                         {"step": 2, "eval_loss": 2.5}]))
    report.update(job="demo", teacher={"model": "big", "backend": "openai"}, student={"model": "small"},
                  comparison=comparison(models, list(task.metric_names), task.primary_metric),
                  teacher_stage={"requests": 12, "failed": 1, "accepted": {"train": 8}, "rejected": 3,
                                 "rejected_by_reason": {"refusal": 2, "empty": 1}},
                  training={"method": "sft", "steps": 2, "loss_curve": loss_curve(tmp_path / "train_log.json")})
    return report


def test_loss_curve_from_the_train_log(tmp_path):
    report = _report(tmp_path)
    assert report["training"]["loss_curve"] == {"train_loss": [[1, 3.0], [2, 2.0]], "validation_loss": [[2, 2.5]]}
    assert loss_curve(tmp_path / "missing.json") == {}


def test_markdown_states_network_latency_rejections_and_intervals(tmp_path):
    text = render_markdown(_report(tmp_path))
    assert "Retention (distilled / teacher bleu): **75.0%**" in text
    assert "95% intervals do not overlap" in text
    assert "over the network" in text
    assert "Rejected for `refusal`: 2" in text
    assert "30 [26, 34]" in text


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_html_is_escaped_and_self_contained(tmp_path):
    report = _report(tmp_path)
    page = render_html(report, all_plots(report))
    collector = _Collector()
    collector.feed(page)
    tags = [t for t, _ in collector.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags  # the model text stayed text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; hi" in page
    assert "distilled says &lt;b&gt;hello&lt;/b&gt;" in page
    assert tags.count("svg") == 4  # scores, latency, memory, loss
    for tag, attrs in collector.tags:
        for name in ("src", "href", "xlink:href"):
            assert not attrs.get(name) or attrs[name].startswith(("#", "data:")), (tag, attrs)
    assert all(u.startswith("#") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", page))
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # four inline SVGs, and still every id is unique
    assert all(ref in ids for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', page))  # and every reference resolves
    # the rejection counts of the teacher stage and the not-measurable teacher memory
    assert '<table id="rejections">' in page and "refusal" in page
    assert "over the network" in page


def test_write_report_files(tmp_path):
    paths = write_report_files(_report(tmp_path), tmp_path / "out")
    assert json.loads(paths["json"].read_text())["comparison"]["speedup"] == pytest.approx(5.0)
    assert "plots/scores.svg" in paths["md"].read_text()
    svg = (tmp_path / "out" / "plots" / "scores.svg").read_text()
    assert svg.startswith("<svg") and "<!DOCTYPE" not in svg


def test_not_evaluated_models_are_reported_with_the_reason(tmp_path):
    report = _report(tmp_path)
    report["models"]["teacher"] = {"evaluated": False, "reason": "recorded answers do not cover the test inputs"}
    page = render_html(report, all_plots(report))
    assert "not evaluated: recorded answers do not cover the test inputs" in page
    assert "not evaluated: recorded answers" in render_markdown(report)


def test_the_report_says_how_long_each_stage_took(tmp_path):
    from distilflow.report.tables import fmt

    assert [fmt(s, "duration") for s in (0.04, 59.94, 59.96, 61, 3599.4, 3600, 7325)] == [
        "0.0 s", "59.9 s", "1 min 00 s", "1 min 01 s", "59 min 59 s", "1 h 00 min", "2 h 02 min"]
    report = _report(tmp_path)
    assert "Time per stage" not in render_markdown(report)  # a comparison (no job): no stages
    report["stage_seconds"] = {"prepare": 0.5, "generate": 125.0, "train": 61.0, "evaluate": 9.5}
    text = render_markdown(report)
    assert "## Time per stage" in text
    assert "| generate | 2 min 05 s |" in text and "| train | 1 min 01 s |" in text
    assert "Total before this report: 3 min 16 s." in text
