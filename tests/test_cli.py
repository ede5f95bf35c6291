from __future__ import annotations

import json
from pathlib import Path

import pytest

from hierrouter_graph import RouterConfig
from hierrouter_graph.__main__ import main


def test_cli_routes_one_query_and_prints_every_hop(
    tiny_config: RouterConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "router.yaml"
    tiny_config.to_file(config_file)
    assert main(["What is seven times six?", "--config", str(config_file)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("  hop ") == 2 and "hop 0:" in printed and "hop 1:" in printed
    assert "total cost C_L" in printed and "answer:" in printed

    assert main(["What is seven times six?", "--config", str(config_file), "--horizon", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["trace"]) == 1
    assert result["cost"] == pytest.approx(result["trace"][0]["cost"])


def test_serve_subcommand_has_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    for option in ("--port", "--threads-db", "--no-threads", "--max-concurrency", "--config", "--policy"):
        assert option in usage
