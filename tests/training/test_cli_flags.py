"""Flags made from a settings dataclass (``training.cli.flags``) and the PPO CLI built on them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from training.cli.flags import add_dataclass_flags, dataclass_from_flags, field_docs
from training.cli.ppo import parse_args, ppo_args_from
from training.rl.args import PPOArgs

SHIPPED = Path(__file__).resolve().parents[2] / "hierrouter_graph" / "default_policy"


@dataclass(frozen=True)
class Settings:
    """A settings class of every supported kind of field."""

    steps: int = 3
    """How many steps."""
    rate: float = 0.5
    kind: str = field(default="a", metadata={"choices": ("a", "b")})
    cap: float | None = None
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def _parser(**kwargs: object) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Settings, **kwargs)  # type: ignore[arg-type]
    return parser


def test_each_field_is_one_flag_with_its_type_default_help_and_choices() -> None:
    parser = _parser(aliases={"rate": ("--r",)})
    assert dataclass_from_flags(parser.parse_args([]), Settings) == Settings()
    got = dataclass_from_flags(
        parser.parse_args(["--steps", "7", "--r", "0.25", "--kind", "b", "--cap", "2", "--no-shuffle"]),
        Settings,
    )
    assert got == Settings(steps=7, rate=0.25, kind="b", cap=2.0, shuffle=False)
    assert field_docs(Settings) == {"steps": "How many steps."}
    assert "How many steps. (default: 3)" in " ".join(parser.format_help().split())
    with pytest.raises(SystemExit):
        parser.parse_args(["--kind", "c"])


def test_defaults_come_from_an_instance_and_the_dataclass_checks_the_result() -> None:
    parser = _parser(defaults=Settings(steps=9), exclude=("cap",))
    ns = parser.parse_args([])
    assert ns.steps == 9 and not hasattr(ns, "cap")
    assert dataclass_from_flags(ns, Settings, Settings(cap=1.0)) == Settings(steps=9, cap=1.0)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        dataclass_from_flags(parser.parse_args(["--steps", "0"]), Settings)


def test_a_field_no_flag_can_carry_is_named() -> None:
    @dataclass
    class Bad:
        names: list[str] = field(default_factory=list)

    with pytest.raises(TypeError, match=r"Bad\.names: no flag for a field of type list\[str\]"):
        add_dataclass_flags(argparse.ArgumentParser(), Bad)


def test_ppo_flags_are_ppoargs_fields_and_the_documented_spellings_still_parse() -> None:
    short = ppo_args_from(parse_args(["--minibatches", "2", "--epochs", "1", "--lr", "0.001"]))
    long = ppo_args_from(
        parse_args(["--num-minibatches", "2", "--update-epochs", "1", "--learning-rate", "0.001"])
    )
    assert short == long == PPOArgs(num_minibatches=2, update_epochs=1, learning_rate=0.001)
    assert ppo_args_from(parse_args(["--gae-lambda", "0.9", "--no-norm-adv"])) == PPOArgs(
        gae_lambda=0.9, norm_adv=False
    )
    assert ppo_args_from(parse_args(["--args-from", str(SHIPPED)])) == PPOArgs.from_policy(SHIPPED)
    assert ppo_args_from(parse_args(["--args-from", str(SHIPPED), "--seed", "1"])).seed == 1


def test_horizon_flag_answers_in_that_many_hops_with_the_same_members() -> None:
    from training.cli.context import load_config
    from training.cli.tune import parse_args as tune_args

    config = Path(__file__).resolve().parents[2] / "configs" / "skills-pool.yaml"
    full = load_config(parse_args(["--config", str(config)]))
    one = load_config(parse_args(["--config", str(config), "--horizon", "1"]))
    assert (full.horizon, one.horizon) == (2, 1)
    assert [m.fingerprint() for m in one.models] == [m.fingerprint() for m in full.models]
    assert one.stage_prompts[0] == full.stage_prompts[0]
    assert load_config(tune_args(["--config", str(config), "--horizon", "3"])).horizon == 3
    with pytest.raises(ValueError, match="--horizon: expected >= 1 hops, got 0"):
        load_config(parse_args(["--horizon", "0"]))
