"""Does learning from feedback help? A simulation whose answer can be checked on the recorded tree.

    python training/feedback_simulation.py --seeds 0 1 2 3 4

Per seed: the shipped policy serves every TRAIN item ``--passes`` times, drawing each member from
its π (the exploration a server started with ``--sample`` does); each route is written to a fresh
route log through the server's own ``FeedbackStore.log_route`` and scored with the tree's Q
(``add_feedback``). ``offpolicy.retrain_from_log`` then trains a new policy from
that log alone, and both policies route the TEST items greedily on the recorded tree
(``strategies.router_routes``). Reported: mean test reward R = Q − α·C of each, and the paired
difference with its 95% bootstrap interval (``training.evaluation.statistics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import CONTEXT_SEPARATOR
from hierrouter_graph.policy.trained import TrainedPolicy
from hierrouter_graph.route import RouteState, decide_next
from hierrouter_graph.serve.feedback import FeedbackStore
from training.evaluation.statistics import Interval
from training.evaluation.strategies import router_routes
from training.replay.tree import OutcomeTree
from training.tasks.items import Item

__all__ = ["SeedResult", "log_sampled_routes", "test_rewards"]


def log_sampled_routes(
    store: FeedbackStore,
    policy: TrainedPolicy,
    tree: OutcomeTree,
    items: Sequence[Item],
    alpha: float,
    horizon: int,
    passes: int,
    seed: int,
) -> int:
    """Serve ``items`` ``passes`` times with routes drawn from π; log each with its Q as feedback."""
    generator = torch.Generator().manual_seed(seed)
    logged = 0
    for round_ in range(passes):
        for item in items:
            state, trace = RouteState.start(item.prompt, alpha), []
            while state.stage < horizon:
                decision = decide_next(policy, state, False, sample=True, generator=generator)
                node = tree[item.id][(*state.route, decision.model)]
                reply = node.context[len(state.context) + len(CONTEXT_SEPARATOR) :]
                trace.append(
                    {
                        "stage": state.stage,
                        "model": decision.model,
                        "prob": decision.prob,
                        "reply": reply,
                        "cost": node.cost - state.cost,
                        "cumulative_cost": node.cost,
                    }
                )
                state = RouteState(
                    item.prompt, node.context, state.stage + 1, node.cost, node.route, alpha=alpha
                )
            completion_id = f"sim-{seed}-{round_}-{item.id}"
            output = {"query": item.prompt, "cost": state.cost, "trace": trace}
            store.log_route(completion_id, output, alpha, created=float(logged))
            store.add_feedback(completion_id=completion_id, score=tree[item.id][state.route].quality)
            logged += 1
    return logged


def test_rewards(
    policy: TrainedPolicy, config: RouterConfig, tree: OutcomeTree, items: Sequence[Item]
) -> np.ndarray:
    """Per test item, R of the policy's greedy route on the recorded tree."""
    routes = router_routes(policy, config, tree, items)
    return np.array([tree[item.id][route].reward for item, route in zip(items, routes, strict=True)])


@dataclass(frozen=True)
class SeedResult:
    seed: int
    routes_logged: int
    logging: float
    retrained: float
    change: Interval
