"""training/sweep.py on a scripted pool whose outcome tree is recorded to depth 2 only.

The pool is ``tests/training/scripted_pool.py``'s (planner → solver is the only right route).
The tree is recorded for L ≤ 2, so the sweep must
run L = 1 and L = 2 (with and without STOP) and skip L = 3 naming the record command.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hierrouter_graph import RouterConfig
from hierrouter_graph.config import PAPER_STAGE_PROMPTS
from hierrouter_graph.graph import build_pool
from hierrouter_graph.policy.encoder import TextEncoder
from tests.training.scripted_pool import POOL, chat_models, make_items, scripted_config
from training.cli.record import parser as record_parser
from training.evaluation import evaluate as ev
from training.evaluation.reports import write_marked_section, write_report
from training.evaluation.strategies import ROUTER
from training.experiments.settings import Setting, setting_config, settings_grid
from training.experiments.sweep import SECTION, SweepResult, run_sweep
from training.experiments.sweep_report import markdown_section, plot_pareto
from training.replay.record import record_outcome_tree
from training.replay.store import ReplayStore
from training.replay.tree import outcome_tree, with_horizon
from training.rl.args import PPOArgs
from training.rl.train import run_metadata

TRAIN, TEST = make_items(6, offset=100), make_items(4, offset=0)
ALPHAS = (0.0, 0.05)
TINY = PPOArgs(iterations=1, rollouts=8, num_minibatches=2, update_epochs=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base() -> RouterConfig:
    return scripted_config()


@pytest.fixture(scope="module")
def pool(base: RouterConfig) -> Any:
    return build_pool(base, chat_models())


@pytest.fixture(scope="module")
def store(base: RouterConfig, pool: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with ReplayStore(tmp_path_factory.mktemp("sweep") / "replay.sqlite") as replay:
        record_outcome_tree(base, pool, [*TRAIN, *TEST], replay, progress=False)  # L ≤ 2 only
        yield replay


@pytest.fixture(scope="module")
def sweep_run(
    base: RouterConfig,
    pool: Any,
    store: ReplayStore,
    encoder: TextEncoder,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[SweepResult, list[str], Path]:
    run_dir = tmp_path_factory.mktemp("runs")
    log: list[str] = []
    grid = settings_grid([1, 2, 3], ALPHAS, [1, 2])
    return (
        run_sweep(base, pool, TRAIN, TEST, store, encoder, grid, TINY, run_dir, log=log.append),
        log,
        run_dir,
    )


def test_grid_and_deeper_configs(base: RouterConfig) -> None:
    grid = settings_grid([2, 1], [0.01, 0.001], [1, 2])
    assert [s.name for s in grid] == [
        "L1-a0.001", "L1-a0.01", "L2-a0.001", "L2-a0.01", "L2-a0.001-stop", "L2-a0.01-stop",
    ]  # fmt: skip
    # STOP at L = 1 would be a copy of L = 1 (STOP is never allowed at the only decision): dropped
    with_conf = settings_grid([2, 1], [0.01], [], [1, 2])
    assert [s.name for s in with_conf] == ["L1-a0.01", "L2-a0.01", "L2-a0.01-conf"]  # no reply to read at L=1
    assert setting_config(base, with_conf[-1]).uncertainty_state is True
    assert with_conf[-1].family == "L=2 + confidence"
    deeper = setting_config(base, Setting(3, True, 0.01))
    assert (deeper.horizon, deeper.alpha, deeper.allow_stop) == (3, 0.01, True)
    assert deeper.stage_prompts == list(PAPER_STAGE_PROMPTS)  # the L = 2 prefix keeps its prompts
    assert deeper.stage_prompt(2) == deeper.stage_prompt(1) == PAPER_STAGE_PROMPTS[1]
    own = base.model_copy(update={"stage_prompt_fallback": "Refine."})
    assert with_horizon(own, 4).stage_prompt(3) == "Refine."
    assert with_horizon(base, 1).horizon == 1 and with_horizon(base, 1).stage_prompt_fallback is None
    assert record_parser().parse_args(["--horizon", "3"]).horizon == 3
    assert record_parser().parse_args([]).horizon is None


def test_runs_what_is_recorded_and_skips_the_rest_naming_record_py(
    sweep_run: tuple[SweepResult, list[str], Path],
) -> None:
    sweep, log, _ = sweep_run
    assert [r.setting.name for r in sweep.results] == [
        "L1-a0", "L1-a0.05", "L2-a0", "L2-a0.05", "L2-a0-stop", "L2-a0.05-stop",
    ]  # fmt: skip
    assert [s.setting.name for s in sweep.skipped] == ["L3-a0", "L3-a0.05"]
    for skipped in sweep.skipped:
        assert "not recorded: run python training/record.py --split all --horizon 3" in skipped.reason
        assert "0 of 4 test items" in skipped.reason
    assert any(line.startswith("skip L3-a0:") for line in log)
    for result in sweep.results:
        assert (result.n_train, result.n_test) == (len(TRAIN), len(TEST))
        hops = result.router["mean_hops"]
        if result.setting.allow_stop:
            assert 1.0 <= hops <= 2.0 and sum(result.lengths.values()) == len(TEST)
        else:
            assert hops == result.setting.horizon and result.lengths == {result.setting.horizon: len(TEST)}
    assert set(sweep.aiq) == {"L=1", "L=2", "L=2 + STOP"}
    for values in sweep.aiq.values():
        assert isinstance(values[f"{ROUTER} (α sweep)"], float)
        assert isinstance(values["oracle (same α values)"], float)


def test_each_setting_has_its_own_baselines(
    sweep_run: tuple[SweepResult, list[str], Path], base: RouterConfig, pool: Any, store: ReplayStore
) -> None:
    sweep, _, _ = sweep_run
    for result in sweep.results:
        setting = result.setting
        config = setting_config(base, setting)
        tree = outcome_tree(config, pool, TEST, store, alpha=setting.alpha)
        routes = [r for k in range(1, setting.horizon + 1) for r in itertools.product(POOL, repeat=k)]
        oracle = np.mean([max(tree[i.id][r].reward for r in routes) for i in TEST])  # by hand
        assert result.oracle["reward"] == pytest.approx(oracle)
        singles = [(m,) for m in POOL] + (
            [(m,) * setting.horizon for m in POOL] if setting.horizon > 1 else []
        )
        best_single = max(np.mean([tree[i.id][r].reward for i in TEST]) for r in singles)
        assert result.best_single["reward"] == pytest.approx(best_single)
        assert result.vs_best_single[0] == pytest.approx(result.router["reward"] - best_single)
        assert result.best_fixed["chosen_on"] == "train"
    # the L = 1 oracle can never reach the sum (a plan must come first); at L = 2 it always does
    by_name = {r.setting.name: r for r in sweep.results}
    assert by_name["L1-a0"].oracle["task_metric"] == 0.0 and by_name["L2-a0"].oracle["task_metric"] == 1.0


def test_rerun_resumes_instead_of_retraining(
    sweep_run: tuple[SweepResult, list[str], Path],
    base: RouterConfig,
    pool: Any,
    store: ReplayStore,
    encoder: TextEncoder,
) -> None:
    sweep, _, run_dir = sweep_run
    grid = settings_grid([2], [0.0], [2])
    again = run_sweep(base, pool, TRAIN, TEST, store, encoder, grid, TINY, run_dir, log=lambda _: None)
    before = {r.setting: r for r in sweep.results}
    for result in again.results:
        assert result.router == before[result.setting].router
        assert result.router_rewards == before[result.setting].router_rewards
        assert result.train_seconds < before[result.setting].train_seconds  # nothing retrained

    # more (here: other) recorded train items → that setting trains from scratch, not from the old run
    log: list[str] = []
    fewer = run_sweep(base, pool, TRAIN[:3], TEST, store, encoder, grid[:1], TINY, run_dir, log=log.append)
    assert fewer.results[0].n_train == 3
    assert any("train items changed" in line and "training from scratch" in line for line in log)
    policy_meta = json.loads((run_dir / grid[0].name / "policy" / "policy.json").read_text())["training"]
    # the one set-up path's metadata (train_router) at the setting's config, then the sweep's name
    setting = setting_config(base, grid[0])
    assert {k: policy_meta[k] for k in run_metadata(setting, TRAIN[:3])} == run_metadata(setting, TRAIN[:3])
    assert policy_meta["train_items"] == 3 and policy_meta["sweep"] == grid[0].name


def test_report_section_plot_and_marked_block(
    sweep_run: tuple[SweepResult, list[str], Path],
    base: RouterConfig,
    pool: Any,
    store: ReplayStore,
    tmp_path: Path,
) -> None:
    sweep, _, _ = sweep_run
    report, plot = tmp_path / "docs" / "results.md", tmp_path / "docs" / "sweep_pareto.png"
    body = markdown_section(sweep, "python training/sweep.py --horizons 1 2 3", plot, report)
    assert body.startswith("## Sweeps") and "`python training/sweep.py --horizons 1 2 3`" in body
    table = [line for line in body.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert len(table) == 6 + 2  # six settings, two STOP comparisons
    assert "### Early exit (STOP) against the fixed-L router" in body and "### AIQ of each α sweep" in body
    assert "### Not run" in body and "--horizon 3" in body
    assert "**Cost scale.**" in body and "α = 0.05: ≤ " in body
    stops = [line for line in body.splitlines() if "stopped before hop 2 on" in line]
    assert [line.split("**")[1] for line in stops] == ["L2-a0-stop", "L2-a0.05-stop"]
    assert "![cost vs task metric of every sweep setting](sweep_pareto.png)" in body
    png = plot_pareto(sweep, plot)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000

    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("# Evaluation\n\nthe tables\n")
    write_marked_section(report, SECTION, body)
    write_marked_section(report, SECTION, body.replace("## Sweeps", "## Sweeps (again)"))
    text = report.read_text()
    assert text.startswith("# Evaluation\n\nthe tables\n")  # the rest of the file is kept
    assert text.count(f"<!-- {SECTION}:begin -->") == 1 and "## Sweeps (again)" in text  # replaced in place
    # the evaluation rewrites its own tables and carries the sweep's block over
    write_report(ev.evaluate(base, pool, None, TRAIN, TEST, store), report, command="EVAL")
    text = report.read_text()
    assert text.startswith("# HierRouter evaluation") and "`EVAL`" in text and "the tables" not in text
    assert text.count(f"<!-- {SECTION}:begin -->") == 1 and "## Sweeps (again)" in text
    with pytest.raises(ValueError, match="section name"):
        write_marked_section(report, "Bad Name", "x")
