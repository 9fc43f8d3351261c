"""The study as figures: every trial (state, validation score, settings, time), the chosen one, the job's own
settings' score, and the chosen student's test score; written as tune/summary.json and tune/report.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distilflow.io import write_json_atomic, write_text_atomic
from distilflow.jobs.context import StageContext
from distilflow.report.tuning import tuning_markdown

if TYPE_CHECKING:
    import optuna


def _trial_row(trial: "optuna.trial.FrozenTrial") -> dict[str, Any]:
    attrs = trial.user_attrs
    return {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
            "settings": attrs.get("settings", trial.params), "scores": attrs.get("scores", []),
            "steps": attrs.get("steps"), "seconds": attrs.get("seconds"),
            "job_settings": bool(attrs.get("job_settings")), "retry_of": attrs.get("retry_of"),
            "error": attrs.get("error")}


def summarize(base: StageContext, study: "optuna.Study", test: dict[str, Any] | None,
              seconds: float) -> dict[str, Any]:
    trials = [_trial_row(t) for t in study.get_trials(deepcopy=False) if t.state.name != "RUNNING"]
    best = study.best_trial
    own = next((t for t in trials if t["job_settings"] and t["state"] == "complete"), None)
    return {
        "metric": base.task.primary_metric, "scored_on": "validation", "minutes": round(seconds / 60, 3),
        "trials": trials,
        "counts": {state: sum(t["state"] == state for t in trials) for state in ("complete", "pruned", "fail")},
        "best": {"number": best.number, "value": best.value, "settings": best.user_attrs.get("settings", best.params)},
        "job_settings_value": own["value"] if own else None,
        "test": test,  # the chosen student only, scored once
        "best_spec": str(base.paths.best_spec),
    }


def write_summary(base: StageContext, summary: dict[str, Any]) -> None:
    write_json_atomic(base.paths.tune_summary, summary)
    write_text_atomic(base.paths.tune / "report.md", "\n".join(tuning_markdown(summary)) + "\n")
