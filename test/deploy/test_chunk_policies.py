"""Chunk policies (ROS-free): each merges chunks and asks for inference as specified."""

from __future__ import annotations

import numpy as np
import pytest

from koch_policy.chunk_policies import CHUNK_POLICIES, ChunkPolicyName, make_chunk_policy

FPS = 30.0
DT = 1.0 / FPS


def _chunk(value: float, n: int = 20) -> np.ndarray:
    return np.full((n, 2), value)


def _ramp(start: float, n: int = 20) -> np.ndarray:
    return (start + np.arange(n))[:, None] * np.ones((1, 2))


def test_execute_k_serves_only_the_first_k_and_replans_by_latency() -> None:
    policy = make_chunk_policy(ChunkPolicyName.EXECUTE_K, FPS, n_action_steps=10)
    policy.accept(_ramp(0), t_obs=1.0, now=1.0)
    np.testing.assert_array_equal(policy.due(1.0)[:, 0], np.arange(10))
    assert not policy.needs_inference(1.0 + 3 * DT, lead_ticks=2)
    assert policy.needs_inference(1.0 + 8 * DT, lead_ticks=2)
    assert policy.due(1.0 + 10 * DT) is None


def test_latest_only_replaces_the_plan_and_runs_the_whole_chunk() -> None:
    policy = make_chunk_policy(ChunkPolicyName.LATEST_ONLY, FPS, n_action_steps=10, threshold=0.5)
    policy.accept(_ramp(0), t_obs=1.0, now=1.0)
    assert len(policy.due(1.0)) == 20  # beyond n_action_steps
    assert not policy.needs_inference(1.0 + 5 * DT, lead_ticks=1)
    assert policy.needs_inference(1.0 + 10 * DT, lead_ticks=1)  # half a chunk left
    policy.accept(_ramp(100), t_obs=1.0 + 5 * DT, now=1.0 + 7 * DT)
    np.testing.assert_array_equal(policy.due(1.0 + 7 * DT)[:, 0], 100 + np.arange(2, 20))


def test_overlap_blend_weights_old_and_new_on_the_overlap() -> None:
    policy = make_chunk_policy(ChunkPolicyName.OVERLAP_BLEND, FPS, n_action_steps=10)
    policy.accept(_chunk(0.0), t_obs=1.0, now=1.0)
    policy.accept(_chunk(1.0), t_obs=1.0 + 10 * DT, now=1.0 + 11 * DT)
    due = policy.due(1.0 + 11 * DT)[:, 0]
    # the old chunk covered 10 more steps from t_obs: 9 of them are still due, blended 0.3/0.7
    np.testing.assert_allclose(due[:9], 0.7)
    np.testing.assert_allclose(due[9:], 1.0)
    assert policy.chunks_in_use(1.0 + 11 * DT) == 2


def test_temporal_ensembling_averages_every_prediction_with_act_weights() -> None:
    m = 0.5
    policy = make_chunk_policy(ChunkPolicyName.TEMPORAL_ENSEMBLING, FPS, n_action_steps=1, ensemble_coeff=m)
    assert policy.needs_inference(0.0, lead_ticks=0)  # every tick
    policy.accept(_chunk(0.0), t_obs=1.0, now=1.0)
    policy.accept(_chunk(1.0), t_obs=1.0 + DT, now=1.0 + DT)
    policy.accept(_chunk(2.0), t_obs=1.0 + 2 * DT, now=1.0 + 2 * DT)
    due = policy.due(1.0 + 2 * DT)
    w = np.exp(-m * np.arange(3))  # oldest first, as ACT
    assert due[0, 0] == pytest.approx((w @ [0.0, 1.0, 2.0]) / w.sum())
    # the last steps of the newest chunk are covered by it alone
    assert due[-1, 0] == pytest.approx(2.0)
    assert policy.chunks_in_use(1.0 + 2 * DT) == 3
    assert policy.needs_inference(1.0 + 2 * DT, lead_ticks=0)


def test_rtc_freezes_the_actions_executed_during_inference_and_blends_the_rest() -> None:
    policy = make_chunk_policy(ChunkPolicyName.RTC, FPS, n_action_steps=10)
    policy.accept(_chunk(0.0), t_obs=1.0, now=1.0)
    t_obs = 1.0 + 5 * DT
    policy.accept(_chunk(1.0), t_obs=t_obs, now=t_obs + 3 * DT)  # 3 ticks of inference delay
    assert policy.last_frozen == 3
    plan = policy.due(t_obs)[:, 0]
    np.testing.assert_allclose(plan[:3], 0.0)  # frozen to the old chunk
    assert np.all(np.diff(plan[:16]) >= 0)  # then a monotone hand-over to the new chunk
    np.testing.assert_allclose(plan[15:], 1.0)  # old chunk ended at t_obs + 15 ticks
    assert 0.0 < plan[5] < 1.0


@pytest.mark.parametrize("name", CHUNK_POLICIES)
def test_every_policy_serves_a_single_chunk_from_now_and_clears(name: str) -> None:
    policy = make_chunk_policy(name, FPS, n_action_steps=20)
    assert policy.due(0.0) is None and policy.needs_inference(0.0, lead_ticks=1)
    policy.accept(_ramp(0), t_obs=1.0, now=1.0)
    np.testing.assert_allclose(policy.due(1.0 + 4 * DT)[:3, 0], [4, 5, 6])
    assert policy.ticks_left(1.0 + 4 * DT) == 16
    policy.clear()
    assert policy.due(1.0 + 4 * DT) is None


def test_the_registry_has_a_class_for_every_name_and_accepts_the_names_as_text() -> None:
    assert list(CHUNK_POLICIES) == list(ChunkPolicyName)
    for name, cls in CHUNK_POLICIES.items():
        assert cls.name is name
        policy = make_chunk_policy(name.value, FPS, 10)  # as the ROS parameter carries it
        assert type(policy) is cls and policy.name is name


def test_unknown_policy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="temporal_ensembling"):
        make_chunk_policy("ensemble", FPS, 10)
