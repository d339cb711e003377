"""The poisoning commands' flags made into settings, and ``deepgossip bench poisoning``.

``bench poisoning`` and ``bench poisoning-matrix`` share these parsers: mixing
from ``--rule/--fanout/--push-prob``, the attack from its flags and
``--attack-option KEY=VALUE``, the defence from ``--defense NAME`` and
``--defense-option KEY=VALUE``. The experiment itself is
:func:`~deepgossip.experiments.poisoning_sim.run_poisoning_sim`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields as dataclass_fields
from typing import Any

from deepgossip.attacks.behaviour import AttackConfig, parse_options
from deepgossip.experiments.poisoning_sim import (
    REFERENCES,
    PoisoningSettings,
    run_poisoning_sim,
)
from deepgossip.learn.mixing import MixingConfig
from deepgossip.trust.defense import DefenseConfig
from deepgossip.trust.robust import RobustConfig

__all__ = [
    "cli_attack",
    "cli_defense",
    "cli_mixing",
    "parse_references",
    "run_poisoning_cli",
    "settings_from_cli",
]


def parse_references(text: str) -> tuple[str, ...]:
    """``"no_attack,no_defense"`` -> the tuple; ``"none"`` or ``""`` -> no reference."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if names in ((), ("none",)):
        return ()
    unknown = sorted(set(names) - set(REFERENCES))
    if unknown:
        choices = ", ".join(REFERENCES)
        raise ValueError(f"unknown references {unknown}; choose from {choices} or none")
    return names


def cli_mixing(
    rule: str, fanout: int | None, push_prob: float, steps_per_round: int, nodes: int
) -> MixingConfig | None:
    """The mixing of the poisoning commands' ``--rule/--fanout/--push-prob``; None is
    the default (``average`` with every peer each round). A rule pushes once per
    round; ``gosgd`` to one peer unless told otherwise, ``average`` to all."""
    if rule == "average" and fanout is None:
        return None
    return MixingConfig(
        rule=rule,
        push_prob=push_prob,
        period=steps_per_round,
        fanout=fanout if fanout is not None else (1 if rule == "gosgd" else max(1, nodes - 1)),
    )


def cli_attack(options: Sequence[str], **fields: Any) -> AttackConfig:
    """The poisoning commands' attack: their flags (``fields``) overridden by
    ``--attack-option KEY=VALUE`` (any :class:`AttackConfig` field)."""
    return AttackConfig.from_section({**fields, **parse_options(options)})


def cli_defense(name: str, options: Sequence[str], **flags: Any) -> DefenseConfig:
    """``--defense NAME --defense-option KEY=VALUE ...``: keys of
    :class:`~deepgossip.trust.robust.RobustConfig` set the robust rule's
    parameters, any other key a :class:`DefenseConfig` field."""
    values = parse_options(options)
    robust_keys = {f.name for f in dataclass_fields(RobustConfig)} - {"rule"}
    robust = RobustConfig(**{k: v for k, v in values.items() if k in robust_keys})
    rest = {k: v for k, v in values.items() if k not in robust_keys}
    known = {f.name for f in dataclass_fields(DefenseConfig)} - {"auror", "robust"}
    unknown = sorted(set(rest) - known)
    if unknown:
        raise ValueError(f"unknown defence options: {', '.join(unknown)}")
    return DefenseConfig.from_name(name, robust=robust, **{**flags, **rest})


def settings_from_cli(
    *,
    attack: str,
    defense: str,
    rule: str,
    fanout: int | None,
    push_prob: float,
    boost: float,
    target_class: int,
    source_class: int | None,
    attack_options: Sequence[str] = (),
    defense_options: Sequence[str] = (),
    defense_flags: Mapping[str, Any] | None = None,
    **options: Any,
) -> PoisoningSettings:
    """The settings of the poisoning commands (``bench poisoning``,
    ``bench poisoning-matrix``) from their flags; ``options`` are the
    :class:`PoisoningSettings` fields they pass through unchanged."""
    nodes = options["nodes"]
    return PoisoningSettings(
        mixing=cli_mixing(rule, fanout, push_prob, options["steps_per_round"], nodes),
        attack=cli_attack(
            attack_options,
            name=attack,
            boost=boost,
            target_class=target_class,
            source_class=source_class,
            num_nodes=nodes,
            num_malicious=max(1, round(options["malicious"] * nodes)),
            seed=options["seed"],
        ),
        defense=cli_defense(defense, defense_options, **(defense_flags or {})),
        **options,
    )


def run_poisoning_cli(
    *,
    json_path: str | None,
    polling: bool,
    no_blacklist: bool,
    references: str,
    **flags: Any,
) -> dict[str, Any]:
    """Entry point of ``deepgossip bench poisoning``; ``flags`` as
    :func:`settings_from_cli` takes them."""
    from tqdm import tqdm

    from deepgossip.experiments.baseline import write_json

    settings = settings_from_cli(
        defense_flags={"polling": polling, "blacklist": not no_blacklist},
        references=parse_references(references),
        **flags,
    )
    runs = 1 + len(settings.separate_references)
    with tqdm(total=settings.rounds * settings.nodes * runs, desc="rounds", unit="round") as bar:
        result = run_poisoning_sim(settings, progress=bar.update)
    ref = result.get("reference", {})
    det = result["detection"]
    print(
        f"{result['nodes']} nodes, {result['malicious']:.0%} {result['attack']} vs "
        f"{result['defense']} ({result['dataset']}/{result['model']}/{result['partition']}): "
        f"honest accuracy {result['honest_accuracy_mean']:.4f} (min "
        f"{result['honest_accuracy_min']:.4f}); no attack "
        f"{ref.get('no_attack_accuracy_mean', math.nan):.4f}, no defence "
        f"{ref.get('no_defense_accuracy_mean', math.nan):.4f}"
        + (
            f", attackers absent {ref['honest_only_accuracy_mean']:.4f}"
            if "honest_only_accuracy_mean" in ref
            else ""
        )
        + f"; precision {det['precision']}, "
        f"recall {det['recall']}; gossip rounds to blacklist all "
        f"{_rounds(result['rounds_to_blacklist_all'])} (worst attacker "
        f"{_rounds(result['rounds_to_blacklist_each_max'])}, known everywhere in "
        f"{_rounds(result['rounds_to_know_each_max'])}); "
        f"honest blacklisted {result['honest_blacklisted']}; {result['seconds']:.0f} s"
    )
    if json_path:
        write_json(result, json_path)
    return result


def _rounds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"
