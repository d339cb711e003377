"""Poisoning scenarios: their settings from a scenario file, and their outputs.

A scenario with an ``[attack]`` table (:mod:`.scenario`) runs
:func:`~deepgossip.experiments.poisoning_sim.run_poisoning_sim`; this module
reads its tables into :class:`~deepgossip.experiments.poisoning_sim.PoisoningSettings`
and writes what that run returns: ``metrics.jsonl`` (one line per honest node
per evaluation, for the main run and each reference run), ``summary.json``,
``accuracy.png`` (honest nodes' accuracy per round with the no-attack and
no-defence references) and ``report.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepgossip.experiments.baseline import write_json
from deepgossip.experiments.poisoning_sim import PoisoningSettings
from deepgossip.learn.mixing import MixingConfig
from deepgossip.learn.sharing import SharingConfig

__all__ = ["ATTACK_ALIASES", "num", "pct", "poisoning_settings", "write_poisoning_outputs"]

ATTACK_ALIASES = {"bhagoji": "targeted"}
"""``[attack] kind`` names besides :data:`~deepgossip.attacks.behaviour.ATTACK_NAMES`:
``bhagoji`` is the targeted attack by alternating minimization (:mod:`.targeted`)."""

_TABLES = frozenset({"mixing", "sharing", "attack", "defense", "blacklist"})


def poisoning_settings(head: dict[str, Any], data: dict[str, Any]) -> PoisoningSettings:
    """``[scenario]`` (without name and runtime), ``[attack]``, ``[defense]``,
    ``[blacklist]``, ``[mixing]``, ``[sharing]`` as settings; ValueError says what is wrong.

    No ``[defense]`` table is no defence; no ``[mixing]`` table the poisoning
    default (``average`` with every peer each round). The attackers' ``num_nodes``,
    ``num_malicious`` and ``seed`` follow the scenario unless ``[attack]`` sets them.
    """
    from deepgossip.attacks.behaviour import AttackConfig
    from deepgossip.trust.blacklist import BlacklistConfig
    from deepgossip.trust.defense import DefenseConfig

    allowed = {f for f in PoisoningSettings.__dataclass_fields__} - _TABLES
    if unknown := sorted(set(head) - allowed):
        raise ValueError(
            f"unknown [scenario] keys {unknown} in a poisoning scenario; allowed: {sorted(allowed)}"
        )
    if "attack" not in data:
        raise ValueError("[defense] and [blacklist] need an [attack] table (kind = 'none')")
    attack = dict(data["attack"])
    if "name" in attack:
        raise ValueError("[attack]: name the attack with kind = '...', not name")
    if "kind" not in attack:
        raise ValueError("[attack] needs kind = '...' (label_flip, bhagoji, backdoor, ...)")
    kind = str(attack.pop("kind"))
    head = dict(head)
    if "references" in head:
        head["references"] = tuple(head["references"])
    defaults = PoisoningSettings()
    nodes = head.get("nodes", defaults.nodes)
    malicious = head.get("malicious", defaults.malicious)
    attack_config = AttackConfig.from_section(
        {
            "name": ATTACK_ALIASES.get(kind, kind),
            "num_nodes": nodes,
            "num_malicious": max(1, round(malicious * nodes)),
            "seed": head.get("seed", defaults.seed),
            **attack,
        }
    )
    return PoisoningSettings(
        mixing=MixingConfig(**data["mixing"]) if "mixing" in data else None,
        sharing=SharingConfig(**data.get("sharing", {})),
        attack=attack_config,
        defense=DefenseConfig.from_section(data.get("defense", {})),
        blacklist=BlacklistConfig(**data.get("blacklist", {})),
        **head,
    )


# ---------------------------------------------------------------------------- outputs


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_poisoning_outputs(name: str, result: dict[str, Any], out: Path) -> None:
    """metrics.jsonl, summary.json, accuracy.png and report.md of one poisoning run."""
    with (out / "metrics.jsonl").open("w") as metrics:
        for run, curve in _curves(result).items():
            for point in curve:
                for node, acc in enumerate(point.get("per_node", [])):
                    if acc is not None:
                        row = {"run": run, "round": point["round"], "node": node, "accuracy": acc}
                        metrics.write(json.dumps(row) + "\n")
    write_json(result, out / "summary.json")
    plot_poisoning(result, out / "accuracy.png")
    (out / "report.md").write_text(poisoning_report(name, result))


def _curves(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The per-round curves of the runs that were actually simulated: a reference
    that would repeat the main run (attack or defence ``none``) is not one."""
    curves = dict(result.get("curves", {}))
    if result["attack"] == "none":
        curves.pop("no_attack", None)
    if result["defense"] == "none":
        curves.pop("no_defense", None)
    return curves


