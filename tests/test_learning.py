"""A student learns: a tiny teacher is first trained here to a deterministic rule, then distilled into a fresh tiny
student through the real train stage (run_job -> the method module -> its trainer) on prompts the student never
saw; on other held-out prompts the student's greedy answers agree with the teacher's far more than the untrained
student's do, and the token-level KL(teacher || student) on the teacher's answers falls. `kd`, which sees the
teacher's whole distribution, ends closer to it (lower KL) than `sft`, which sees only its text, at equal steps.

The rule: a prompt "K w1 w2" (K a digit, w1 w2 filler words) is answered "P(K) K" with a fixed permutation P; the
teacher is trained with label smoothing so that its distributions are soft (0.1 of the mass off the argmax), which
is what logit distillation can transfer and text cannot. Everything is seeded; torch runs on one thread, which on
a shared 2-core machine is several times faster for models this small than two threads fighting for the cores.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_jsonl
from tiny_models import build_model, build_tokenizer

from distilflow.pipeline.runner import run_job
from distilflow.jobspec import load_spec
from distilflow.workspace import Workspace

pytestmark = pytest.mark.timeout(300)

PERM = [7, 3, 9, 0, 5, 1, 8, 2, 6, 4]
FILLERS = ["fox", "dog", "man", "quick", "lazy", "table", "two", "music"]
STEPS = 60  # optimizer steps of every distillation run (equal steps: the kd-vs-sft comparison is fair)


def rule_prompt(key: int, a: int, b: int) -> str:
    return f"{key} {FILLERS[a]} {FILLERS[b]}"


def rule_answer(key: int) -> str:
    return f"{PERM[key]} {key}"


def _splits() -> dict[str, list[tuple[int, int, int]]]:
    combos = [(k, a, b) for k in range(10) for a in range(len(FILLERS)) for b in range(len(FILLERS))]
    random.Random(0).shuffle(combos)
    return {"teacher": combos[:240], "distill": combos[240:304], "held_out": combos[304:344]}


def _messages(combo: tuple[int, int, int]) -> list[dict[str, str]]:
    return [{"role": "user", "content": rule_prompt(*combo)}]


def _encode(tokenizer: Any, conversations: list[list[dict[str, str]]], answers: list[str]):
    """Right-padded prompt + answer + end of turn, labels on the answer and end of turn only."""
    import torch

    rows, labels = [], []
    for messages, answer in zip(conversations, answers):
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = tokenizer(prompt + answer + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
        rows.append(full)
        labels.append([-100] * len(prompt_ids) + full[len(prompt_ids):])
    width = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask, torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])


def _train_teacher(folder: Path, tokenizer: Any, combos: list[tuple[int, int, int]]) -> Path:
    """The teacher, trained by hand here (it is the test's fixture, not the code under test)."""
    import torch
    import torch.nn.functional as F

    build_model(folder, tokenizer, layers=2, hidden=64, seed=1, initializer_range=0.1)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    ids, mask, labels = _encode(tokenizer, [_messages(c) for c in combos], [rule_answer(c[0]) for c in combos])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        pick = torch.randint(0, len(ids), (32,), generator=generator)
        logits = model(input_ids=ids[pick], attention_mask=mask[pick]).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[pick][:, 1:].reshape(-1),
                               ignore_index=-100, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    return folder


def greedy_answers(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]]) -> list[str]:
    import torch

    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in conversations]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    tokenizer.padding_side = "right"
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, encoded["input_ids"].shape[1]:]]


