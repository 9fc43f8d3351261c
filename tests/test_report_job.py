"""A conversation job run as a user runs it, and its report: report.json figures for every model,
a self-contained report.html, and that page rendered in a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import conversation_rows, run_cli, write_job, write_jsonl

HOSTILE_INPUT = "Hello <script>alert('owned')</script> & <img src=http://example.com/x.png>"


@pytest.fixture(scope="module")
def job(tiny_models, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("report-job")
    spec = write_job(folder, tiny_models, name="conv-report", n_train=6, n_val=2,
                     training={"logging_steps": 1},
                     evaluation={"max_tokens": 6, "warmup": 1, "batch_size": 2, "bootstrap_samples": 200})
    test_rows = conversation_rows(2, offset=200) + [{"messages": [{"role": "user", "content": HOSTILE_INPUT},
                                                                  {"role": "assistant", "content": "Hi & bye."}]}]
    write_jsonl(folder / "data" / "test.jsonl", test_rows)
    workspace = folder / "runs"
    result = run_cli("run", str(spec), "--workspace", str(workspace))
    assert result.returncode == 0, result.stderr[-3000:]
    root = workspace / "jobs" / "conv-report"
    return {"root": root, "workspace": workspace, "report": json.loads((root / "report.json").read_text()),
            "html": (root / "report.html").read_text(), "stderr": result.stderr}


def test_report_json_has_quality_speed_memory_and_size_for_every_model(job):
    report = job["report"]
    assert report["labels"] == ["teacher", "baseline", "distilled"]
    for label in report["labels"]:
        m = report["models"][label]
        assert m["evaluated"] is True and m["scored_examples"] == 3
        assert 0.0 <= m["task_metrics"]["bleu"] <= 100.0 and "chrf" in m["task_metrics"]
        interval = m["intervals"]["bleu"]
        assert interval["n"] == 3 and interval["low"] <= interval["value"] <= interval["high"]
        for key in ("latency_mean_s", "latency_p50_s", "latency_p95_s", "ttft_mean_s", "throughput_answers_per_s",
                    "throughput_output_tokens_per_s"):
            assert m[key] > 0, key
        assert m["latency_p95_s"] >= m["latency_p50_s"]
        assert m["ttft_mean_s"] < m["latency_mean_s"]
        if m["peak_memory_kind"] == "process_peak_rss":  # CPU: the whole worker process, Python runtime included
            assert m["peak_memory_mb"] > 50
        else:  # GPU: what the model allocated on the device while answering
            assert m["peak_memory_kind"] == "cuda_max_allocated" and m["peak_memory_mb"] > 0
        assert m["model_memory_mb"] > 0 and m["size_on_disk_mb"] > 0
        assert m["throughput_batch_size"] == 2
        predictions = (job["root"] / "eval" / label / "predictions.jsonl").read_text().splitlines()
        assert len(predictions) == 3  # the same three inputs for every model
    models = report["models"]
    assert models["teacher"]["parameters"] > models["distilled"]["parameters"] == models["baseline"]["parameters"]
    comparison = report["comparison"]
    assert comparison["parameter_reduction"] == pytest.approx(
        1 - models["distilled"]["parameters"] / models["teacher"]["parameters"])
    assert comparison["speedup"] == pytest.approx(models["teacher"]["latency_mean_s"] / models["distilled"]["latency_mean_s"])
    assert "improvement_intervals_overlap" in comparison
    for label in ("baseline", "distilled"):
        assert models[label]["agreement_with_teacher"]["kind"] == "bleu_vs_teacher"
    assert report["teacher_stage"]["requests"] == 8 and "rejected_by_reason" in report["teacher_stage"]
    assert report["training"]["loss_curve"]["train_loss"]  # logged every step
    assert "report:" in job["stderr"]


def test_report_md_and_plots_on_disk(job):
    text = (job["root"] / "report.md").read_text()
    assert "## Quality" in text and "## Speed and memory" in text and "Retention" in text
    for name in ("scores", "latency", "memory", "loss"):
        assert (job["root"] / "plots" / f"{name}.svg").read_text().startswith("<svg")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_report_html_is_self_contained_with_a_table_and_plots(job):
    page = job["html"]
    parser = _Tags()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert tags.count("table") >= 4 and tags.count("svg") == 4
    assert "script" not in tags and "link" not in tags and "iframe" not in tags and "img" not in tags
    for tag, attrs in parser.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "action", "poster", "background") and value:
                assert value.startswith(("#", "data:")), (tag, name, value)
    assert not re.search(r"url\(\s*['\"]?(?!#)", page)  # no external url() in styles or SVG attributes
    assert "@import" not in page
    # the hostile test input is shown as text
    assert html.escape(HOSTILE_INPUT) in page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


WIDTH, HEIGHT = 1280, 5000
_PROBE = """<script>
const rect = (e, name) => { const r = e.getBoundingClientRect(); return {name, x: r.x, y: r.y, w: r.width, h: r.height}; };
const found = [];
for (const id of ["quality", "performance", "examples"]) { const t = document.getElementById(id); if (t) found.push(rect(t, id)); }
for (const f of document.querySelectorAll("figure")) { const s = f.querySelector("svg"); if (s) found.push(rect(s, f.id)); }
const pre = document.createElement("pre"); pre.id = "rects"; pre.textContent = JSON.stringify(found);
document.body.appendChild(pre);
</script>"""


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={WIDTH},{HEIGHT}"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (scripts/install-chromium.sh)")
def test_report_renders_in_headless_chromium_with_visible_table_and_plots(job, tmp_path):
    import numpy as np
    from PIL import Image

    binary = _chromium()
    report = job["root"] / "report.html"
    # 1. Where the tables and plots are: a copy of the page with a script that lists their boxes.
    probe = tmp_path / "probe.html"
    probe.write_text(job["html"].replace("</body>", _PROBE + "</body>"))
    dom = _run_chromium(binary, tmp_path / "profile-1", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="rects">(.*?)</pre>', dom.stdout, re.DOTALL)
    assert found, dom.stderr[-2000:]
    boxes = {b["name"]: b for b in json.loads(html.unescape(found.group(1)))}
    assert {"quality", "performance", "examples", "plot-scores", "plot-latency", "plot-memory", "plot-loss"} <= set(boxes)
    # 2. The real page (no script), as pixels.
    shot = tmp_path / "report.png"
    result = _run_chromium(binary, tmp_path / "profile-2", f"--screenshot={shot}", report.as_uri())
    assert shot.exists(), result.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[:2] == (HEIGHT, WIDTH)

    def region(name: str):
        b = boxes[name]
        assert b["w"] > 150 and b["h"] > 60 and b["y"] + b["h"] <= HEIGHT, b
        return image[int(b["y"]):int(b["y"] + b["h"]), int(b["x"]):int(b["x"] + b["w"])]

    def near(pixels, hex_color: str, tolerance: int = 40) -> int:
        target = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - target).sum(axis=2) < tolerance).sum())

    for name in ("quality", "performance", "examples"):
        pixels = region(name)
        dark = (pixels.mean(axis=2) < 110).mean()
        assert pixels.std() > 15 and dark > 0.005, f"table {name} looks blank"
    for name in ("plot-scores", "plot-latency", "plot-memory", "plot-loss"):
        pixels = region(name)
        colors = len(np.unique(pixels.reshape(-1, 3), axis=0))
        assert pixels.std() > 15 and colors > 20, f"{name} looks blank"
    memory = region("plot-memory")  # bars in each model's colour: the data was drawn, not just axes
    for color in ("#4c72b0", "#8c8c8c", "#dd8452"):
        assert near(memory, color) > 200, color
    assert near(region("plot-latency"), "#4c72b0") > 100
    assert near(region("plot-loss"), "#dd8452") > 20  # the training loss line
