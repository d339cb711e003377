"""The gossip benchmark end to end at a small size: CLI, JSON keys, sanity."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from deepgossip.cli import main


def test_bench_gossip_cli_writes_the_promised_json(tmp_path: Path) -> None:
    out = tmp_path / "gossip.json"
    args = ["bench", "gossip", "--runtime", "sim", "--nodes", "40", "--loss", "0.05"]
    args += ["--seed", "3", "--items", "2", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["nodes"] == 40 and data["loss"] == 0.05
    rounds = data["rounds_to"]
    assert 0 <= rounds["p50"] <= rounds["p99"] <= rounds["p100"] < 40
    assert 0 <= data["residue_before_anti_entropy"] < 0.2
    assert 4 < data["messages_per_node_per_item"] < 15
    assert data["wall_seconds"] > 0 and data["pull_path"] is True
    assert "static full peer list" in data["params"]["peers"]
    assert "PlainCodec" in data["params"]["codec"]
    assert data["inline_body"]["messages_by_type_per_node_per_item"]["gossip.pull"] == 0
