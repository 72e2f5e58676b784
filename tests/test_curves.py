"""Training curves: TRL histories in rollout steps, verl's from a real MLflow store, and the
overlay naming any method whose history is missing."""

from __future__ import annotations

import json

import pytest

from pipelines import curves

REWARD, ENTROPY = curves.CURVES[0][0], curves.CURVES[1][0]


def _log_history():
    return [
        {"step": 2, "reward": 0.2, "group/semantic_entropy": 1.9, "loss": 0.1},
        {"step": 4, "reward": 0.5, "group/semantic_entropy": 1.1},
        {"step": 4, "train_runtime": 12.0},
    ]  # TRL's closing entry carries no curve


def test_trl_history_is_in_rollout_steps_and_skips_entries_without_the_metric():
    history = curves.trl_history(_log_history(), updates_per_step=2)
    assert history[REWARD] == [(1.0, 0.2), (2.0, 0.5)] and history[ENTROPY] == [(1.0, 1.9), (2.0, 1.1)]
    assert curves.CURVES[2][0] not in history  # never logged: no empty panel line


def test_trl_method_history_reads_the_file_beside_the_checkpoints(tmp_path):
    (tmp_path / "log_history.json").write_text(json.dumps(_log_history()))
    manifest = {"backend": "trl", "trainer": {"prompts_per_step": 8, "mini_batch_prompts": 4}}
    assert curves.method_history({"checkpoints": str(tmp_path)}, manifest, None)[REWARD][-1] == (2.0, 0.5)
    (tmp_path / "log_history.json").unlink()
    with pytest.raises(SystemExit, match="log_history.json"):
        curves.method_history({"checkpoints": str(tmp_path)}, manifest, None)


def test_verl_history_comes_from_the_training_run_in_mlflow(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("curves", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        for step, score in ((1, 0.1), (2, 0.3), (3, 0.6)):
            mlflow.log_metrics({"critic/score/mean": score, "group/semantic_entropy": 2.0 - score}, step=step)
    tracking = {"enabled": True, "tracking_uri": uri}
    history = curves.method_history({}, {"backend": "verl", "training_run_id": run.info.run_id}, tracking)
    assert history[REWARD] == [(1.0, 0.1), (2.0, 0.3), (3.0, 0.6)]
    assert history[ENTROPY][-1] == (3.0, pytest.approx(1.4))
    assert curves.method_history({}, {"backend": "verl", "training_run_id": run.info.run_id}, None) == {}


def test_overlay_draws_every_method_and_names_the_ones_without_history(tmp_path):
    histories = {
        "empo": curves.trl_history(_log_history(), 1),
        "grpo": curves.trl_history(_log_history(), 2),
        "verl-run": {},
    }
    missing = curves.plot_overlay(histories, tmp_path / "overlay.png", "m: training curves")
    assert missing == ["verl-run"] and (tmp_path / "overlay.png").stat().st_size > 10_000


def test_rewards_on_different_scales_are_drawn_as_changes_from_their_first_step(tmp_path):
    """Agreement rewards in [0, 1] stay as they are; once a method's reward leaves [0, 1] (a
    self-certainty of ~10 nats), every method's reward is its change from its first step."""
    agreement = {curves.REWARD_PANEL: [(1, 0.2), (2, 0.5)], ENTROPY: [(1, 1.9), (2, 1.1)]}
    certainty = {curves.REWARD_PANEL: [(1, 9.7), (2, 9.2)]}
    assert curves.on_one_reward_axis({"empo": agreement, "grpo": agreement}) == {"empo": agreement, "grpo": agreement}
    shifted = curves.on_one_reward_axis({"empo": agreement, "self_certainty": certainty})
    assert [(step, round(value, 6)) for step, value in shifted["empo"][curves.REWARD_CHANGE_PANEL]] == [
        (1, 0.0),
        (2, 0.3),
    ]
    assert [(step, round(value, 6)) for step, value in shifted["self_certainty"][curves.REWARD_CHANGE_PANEL]] == [
        (1, 0.0),
        (2, -0.5),
    ]
    assert curves.REWARD_PANEL not in shifted["empo"] and shifted["empo"][ENTROPY] == agreement[ENTROPY]
    curves.plot_overlay({"empo": agreement, "self_certainty": certainty}, tmp_path / "overlay.png", "m")
    assert (tmp_path / "overlay.png").stat().st_size > 10_000
