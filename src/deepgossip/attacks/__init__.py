"""Malicious behaviours, for experiments and tests only; never on by default.

* :mod:`.data`: data poisoning (label flipping, backdoor triggers);
* :mod:`.model`: update poisoning on flat parameter deltas (sign flip, noise,
  scaling, explicit boosting, model replacement, free riding, ALIE, IPM);
* :mod:`.targeted`: targeted model poisoning by alternating minimization;
* :mod:`.behaviour`: :class:`AttackConfig` by name and :func:`make_attack`, the
  object whose hooks a node calls (the default config is an exact no-op).
"""

from deepgossip.attacks.behaviour import (
    ATTACK_NAMES,
    Attack,
    AttackConfig,
    choose_victims,
    make_attack,
)
from deepgossip.attacks.data import apply_trigger
from deepgossip.attacks.targeted import alternating_minimization, attack_success

__all__ = [
    "ATTACK_NAMES",
    "Attack",
    "AttackConfig",
    "alternating_minimization",
    "apply_trigger",
    "attack_success",
    "choose_victims",
    "make_attack",
]
