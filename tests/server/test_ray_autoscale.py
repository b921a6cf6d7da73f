"""QueuedTokensPolicy: replicas from the token backlog (no cluster; Ray's own wrapper when installed)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace
from typing import Any

import pytest

from qembed.server.ray_autoscale import QUEUED_TOKENS, QueuedTokensPolicy


def ctx(
    backlog: dict[str, float] | None,
    *,
    current: int = 2,
    target: int | None = None,
    low: int = 1,
    high: int = 8,
    requests: float = 0.0,
) -> Any:
    """The attributes of Ray's AutoscalingContext the policy reads."""
    return SimpleNamespace(
        current_num_replicas=current,
        target_num_replicas=current if target is None else target,
        aggregated_metrics=None if backlog is None else {QUEUED_TOKENS: backlog},
        total_num_requests=requests,
        capacity_adjusted_min_replicas=low,
        capacity_adjusted_max_replicas=high,
        policy_state={},
    )


def test_replicas_follow_the_token_backlog_not_the_request_count() -> None:
    policy = QueuedTokensPolicy(target_queued_tokens=1000)
    # 2 replicas, 5,000 tokens waiting in all: 5 replicas keep each at the target
    wanted, state = policy(ctx({"a": 4000.0, "b": 1000.0}, requests=2))
    assert wanted == 5
    assert state["last_backlog_tokens"] == 5000.0 and state["last_reporting_replicas"] == 2
    # many requests in flight but almost no tokens queued: no scale-up
    assert policy(ctx({"a": 10.0, "b": 20.0}, requests=500))[0] == 1
    # 1 token over a whole target: one more replica
    assert policy(ctx({"a": 1000.0, "b": 1001.0}))[0] == 3


def test_bounds_and_the_empty_backlog() -> None:
    policy = QueuedTokensPolicy(target_queued_tokens=100)
    assert policy(ctx({"a": 1e6}, high=4))[0] == 4  # capacity-adjusted max
    assert policy(ctx({"a": 0.0, "b": 0.0}, low=2))[0] == 2  # capacity-adjusted min
    # idle and min 0: scale to zero is allowed ...
    assert policy(ctx({"a": 0.0}, current=1, low=0))[0] == 0
    # ... but not while requests are being served
    assert policy(ctx({"a": 0.0}, current=1, low=0, requests=3))[0] == 1
    assert policy(ctx({"a": -5.0, "b": 150.0}))[0] == 2  # a bogus negative report counts as 0


def test_no_reports_keeps_what_ray_aims_for() -> None:
    policy = QueuedTokensPolicy(target_queued_tokens=100)
    assert policy(ctx(None, current=1, target=3))[0] == 3
    assert policy(ctx({}, current=2, target=2))[0] == 2


def test_target_must_be_positive() -> None:
    with pytest.raises(ValueError, match="target_queued_tokens"):
        QueuedTokensPolicy(target_queued_tokens=0)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray (the `ray` extra) is not installed")
def test_through_rays_own_policy_loading_and_wrapper() -> None:
    """The policy as Ray's controller runs it: imported from the path in the config, pickled by
    value, instantiated once with policy_kwargs, wrapped with delays and factors."""
    from ray.serve._private.autoscaling_state import _resolve_policy_callable
    from ray.serve.autoscaling_policy import _apply_autoscaling_config
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    from qembed.server.ray_serve import RayServeOptions, deployment_options
    from qembed.settings import Settings

    options = RayServeOptions(min_replicas=1, max_replicas=6, target_queued_tokens=500, upscale_delay_s=0)
    config = AutoscalingConfig(**deployment_options(Settings(), options)["autoscaling_config"])
    policy = _apply_autoscaling_config(_resolve_policy_callable(config.policy))

    def context(backlog: dict[str, float], current: int) -> AutoscalingContext:
        return AutoscalingContext(
            deployment_id=None,
            deployment_name="qembed",
            app_name="qembed",
            current_num_replicas=current,
            target_num_replicas=current,
            running_replicas=list(backlog),
            total_num_requests=1.0,
            total_queued_requests=0.0,
            aggregated_metrics={QUEUED_TOKENS: backlog},
            raw_metrics=None,
            capacity_adjusted_min_replicas=1,
            capacity_adjusted_max_replicas=6,
            policy_state={},
            last_scale_up_time=None,
            last_scale_down_time=None,
            current_time=None,
            config=config,
        )

    wanted, _ = policy(context({"a": 1200.0, "b": 800.0}, current=2))
    assert wanted == 4  # 2,000 tokens / 500 per replica, no upscale delay
    # scaling down waits for downscale_delay_s (120 s by default): not on the first tick
    wanted, _ = policy(context({"a": 0.0, "b": 0.0, "c": 0.0}, current=3))
    assert wanted == 3
