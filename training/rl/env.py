"""The HierRouter graph replayed as a Gymnasium environment (paper Appendix A, step function).

Why a separate object and not the graph itself: PPO needs reset/step with the reward, batched
encodings and a replay cache, but it must train on exactly what the graph does at inference. So
``step`` calls ``hierrouter_graph.hop.run_hop`` — the same function every model node of the graph
calls — and grows the context with the same ``extend_context``; there is no other generation code.

State s_t = (c_t, ℓ_t, C_t), observed as {"embedding": encoder(c_t), "stage": ℓ_t, "cost": C_t}.
Action: the index of a pool model (``config.model_names`` order). Reward: 0 before the last hop,
then R = Q(c_L) − α·C_L (``training.tasks.reward``); the episode terminates after exactly L hops.

With ``config.allow_stop`` there is one more action, index M = STOP (Appendix A's done flag): it
runs no model, charges nothing, and terminates with R = Q(c_t) − α·C_t on the context so far. It is
invalid at stage 0 (no reply yet: the answer would be empty); ``action_masks()`` says which actions
are allowed now, and ``step`` refuses a forbidden one rather than guessing what was meant.

With ``config.alpha_range`` each episode draws its own cost weight α log-uniformly from the range
(or takes ``reset(options={"alpha": ...})``), observes it as ``"alpha"`` and is rewarded with it:
one policy learns the whole range of trade-offs (``policy.alpha_feature``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from hierrouter_graph.confidence import CONFIDENCE_FEATURES, Confidence, confidence_features
from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import HopResult, ReplyCache, run_hop
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.alpha import resolve_alpha
from hierrouter_graph.route import RouteState, advance
from training.replay.store import StateEncoder
from training.tasks.items import Item
from training.tasks.reward import ScoreMemo, reward_metric_of, terminal_reward

__all__ = ["HierRouterEnv", "Observation", "StopNotAllowedError"]

Observation = dict[str, Any]
"""{"embedding": float32 [D], "stage": int in [0, L], "cost": float32 [1]}."""


class StopNotAllowedError(ValueError):
    """STOP was chosen before the first hop (an empty answer), which no layer allows."""


class HierRouterEnv(gym.Env[Observation, np.int64]):
    """One episode = one item answered in L hops chosen by the agent (fewer if it may STOP).

    ``cost_scale`` divides the *observed* cost only (the reward always uses the raw C_L, as the
    graph reports it). Keep it at 1.0 when the agent is a ``RouterPolicy``: that policy divides by
    its own ``cost_scale``, and the graph hands it the raw cost at inference.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it this way)

    def __init__(
        self,
        config: RouterConfig,
        items: Sequence[Item],
        pool: Mapping[str, PoolMember],
        encoder: StateEncoder,
        *,
        reward_metric: str = "task",
        cache: ReplyCache | None = None,
        cost_scale: float = 1.0,
        encode_terminal: bool = True,
        memo: ScoreMemo | None = None,
    ) -> None:
        """``encode_terminal=False``: the observation returned with ``terminated`` carries a zero
        embedding instead of the encoded final context. Why: no decision is taken in a terminal
        state and PPO never reads its observation (its value is 0 by definition), while final
        contexts are most of a tree (M^L of its states); training skips encoding them.
        ``memo``: a score memo to share (Q depends on neither α nor the policy, so runs of a sweep
        can share one and never score an answer twice; MBPP runs code in the sandbox)."""
        if not items:
            raise ValueError("HierRouterEnv needs at least one item")
        missing = [name for name in config.model_names if name not in pool]
        if missing:
            raise KeyError(f"pool lacks models {missing} named by the config {config.model_names}")
        if cost_scale <= 0:
            raise ValueError(f"cost_scale must be > 0, got {cost_scale}")
        self.config = config
        self.items = list(items)
        self.members = [pool[name] for name in config.model_names]
        self.encoder = encoder
        self.reward_metric = reward_metric_of(reward_metric)
        self.cache = cache
        # Q of a final context never changes, and replayed episodes revisit the same few leaves of
        # each item's tree: scoring once (MBPP runs a sandboxed subprocess) keeps replay fast.
        self._quality_memo = memo if memo is not None else ScoreMemo()
        # Likewise a hop: with a cache, the same (model, context, stage) always gets the cached
        # reply, and building its prompt (tokenizing to fit the context) was most of a replayed
        # step. Without a cache every hop generates afresh, so nothing is memoized.
        self._hop_memo: dict[tuple[int, int, str], HopResult] = {}
        self.cost_scale = cost_scale
        self.encode_terminal = encode_terminal
        self.horizon = config.horizon
        self.stop_action: int | None = len(self.members) if config.allow_stop else None
        """Index of STOP in the action space (the last one), or None without ``allow_stop``."""
        self.n_actions = len(self.members) + int(config.allow_stop)
        self.action_space = spaces.Discrete(self.n_actions)
        self.uncertainty_state = config.uncertainty_state
        self.alpha_range = config.alpha_range
        self._alpha = float(config.alpha)
        observation: dict[str, spaces.Space[Any]] = {
            "embedding": spaces.Box(-np.inf, np.inf, (encoder.dim,), np.float32),
            "stage": spaces.Discrete(self.horizon + 1),
            "cost": spaces.Box(0.0, np.inf, (1,), np.float32),
        }
        if self.uncertainty_state:  # the last reply's (mean log-prob, mean entropy, known flag)
            observation["confidence"] = spaces.Box(-np.inf, np.inf, (CONFIDENCE_FEATURES,), np.float32)
        if self.alpha_range is not None:  # this episode's cost weight
            observation["alpha"] = spaces.Box(0.0, np.inf, (1,), np.float32)
        self.observation_space = spaces.Dict(observation)
        self._item: Item | None = None
        self._state = RouteState.start("")
        self._stopped = False

    @property
    def _context(self) -> str:
        return self._state.context

    @property
    def _stage(self) -> int:
        return self._state.stage

    # ------------------------------------------------------------------------------ observation

    def encode_state(
        self, context: str, stage: int, cost: float, confidence: Confidence | None = None
    ) -> Observation:
        """The observation of (c, ℓ, C) (plus the last reply's confidence with uncertainty_state)."""
        embedding = self.encoder.encode([context])[0].numpy().astype(np.float32, copy=True)
        return self._observation(embedding, stage, cost, confidence)

    def _observation(
        self, embedding: np.ndarray, stage: int, cost: float, confidence: Confidence | None = None
    ) -> Observation:
        observation: Observation = {
            "embedding": embedding,
            "stage": int(stage),
            "cost": np.array([cost / self.cost_scale], dtype=np.float32),
        }
        if self.uncertainty_state:
            observation["confidence"] = np.array(confidence_features(confidence), dtype=np.float32)
        if self.alpha_range is not None:
            observation["alpha"] = np.array([self._alpha], dtype=np.float32)
        return observation

    def action_masks(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Bool [A]: which actions are allowed in the current state (STOP only after a hop).

        Named as sb3-contrib's MaskablePPO expects; ``info["action_mask"]`` carries the same.
        """
        mask = np.ones(self.n_actions, dtype=np.bool_)
        if self.stop_action is not None:
            mask[self.stop_action] = self._stage > 0
        return mask

    # ------------------------------------------------------------------------------ episode

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        """c_0 = the item's prompt, ℓ = 0, C = 0; the item is drawn uniformly unless
        ``options={"item_index": i}`` picks it. With ``alpha_range`` the episode's α is drawn
        log-uniformly from it (after the item) unless ``options={"alpha": a}`` sets it."""
        super().reset(seed=seed)
        index = (options or {}).get("item_index")
        if index is None:
            index = int(self.np_random.integers(len(self.items)))
        elif not 0 <= int(index) < len(self.items):
            raise IndexError(f"item_index {index} out of range for {len(self.items)} items")
        self._alpha = self._episode_alpha((options or {}).get("alpha"))
        self._item = self.items[int(index)]
        self._state, self._stopped = RouteState.start(self._item.prompt), False
        info = {
            "item_index": int(index),
            "item_id": self._item.id,
            "task": self._item.task,
            "action_mask": self.action_masks(),
            "alpha": self._alpha,
        }
        return self.encode_state(self._context, 0, 0.0), info

    def _episode_alpha(self, requested: float | None) -> float:
        """``options['alpha']`` checked by the graph's rule (``alpha.resolve_alpha``: inside
        ``alpha_range``, or the config's α for a fixed-α env), else the config's α, or — with
        ``alpha_range`` — a log-uniform draw from the range."""
        if requested is not None or self.alpha_range is None:
            return resolve_alpha(requested, float(self.config.alpha), self.alpha_range, "options['alpha']")
        lo, hi = self.alpha_range
        return float(math.exp(self.np_random.uniform(math.log(lo), math.log(hi))))

    def step(self, action: int | np.integer[Any]) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """One hop with model ``action`` (or STOP); the reward is paid on the last step only."""
        if self._item is None or self._episode_over:
            raise RuntimeError("call reset() before step() (the episode is over or never started)")
        if not self.action_space.contains(action):
            labels = [*self.config.model_names, *(["STOP"] if self.stop_action is not None else [])]
            raise ValueError(
                f"invalid action {action!r}: expected an integer in [0, {self.n_actions - 1}] "
                f"(pool of {len(self.members)}: {labels})"
            )
        info: dict[str, Any] = {"stage": self._stage}
        if int(action) == self.stop_action:
            if self._stage == 0:
                raise StopNotAllowedError(
                    "invalid action STOP at stage 0: STOP is only allowed after the first hop "
                    "(the answer would be empty); see action_masks()"
                )
            self._stopped = True
            info["stopped"] = True
        else:
            member = self.members[int(action)]
            stage = self._stage
            instruction, cap = self.config.stage_prompt(stage), self.config.stage_token_cap(stage)
            hop = self._hop(int(action), instruction, cap)
            self._state = advance(self._state, member.name, hop)
            info.update(hop=hop.as_dict(), stage=self._stage)
        terminated = self._episode_over
        reward = 0.0
        state = self._state
        if terminated:
            quality = self._quality_memo.score(self._item, state.answer, self.reward_metric)
            reward = terminal_reward(quality["quality"], state.cost, self._alpha)
            info.update(
                quality=quality["quality"],
                task_metric=quality["task_metric"],
                f1=quality["f1"],
                total_cost=state.cost,
                route=list(state.route),
                stopped=self._stopped,
                item_id=self._item.id,
                task=self._item.task,
                context=state.context,
                alpha=self._alpha,
            )
        else:
            info["action_mask"] = self.action_masks()
        confidence = cast(Confidence | None, state.confidence)
        if terminated and not self.encode_terminal:
            blank = np.zeros(self.encoder.dim, dtype=np.float32)
            observation = self._observation(blank, state.stage, state.cost, confidence)
        else:
            observation = self.encode_state(state.context, state.stage, state.cost, confidence)
        return observation, float(reward), terminated, False, info

    def _hop(self, action: int, instruction: str, cap: int | None) -> HopResult:
        """``run_hop`` of member ``action`` on the current context, memoized when there is a cache."""
        member, context = self.members[action], self._context
        if self.cache is None:
            return run_hop(member, context, instruction, None, cap)
        key = (action, self._stage, context)
        seen = self._hop_memo.get(key)
        if seen is not None:
            return seen if seen.cached else dataclasses.replace(seen, cached=True)
        hop = self._hop_memo[key] = run_hop(member, context, instruction, self.cache, cap)
        return hop

    @property
    def _episode_over(self) -> bool:
        """The episode is over: L hops taken, or STOP chosen."""
        return self._stopped or self._stage >= self.horizon
