"""Training curves: one figure per training job, and one figure per model overlaying its methods.

`python -m pipelines.curves` is the `curves` stage: after every training job of a model, it
draws the methods' reward, semantic entropy, majority share and majority-vs-gold accuracy on
shared axes, and, where the job scored a held-out set during training (TRL `validation`), its
sampled (mean@n), majority (maj@n) and greedy accuracy: EMPO's rising agreement and the
accuracy it buys (or not) are seen together, beside the supervised and baseline runs.

Step histories come from files where the trainer writes them (TRL: `log_history.json` beside
the checkpoints) and from the training job's MLflow run where it does not (verl logs its step
metrics to MLflow only). The x axis is the rollout step (one batch of prompts sampled and
scored), the unit both trainers share; TRL's optimizer steps are divided by the updates per
rollout step.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, stage_parser

LOG = logging.getLogger(__name__)

#: (panel title, TRL log key, verl metric name or None): what people look at first. The first
#: four are the training rollouts'; the held-out ones come from `pipelines.train.validation`.
CURVES = (
    ("reward (mean over rollouts)", "reward", "critic/score/mean"),
    ("semantic entropy of a group", "group/semantic_entropy", "group/semantic_entropy"),
    ("majority share of a group", "group/majority_ratio", "group/majority_ratio"),
    (
        "majority answer correct (uses gold; not a reward)",
        "group/majority_vs_gold_accuracy",
        "group/majority_vs_gold_accuracy",
    ),
    ("held-out accuracy, sampled (mean@n)", "validation/mean_accuracy", None),
    ("held-out accuracy, majority vote (maj@n)", "validation/majority_accuracy", None),
    ("held-out accuracy, greedy", "validation/greedy_accuracy", None),
)
#: Panels per row of the overlay figure.
PANELS_PER_ROW = 4

#: The TRL log keys above, in order (the per-job figure's panels).
CURVE_METRICS = tuple(trl for _, trl, _ in CURVES)

History = dict[str, list[tuple[float, float]]]  # panel title -> [(rollout step, value)]


def trl_history(log_history: Sequence[Mapping[str, Any]], updates_per_step: int) -> History:
    """TRL's `trainer.state.log_history` as curves per panel, in rollout steps."""
    curves: History = {}
    for title, key, _ in CURVES:
        points = [
            (entry["step"] / updates_per_step, float(entry[key]))
            for entry in log_history
            if key in entry and "step" in entry
        ]
        if points:
            curves[title] = points
    return curves


def mlflow_history(tracking_config: Mapping[str, Any] | None, run_id: str | None) -> History:
    """A verl job's curves from its MLflow run (verl writes its step metrics nowhere else)."""
    if not run_id or not tracking_config or not tracking_config.get("enabled", True):
        return {}
    from mlflow import MlflowClient

    from pipelines.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tracking_config["tracking_uri"]))
    curves: History = {}
    for title, _, key in CURVES:
        if key is None:
            continue
        try:
            points = sorted((float(m.step), float(m.value)) for m in client.get_metric_history(run_id, key))
        except Exception as error:  # noqa: BLE001 - a missing run leaves its curve out, said in the log
            LOG.warning("MLflow history of %s in run %s unavailable: %s", key, run_id, error)
            return {}
        if points:
            curves[title] = points
    return curves


