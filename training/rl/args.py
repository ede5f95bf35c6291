"""PPO's hyperparameters (``PPOArgs``): the paper's defaults, checked once, read back from a policy.

Why a module of its own: the trainer (``train.py``), the algorithm (``ppo.py``), every caller that
sets up a run (sweep, tune, curves, the dynamic-pool experiment) and the command line (whose flags
are these fields, ``training/cli/flags.py``) all read them; none of them needs the algorithm to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hierrouter_graph.loading_errors import LoadError, read_json_object
from training.rl.setup import MLP_KIND, POLICY_KINDS
from training.tasks.reward import REWARD_METRICS, reward_metric_of

__all__ = ["RESUMABLE_CHANGES", "PPOArgs"]


@dataclass
class PPOArgs:
    """Hyperparameters; the defaults are the paper's (Appendix B) where it gives one."""

    iterations: int = 8
    """PPO iterations (rollout collection + update)."""
    rollouts: int = 128
    """Episodes per iteration; each is L transitions, so the batch is ``rollouts·L`` steps."""
    num_minibatches: int = 16
    """Minibatches per update epoch."""
    update_epochs: int = 4
    """Passes over an iteration's batch."""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = False
    """CleanRL clips the value loss by default; the paper does not say, and with a terminal reward
    in [−αC, 1] and a critic starting at 0, clipping only slows the critic down."""
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    max_grad_norm: float = 0.3
    learning_rate: float = 1e-4
    adam_eps: float = 1e-4
    norm_adv: bool = True
    target_kl: float | None = None
    """Stop an iteration's update epochs early once approx KL exceeds this (None: never)."""
    seed: int = 42
    """PPO seed (init, actions, items)."""
    hidden_size: int = 256
    stage_dim: int = 16
    cost_scale: float = 1.0
    """The policy divides its cost input by this (the env always reports the raw cost)."""
    reward: str = field(default="task", metadata={"choices": REWARD_METRICS})
    """Quality used in the reward: "task" (the item's own metric) or "f1" (the paper's token-F1)."""
    device: str = "cpu"
    """Torch device of the policy."""
    policy_kind: str = field(default=MLP_KIND, metadata={"choices": POLICY_KINDS})
    """Which policy ``make_policy`` builds: mlp, RouterPolicy (fixed pool); descriptor,
    DescriptorPolicy (the pool may change after training)."""

    def __post_init__(self) -> None:
        if self.policy_kind not in POLICY_KINDS:
            raise ValueError(f"policy_kind must be one of {POLICY_KINDS}, got {self.policy_kind!r}")
        reward_metric_of(self.reward, "reward")
        for name in ("iterations", "rollouts", "num_minibatches", "update_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.cost_scale <= 0:
            raise ValueError("learning_rate and cost_scale must be > 0")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_policy(cls, policy_dir: Path) -> PPOArgs:
        """The arguments a saved policy was trained with (``policy.json``'s ``training.args``,
        written by ``train``).

        Why: "retrain the shipped policy" should name the policy, not copy its learning rate and
        length into a Makefile and docs where they drift from what was actually chosen.

        Raises:
            FileNotFoundError: no ``policy.json`` in ``policy_dir``.
            LoadError: the file records no PPO arguments, or unknown or invalid ones.
        """
        path = policy_dir / "policy.json"
        data = read_json_object(path, "a saved policy's policy.json")
        training = data.get("training")
        recorded = training.get("args") if isinstance(training, dict) else None
        if not isinstance(recorded, dict):
            raise LoadError(f"{path}: expected training.args (the PPO arguments it was trained with)")
        unknown = sorted(set(recorded) - {field.name for field in fields(cls)})
        if unknown:
            raise LoadError(f"{path}: training.args has fields PPOArgs does not know: {unknown}")
        try:
            return cls(**recorded)
        except (TypeError, ValueError) as error:
            raise LoadError(f"{path}: training.args are not valid PPO arguments: {error}") from error


RESUMABLE_CHANGES: frozenset[str] = frozenset({"iterations", "device"})
"""PPOArgs fields a resumed run may change without changing what the finished iterations computed."""
