"""Counterfactual adoption rules: would a weaker "own evidence" spread the blacklist faster?

The shipped rule (:mod:`deepgossip.trust.blacklist`) adopts someone else's
accusation only with a quorum of accusers or when the node's own detector
agrees: the ``auror_agree``-th highest per-tensor AUROR score reaches
``own_evidence_threshold`` (0.4 on the blacklist's scale, a raw score of 1.6).
On a Dirichlet split that makes the spread slow (docs/benchmarks.md): one node
convicts a few rounds before the others' evidence is enough. This script
measures, in the same simulation as the shipped rule, what weaker rules would
buy and what they would risk. None of them is shipped; they are patched in
here for the measurement only.

``shipped``
    The rule as it is.
``lone-2.0`` / ``lone-1.5``
    Also adopt when a single tensor's detector scores the accused at least
    2.0 (its conviction threshold) / 1.5 (two flags in a row).
``digest-2`` / ``digest-3``
    Also adopt when our detectors flagged at least 2 / 3 of the very updates
    the accusations cite as evidence (update digests).

Each rule runs against 30% label flippers (does it spread faster?) and 30%
slanderers (does it blacklist honest nodes?), MNIST, MLP, Dirichlet(0.5),
without the reference runs. Writes JSON: per rule and scenario the spread
(``rounds_to_blacklist_each_max``), ``rounds_to_know_each_max`` and
``honest_blacklisted``.

    python bench/bench_adoption_rules.py --rounds 30 --json bench/results/adoption_rules.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from deepgossip.attacks.behaviour import AttackConfig
from deepgossip.experiments import poisoning_sim
from deepgossip.trust.accusation import AccusationRejected, open_accusation
from deepgossip.trust.blacklist import BlacklistCore

RULES = ("shipped", "lone-2.0", "lone-1.5", "digest-2", "digest-3")

Check = Callable[[BlacklistCore, bytes], bool]


def _lone(threshold: float) -> Check:
    def check(core: BlacklistCore, peer: bytes) -> bool:
        defense = core._bench_defense  # type: ignore[attr-defined]
        return any(d.has_judged(peer) and d.suspicion(peer) >= threshold for d in defense.detectors)

    return check


def _digest(k: int) -> Check:
    def check(core: BlacklistCore, peer: bytes) -> bool:
        defense = core._bench_defense  # type: ignore[attr-defined]
        ours = {e.digest for e in defense._evidence.get(peer, ())}
        return len(core._bench_cited.get(peer, set()) & ours) >= k  # type: ignore[attr-defined]

    return check


@contextmanager
def _patched(check: Check | None) -> Iterator[None]:
    """Add ``check`` as one more way to adopt a held accusation (never to endorse)."""
    if check is None:
        yield
        return
    make, verdict, on_item = (
        poisoning_sim._make_defense,
        BlacklistCore._verdict,
        BlacklistCore.on_item,
    )

    def make_defense(config: Any, node: Any, *args: Any, **kwargs: Any) -> Any:
        defense = make(config, node, *args, **kwargs)
        if node.blacklist is not None:
            node.blacklist._bench_defense = defense
            node.blacklist._bench_cited = {}
        return defense

    def patched_verdict(self: BlacklistCore, peer: bytes, evidence: Any) -> Any:
        found, accusers = verdict(self, peer, evidence)
        if found is None and accusers and hasattr(self, "_bench_defense") and check(self, peer):
            return "own_evidence", accusers
        return found, accusers

    def patched_on_item(self: BlacklistCore, item: Any) -> Any:
        if hasattr(self, "_bench_cited"):
            try:
                acc = open_accusation(item.body, self.config.limits)
            except AccusationRejected:
                pass
            else:
                if not acc.withdraw:
                    cited = self._bench_cited.setdefault(acc.accused, set())
                    cited.update(e.digest for e in acc.evidence)
        return on_item(self, item)

    poisoning_sim._make_defense = make_defense  # type: ignore[assignment]
    BlacklistCore._verdict = patched_verdict  # type: ignore[method-assign]
    BlacklistCore.on_item = patched_on_item  # type: ignore[method-assign]
    try:
        yield
    finally:
        poisoning_sim._make_defense = make  # type: ignore[assignment]
        BlacklistCore._verdict = verdict  # type: ignore[method-assign]
        BlacklistCore.on_item = on_item  # type: ignore[method-assign]


def _check_for(rule: str) -> Check | None:
    if rule == "shipped":
        return None
    kind, value = rule.split("-")
    return _lone(float(value)) if kind == "lone" else _digest(int(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    base = poisoning_sim.PoisoningSettings(
        partition="dirichlet", alpha=0.5, lr=0.01, rounds=args.rounds, references=()
    )
    out: dict[str, Any] = {"benchmark": "adoption_rules", "rounds": args.rounds, "rules": {}}
    for rule in args.rules.split(","):
        rows: dict[str, Any] = {}
        for attack in ("label_flip", "slander"):
            settings = replace(base, attack=AttackConfig(name=attack))
            started = time.perf_counter()
            with _patched(_check_for(rule)):
                result = poisoning_sim.run_poisoning_sim(settings)
            rows[attack] = {
                "spread": result["rounds_to_blacklist_each_max"],
                "rounds_to_know_each_max": result["rounds_to_know_each_max"],
                "honest_blacklisted": result["honest_blacklisted"],
                "honest_accuracy_mean": result["honest_accuracy_mean"],
                "seconds": time.perf_counter() - started,
            }
            print(rule, attack, rows[attack], flush=True)
        out["rules"][rule] = rows
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