def method_history(
    entry: Mapping[str, Any], manifest: Mapping[str, Any], tracking_config: Mapping[str, Any] | None
) -> History:
    """One trained model's curves: TRL from its log_history.json, verl from MLflow."""
    if manifest.get("backend") == "trl":
        path = Path(entry["checkpoints"]) / "log_history.json"
        if not path.is_file():
            raise SystemExit(f"{path}: the TRL training job's step history is missing (rerun its train job)")
        from pipelines.train.trl_backend import updates_per_step

        return trl_history(json.loads(path.read_text()), updates_per_step(manifest["trainer"]))
    return mlflow_history(tracking_config, manifest.get("training_run_id"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


REWARD_PANEL = CURVES[0][0]
REWARD_CHANGE_PANEL = "reward, change from the first step (rewards on different scales)"


def on_one_reward_axis(histories: Mapping[str, History]) -> dict[str, History]:
    """Rewards within [0, 1] (agreement, correctness, format, coin flip) are drawn as they are.
    If a method's reward leaves [0, 1] (the token-distribution rewards: an entropy, a
    log-probability, a KL of ~10 nats), every method's reward is drawn as its change from its
    first step instead, so one axis shows whether each rose or fell."""
    values = [value for history in histories.values() for _, value in history.get(REWARD_PANEL, [])]
    if all(0.0 <= value <= 1.0 for value in values):
        return dict(histories)
    changes = {}
    for method, history in histories.items():
        history = dict(history)
        if REWARD_PANEL in history:
            points = history.pop(REWARD_PANEL)
            history[REWARD_CHANGE_PANEL] = [(step, value - points[0][1]) for step, value in points]
        changes[method] = history
    return changes


def plot_overlay(histories: Mapping[str, History], path: Path, title: str) -> list[str]:
    """One panel per curve, one line per method; returns the methods that had no history."""
    plt = _pyplot()
    histories = on_one_reward_axis(histories)
    shifted = any(REWARD_CHANGE_PANEL in history for history in histories.values())
    panels = [REWARD_CHANGE_PANEL if shifted and title_ == REWARD_PANEL else title_ for title_, _, _ in CURVES]
    titles = [panel for panel in panels if any(panel in history for history in histories.values())]
    missing = [method for method, history in histories.items() if not history]
    columns = min(max(len(titles), 1), PANELS_PER_ROW)
    rows = max(1, -(-len(titles) // PANELS_PER_ROW))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows + 0.4), squeeze=False)
    panels = [axis for row in axes for axis in row]
    colours = {method: f"C{position}" for position, method in enumerate(histories)}
    for axis, panel in zip(panels, titles):
        for method, history in histories.items():
            if panel in history:
                steps, values = zip(*history[panel])
                axis.plot(steps, values, marker="o", markersize=2.5, linewidth=1.4, label=method, color=colours[method])
        axis.set_title(panel, fontsize=9)
        axis.set_xlabel("rollout step")
        axis.grid(alpha=0.3)
        if panel.startswith("held-out"):
            axis.set_ylim(-0.02, 1.02)
    for axis in panels[len(titles) :]:
        axis.set_axis_off()
    if titles:
        handles = {}
        for axis in panels[: len(titles)]:
            for handle, label in zip(*axis.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        figure.legend(
            list(handles.values()),
            list(handles),
            loc="lower center",
            ncol=min(len(handles), 6),
            fontsize=8,
            frameon=False,
        )
    else:
        panels[0].text(0.5, 0.5, "no step history", ha="center", va="center")
        panels[0].set_axis_off()
    note = f" (no step history: {', '.join(missing)})" if missing else ""
    figure.suptitle(title + note, fontsize=10)
    figure.tight_layout(rect=(0, 0.25 / (3.3 * rows + 0.4) * 2, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return missing


def plot_method_curves(log_history: Sequence[Mapping[str, Any]], path: Path, title: str | None = None) -> None:
    """One TRL job's curves (its optimizer steps), saved beside its checkpoints."""
    plt = _pyplot()
    present = [m for m in CURVE_METRICS if any(m in entry for entry in log_history)]
    if not present:
        return
    columns = min(len(present), PANELS_PER_ROW)
    rows = -(-len(present) // PANELS_PER_ROW)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    panels = [axis for row in axes for axis in row]
    for axis in panels[len(present) :]:
        axis.set_axis_off()
    for axis, metric in zip(panels, present):
        points = [(e["step"], e[metric]) for e in log_history if metric in e and "step" in e]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        axis.set_title(metric, fontsize=9)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.curves` — one model's methods' training curves on shared axes."""
    from pipelines import tracking
    from pipelines.models import read_manifest

    parser = stage_parser(main.__doc__)
    parser.add_argument(
        "--manifests",
        nargs="+",
        required=True,
        type=Path,
        help="the trained models' manifests, in the spec's method order",
    )
    parser.add_argument("--output", required=True, type=Path)
    args, spec, tracking_config = parse_stage_args(parser, argv)
    if len(args.manifests) != len(spec["methods"]):
        raise SystemExit(f"{len(args.manifests)} manifests for {len(spec['methods'])} methods in the spec")
    histories = {
        entry["method"]: method_history(entry, read_manifest(path), tracking_config)
        for entry, path in zip(spec["methods"], args.manifests)
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tracking.job_run(tracking_config, "curves", spec["model"], spec, log_file=args.log_file) as tracker:
        tracker.set_tags({"model": spec["model"]})
        missing = plot_overlay(histories, args.output, f"{spec['model']}: training curves of every method")
        for method in missing:
            LOG.warning("%s/%s: no step history found (verl without MLflow tracking?)", spec["model"], method)
        tracker.log_artifact(args.output, "curves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