def plot_poisoning(result: dict[str, Any], path: Path) -> None:
    """Honest nodes' test accuracy per round, with the references' means."""
    from deepgossip.experiments.plots import plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    curves = _curves(result)
    main = curves.get("main", [])
    rounds = [p["round"] for p in main]
    for node in range(result["nodes"]):
        accs = [p["per_node"][node] for p in main if "per_node" in p]
        if len(accs) == len(rounds) and all(a is not None for a in accs):
            ax.plot(rounds, accs, lw=1, alpha=0.4)
    styles = {
        "main": ("tab:blue", "-", f"honest nodes, mean ({result['defense']})"),
        "no_attack": ("black", "--", "no attack, mean"),
        "no_defense": ("tab:red", ":", "no defence, mean"),
        "honest_only": ("tab:green", "-.", "attackers absent, mean"),
    }
    for run, (color, ls, label) in styles.items():
        curve = curves.get(run, [])
        if curve:
            ax.plot(
                [p["round"] for p in curve],
                [p["honest_accuracy_mean"] for p in curve],
                color=color,
                ls=ls,
                lw=2.5 if run == "main" else 1.8,
                label=label,
            )
    if not main:  # no per-round data (eval_every > rounds): the final figures
        ax.axhline(result["honest_accuracy_mean"], color="tab:blue", label=styles["main"][2])
        ref = result.get("reference", {})
        for run in ("no_attack", "no_defense", "honest_only"):
            if run in curves and f"{run}_accuracy_mean" in ref:
                color, ls, label = styles[run]
                ax.axhline(ref[f"{run}_accuracy_mean"], color=color, ls=ls, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy of honest nodes")
    count = len(result.get("malicious_nodes", []))
    ax.set_title(
        f"{result['scenario']}: {count} {result['attack']} of {result['nodes']} nodes, "
        f"{result['dataset']}, {result['partition']}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def poisoning_report(name: str, result: dict[str, Any]) -> str:
    s = result["settings"]
    ref = result.get("reference", {})
    det = result["detection"]
    mixing = s["mixing"]
    how = f"`{mixing['rule']}`"
    if mixing["rule"] == "gosgd":
        how += f" (push_prob {mixing['push_prob']}, fanout {mixing['fanout']})"
    lines = [
        f"# Scenario `{name}`",
        "",
        f"{result['nodes']} nodes, {len(result['malicious_nodes'])} malicious "
        f"({result['malicious_nodes']}) running `{result['attack']}`, honest nodes defended "
        f"by `{result['defense']}`; {result['dataset']} / {result['model']}, partition "
        f"`{result['partition']}`, mixing {how}, lr {s['lr']}, seed {s['seed']}; "
        f"{s['rounds']} rounds of {s['steps_per_round']} steps on the simulated network.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| honest accuracy mean / min | {pct(result['honest_accuracy_mean'])} / "
        f"{pct(result['honest_accuracy_min'])} |",
    ]
    if "no_attack_accuracy_mean" in ref:
        lines.append(
            f"| reference: no attack (same defence) | {pct(ref['no_attack_accuracy_mean'])} |"
        )
        lines.append(
            f"| accuracy drop vs no attack | {100 * result['accuracy_drop_vs_no_attack']:.2f} pp |"
        )
    if "no_defense_accuracy_mean" in ref:
        lines.append(
            f"| reference: no defence (same attack) | {pct(ref['no_defense_accuracy_mean'])} |"
        )
    if "honest_only_accuracy_mean" in ref:
        lines.append(
            f"| reference: attackers absent, no defence | {pct(ref['honest_only_accuracy_mean'])} |"
        )
    if result["attack_success"] is not None:
        lines.append(
            f"| attack success mean / max | {pct(result['attack_success'])} / "
            f"{pct(result['attack_success_max'])} |"
        )
        if ref.get("no_defense_attack_success") is not None:
            lines.append(
                f"| attack success without defence | {pct(ref['no_defense_attack_success'])} |"
            )
    lines += [
        f"| detection precision / recall | {num(det['precision'])} / {num(det['recall'])} |",
        f"| gossip rounds until every honest node blacklisted every attacker | "
        f"{num(result['rounds_to_blacklist_all'], 1)} |",
        f"| honest nodes blacklisted (anywhere, ever) | {result['honest_blacklisted']} |",
        f"| wall clock, all runs | {result['seconds']:.0f} s |",
        "",
        "Rounds to blacklist are counted from the first detection anywhere, in SWIM "
        "gossip intervals; n/a: not every attacker was blacklisted everywhere (or no "
        "defence ran).",
        "",
        "Per-round accuracy of each honest node: `metrics.jsonl` (`run` is `main`, "
        "`no_attack` or `no_defense`); everything: `summary.json`; plot: `accuracy.png`.",
        "",
    ]
    return "\n".join(lines)