def agreement_and_kl(student: Any, teacher: Any, tokenizer: Any, conversations: list[list[dict[str, str]]],
                     teacher_answers: list[str]) -> tuple[float, float]:
    """Share of prompts where the student's greedy answer is the teacher's, and the mean per-token
    KL(teacher || student) over the teacher's answer tokens (teacher-forced), by brute force on full logits."""
    import torch

    student_answers = greedy_answers(student, tokenizer, conversations)
    agreement = sum(s == t for s, t in zip(student_answers, teacher_answers)) / len(conversations)
    ids, mask, labels = _encode(tokenizer, conversations, teacher_answers)
    with torch.no_grad():
        log_p = torch.log_softmax(teacher(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        log_q = torch.log_softmax(student(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
    on_answer = labels[:, 1:] != -100
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)[on_answer].mean().item()
    return agreement, kl


@pytest.fixture(scope="module")
def rule_job(tmp_path_factory) -> dict[str, Any]:
    """Tokenizer, trained teacher, fresh student and a job whose generate stage has run (the teacher's answers to
    the distillation prompts): each test runs only the train stage, with its own method."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("learning")
    tokenizer = build_tokenizer(root / "tokenizer")
    splits = _splits()
    teacher = _train_teacher(root / "teacher", tokenizer, splits["teacher"])
    # A larger init scale than Llama's 0.02 breaks the attention symmetry of so small a model within tens of steps
    # (at 0.02 the same student sits on a plateau for ~200 steps before it finds the key token).
    student = build_model(root / "student", tokenizer, layers=2, hidden=32, seed=2, initializer_range=0.2)
    write_jsonl(root / "job" / "distill.jsonl", [{"messages": _messages(c)} for c in splits["distill"]])
    spec: dict[str, Any] = {
        "name": "rule", "task_type": "conversation",
        "teacher": {"model": str(teacher), "backend": "hf"}, "student": {"model": str(student)},
        "training_data": "distill.jsonl",
        "hyperparameters": {"learning_rate": 3e-3, "batch_size": 8, "num_epochs": 100, "temperature": 0.0},
        "generation": {"max_tokens": 8, "verify": "none", "deduplicate": False},
        "training": {"max_steps": STEPS, "lr_scheduler": "constant", "save_steps": 1000, "logging_steps": 10,
                     "device": "cpu"},
    }
    workspace = Workspace.open(root / "ws")
    job = root / "job" / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    run_job(load_spec(job), workspace, ["generate"])
    from transformers import AutoModelForCausalLM

    teacher_model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    held_out = [_messages(c) for c in splits["held_out"]]
    teacher_answers = greedy_answers(teacher_model, tokenizer, held_out)
    assert teacher_answers == [rule_answer(c[0]) for c in splits["held_out"]]  # the teacher learnt the rule
    baseline = agreement_and_kl(AutoModelForCausalLM.from_pretrained(student).eval(), teacher_model, tokenizer,
                                held_out, teacher_answers)
    yield {"root": root, "spec": spec, "workspace": workspace, "tokenizer": tokenizer, "teacher": teacher_model,
           "held_out": held_out, "teacher_answers": teacher_answers, "baseline": baseline}
    torch.set_num_threads(threads)


def distil(rule_job: dict[str, Any], training: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
    """Run the train stage with these training settings; the distilled student's (agreement, KL) and metrics."""
    from transformers import AutoModelForCausalLM

    spec = {**rule_job["spec"], "training": {**rule_job["spec"]["training"], **training}}
    job = rule_job["root"] / "job" / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    record = run_job(load_spec(job), rule_job["workspace"], ["train"])
    train = next(s for s in record.stages if s.stage == "train")
    assert train.status == "completed" and train.metrics["steps"] == STEPS
    final = rule_job["workspace"].job("rule").student_final
    student = AutoModelForCausalLM.from_pretrained(final).eval()
    agreement, kl = agreement_and_kl(student, rule_job["teacher"], rule_job["tokenizer"], rule_job["held_out"],
                                     rule_job["teacher_answers"])
    return agreement, kl, train.metrics


RESULTS: dict[str, tuple[float, float]] = {}


@pytest.mark.parametrize("method, training", [
    ("sft", {"method": "sft"}),
    ("kd", {"method": "kd"}),
    ("on_policy", {"method": "on_policy", "divergence": "forward_kl",
                   "student_max_tokens": 6}),
    ("kd_hidden_states", {"method": "kd", "hidden_states": {"weight": 1.0, "layers": "auto"}}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_student_learns_the_teachers_rule(rule_job, method, training):
    base_agreement, base_kl = rule_job["baseline"]
    agreement, kl, metrics = distil(rule_job, training)
    RESULTS[method] = (agreement, kl)
    print(f"{method}: agreement {base_agreement:.2f} -> {agreement:.2f}, KL {base_kl:.3f} -> {kl:.3f}", metrics)
    assert agreement >= base_agreement + 0.5, (method, base_agreement, agreement)
    assert kl < 0.25 * base_kl, (method, base_kl, kl)


def test_kd_ends_closer_to_the_teacher_than_sft(rule_job):
    for method, training in (("sft", {"method": "sft"}), ("kd", {"method": "kd"})):
        if method not in RESULTS:  # run alone (-k): train what the parametrized test would have trained
            agreement, kl, _ = distil(rule_job, training)
            RESULTS[method] = (agreement, kl)
    assert RESULTS["kd"][1] < 0.8 * RESULTS["sft"][1], RESULTS


def test_on_policy_with_its_defaults_keeps_up_with_kd(rule_job):
    """At equal steps on_policy, with its defaults (sampled share ramped up, temperature 0.5), agrees with the
    teacher about as well as kd (bench/README.md: with sampling from step 1 at temperature 1 it trailed by 0.22)."""
    for method, training in (("kd", {"method": "kd"}),
                             ("on_policy", {"method": "on_policy", "divergence": "forward_kl", "student_max_tokens": 6})):
        if method not in RESULTS:
            agreement, kl, _ = distil(rule_job, training)
            RESULTS[method] = (agreement, kl)
    assert RESULTS["on_policy"][0] >= RESULTS["kd"][0] - 0.1, RESULTS
