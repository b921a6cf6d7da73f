"""The Ray Serve autoscaling policy of qembed: replicas from the token backlog, not request count.

Why not Ray's default (ongoing requests per replica): one qembed request may carry one
short query or 2,048 long documents, so "3 requests in flight" says nothing about how
long a replica needs to clear its queue. The backlog that does is the number of tokens
waiting for the model (``qembed_queue_tokens``, ``BatchQueue.queued_tokens``): each
replica reports it through ``record_autoscaling_stats`` (``ray_serve.QembedReplica``),
Ray aggregates it per replica over ``look_back_period_s``, and this policy asks for as
many replicas as keep each one at ``target_queued_tokens`` -- the HPA / KEDA rule
``ceil(total backlog / target per replica)``.

Ray applies ``upscale_delay_s`` / ``downscale_delay_s``, the scaling factors and
``min_replicas`` / ``max_replicas`` around the number returned here (its
``_apply_autoscaling_config`` wrapper); the policy clamps to the capacity-adjusted bounds
too, so that a direct call (the unit tests) returns a number Ray could apply.

No Ray import: the controller unpickles this class by value, and the tests call it with a
stand-in context (``AutoscalingContext``'s attributes are all it reads).
"""

from __future__ import annotations

import math
from typing import Any

QUEUED_TOKENS = "queued_tokens"  # the key of record_autoscaling_stats' dict
DEFAULT_TARGET_QUEUED_TOKENS = 16384  # about two CPU batches / one GPU batch waiting per replica


class QueuedTokensPolicy:
    """``AutoscalingPolicy(policy_function=QueuedTokensPolicy, policy_kwargs={"target_queued_tokens": N})``.

    A class (Ray instantiates it once with ``policy_kwargs`` and calls it every control
    loop tick), so the target travels as a plain JSON value and no state is global.
    """

    def __init__(self, target_queued_tokens: int = DEFAULT_TARGET_QUEUED_TOKENS) -> None:
        if target_queued_tokens < 1:
            raise ValueError(f"target_queued_tokens must be >= 1, got {target_queued_tokens}")
        self.target_queued_tokens = int(target_queued_tokens)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        """(replicas wanted, policy state) for one tick of Ray's controller."""
        state = dict(ctx.policy_state or {})
        current = int(ctx.current_num_replicas)
        per_replica = (ctx.aggregated_metrics or {}).get(QUEUED_TOKENS) or {}
        if not per_replica:
            # No replica has reported yet (starting, or stats disabled after a bad value):
            # no evidence either way, so keep the replicas Ray already aims for.
            return self._bounded(int(ctx.target_num_replicas), ctx), state
        backlog = float(sum(max(0.0, float(v)) for v in per_replica.values()))
        wanted = math.ceil(backlog / self.target_queued_tokens)
        if wanted == 0 and current > 0 and float(ctx.total_num_requests or 0) > 0:
            # Requests in flight but nothing queued (the model is just keeping up): one
            # replica must stay, or Ray would scale a working deployment to zero.
            wanted = 1
        state["last_backlog_tokens"] = backlog
        state["last_reporting_replicas"] = len(per_replica)
        return self._bounded(wanted, ctx), state

    @staticmethod
    def _bounded(wanted: int, ctx: Any) -> int:
        low = int(ctx.capacity_adjusted_min_replicas)
        high = int(ctx.capacity_adjusted_max_replicas)
        return max(low, min(high, wanted))
