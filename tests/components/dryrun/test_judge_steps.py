"""The judges' dry-run steps: the critic's pair step and the sync expert's step at the 1.3B profile's window, on
the meta device, reported as one-process rows of the capacity table."""

from __future__ import annotations

from pathlib import Path

from components.config import load_params
from components.dryrun.judge_steps import critic_step, sync_expert_step
from components.dryrun.report import table
from components.dryrun.run import STAGES, dry_run

REPO = Path(__file__).resolve().parents[3]


def test_critic_and_sync_expert_steps_run_at_the_profile_shapes():
    params = load_params(REPO / "params.wan13b.yaml")
    critic = critic_step(params)
    assert critic.trains and not critic.sharded
    assert critic.clips == 2 * params.critic.batch_size and critic.tokens_per_clip == params.data.frames
    assert critic.trainable_params == critic.total_params > 0 and critic.flops > 0 and critic.activation_bytes > 0
    sync = sync_expert_step(params)
    assert sync.trains and not sync.sharded and sync.clips == params.sync_expert.batch_size and sync.flops > 0
    text = table(params, [critic, sync])
    assert f"| critic (1 GPU) | {critic.total_params / 1e6:.2f} M |" in text
    assert f"| {params.critic.steps:,} |" in text.split("| critic")[1].splitlines()[0]


def test_dry_run_knows_the_judge_stages_and_reports_them_by_name():
    assert {"critic", "sync_expert"} <= set(STAGES)
    run = dry_run(load_params(REPO / "params.wan13b.yaml"), ["sync_expert"])
    assert not run.failures and [m.stage for m in run.measures] == ["sync_expert"]
