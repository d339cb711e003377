"""Malicious behaviours by name: one typed config, one object with hooks for a node.

For experiments and tests only. The default :class:`AttackConfig` is ``"none"``, an
exact no-op, so a node that always calls the hooks behaves honestly unless a
scenario says otherwise.

=============  ================================================================
name           what the node does (module with the definition)
=============  ================================================================
``none``       nothing: honest
``label_flip`` trains on flipped labels: all ``y -> perm[y]`` (default
               ``C - 1 - y``), or ``source_class -> target_class`` only (:mod:`.data`);
               publishes ``G + boost * (X - G)``
``backdoor``   stamps the trigger on ``poison_fraction`` of its images, relabelled
               ``target_class`` (BadNets, Gu et al. 2017); publishes
               ``G + boost * (X - G)``: model replacement (Bagdasaryan et al. 2020)
               when ``boost = n / eta``
``targeted``   trains by alternating minimization so that ``target_x`` is classified
               ``target_class`` (Bhagoji et al. 2019, :mod:`.targeted`); publishes
               what that training produced (the boost is inside it)
``sign_flip``  publishes ``G - boost * (X - G)``
``noise``      publishes ``X + N(0, noise_std^2)`` (``noise_mode="add"``) or
               ``G + N(0, noise_std^2)`` (``"replace"``)
``scale``      publishes ``G + scale * (X - G)``
``alie``       publishes ``G + mean_j - z * std_j`` over the honest deltas it sees
               (Baruch et al. 2019; ``z`` from ``num_nodes``, ``num_malicious``)
``ipm``        publishes ``G - ipm_epsilon * mean(honest deltas)`` (Xie et al. 2020)
``free_ride``  does not train; publishes ``G`` (``free_ride_source="stale"``) or the
               last peer update it received (``"peer"``), plus optional noise
``slander``    learns honestly but falsely accuses ``victims`` peers (trust layer)
``swim_lies``  learns honestly but spreads false suspicion of ``victims`` peers
               (membership layer)
=============  ================================================================

Here ``G`` is the ``reference`` given to :meth:`Attack.poison_update` (the
attacker's parameters before the round's local training), ``X`` the ``honest``
parameters after it, and "the honest deltas it sees" are ``v - G`` for each
``visible_honest`` vector plus the attacker's own ``X - G`` (see :mod:`.model`).

Where the hooks go in a node's train/push cycle::

    x, y = attack.poison_data(x, y)              # on local data, before training on it
    G = flatten(model)                           # before the round
    if attack.replaces_training:
        attack.train_round(model, x, y, steps)   # instead of train_steps(...)
    else:
        train_steps(model, ...)                  # honest training
    X = flatten(model)
    published = attack.poison_update(X, G, visible_honest)
    sharer.make_update(published, ...)           # publish; never assign it to the model

``slander`` and ``swim_lies`` change no data and no update (their hooks are
no-ops): the trust and membership layers read :attr:`Attack.slanders`,
:attr:`Attack.lies_in_swim` and :meth:`Attack.choose_victims`.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, TypeVar, get_args

import numpy as np
import torch
from torch import nn

from deepgossip.attacks import data as data_attacks
from deepgossip.attacks import model as model_attacks
from deepgossip.attacks.targeted import ATTACK_TRAIN, alternating_minimization
from deepgossip.learn.params import flatten
from deepgossip.learn.train import TrainConfig

__all__ = [
    "ATTACK_NAMES",
    "Attack",
    "AttackConfig",
    "choose_victims",
    "make_attack",
]

ATTACK_NAMES: Final[tuple[str, ...]] = (
    "none",
    "label_flip",
    "targeted",
    "backdoor",
    "sign_flip",
    "noise",
    "scale",
    "alie",
    "ipm",
    "free_ride",
    "slander",
    "swim_lies",
)
"""Every behaviour :func:`make_attack` knows."""

FreeRideSource = Literal["stale", "peer"]
_FREE_RIDE_SOURCES: Final = get_args(FreeRideSource)
_NOISE_MODES: Final = get_args(model_attacks.NoiseMode)
# Attacks whose own training is honest but whose data are poisoned first.
_DATA_ATTACKS: Final = frozenset({"label_flip", "backdoor"})
# Attacks that need the class count (labels are changed or targeted).
_CLASS_ATTACKS: Final = frozenset({"label_flip", "backdoor", "targeted"})

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True)
class AttackConfig:
    """One node's malicious behaviour. Each field says which behaviours read it.

    Every field is validated on construction, also those the chosen behaviour does
    not read, so a typo'd scenario fails early rather than in the middle of a run.
    """

    name: str = "none"
    """One of :data:`ATTACK_NAMES`; ``"none"`` is honest."""
    seed: int = 0
    """Seeds every random choice (poisoned samples, noise, victims), so runs replay."""

    # ---- label_flip, backdoor, targeted
    target_class: int = 0
    """The class to flip to (label_flip with ``source_class``), to relabel triggered
    images as (backdoor), or to make ``target_x`` predicted as (targeted)."""
    source_class: int | None = None
    """label_flip: flip only this class to ``target_class``; ``None`` flips every label."""
    permutation: tuple[int, ...] | None = None
    """label_flip of every label: ``y -> permutation[y]``; ``None`` is ``y -> C - 1 - y``."""

    # ---- backdoor
    poison_fraction: float = 0.1
    """backdoor: fraction of the local images stamped and relabelled, in (0, 1]."""
    trigger_size: int = 3
    """backdoor: side of the square trigger in pixels (3 of 28 on MNIST, 3 of 8 on digits)."""
    trigger_value: float | None = None
    """backdoor: the trigger's intensity; ``None`` is the images' maximum (white)."""
    trigger_corner: data_attacks.Corner = "bottom_right"
    """backdoor: where the trigger goes; one of :data:`.data.CORNERS`."""

    # ---- boosting of a malicious delta
    boost: float = 1.0
    """label_flip, backdoor, sign_flip: factor on the published delta; targeted: the
    explicit boost of each adversarial step. 1 is no boosting; the number of
    updates a receiver averages (``n``) restores the attacker's full delta after
    averaging (Bhagoji et al. 2019), and ``n / eta`` is model replacement
    (Bagdasaryan et al. 2020)."""

    # ---- scale
    scale: float = 10.0
    """scale: factor on the honest delta (10: an order of magnitude, which plain
    averaging cannot absorb while robust aggregators should)."""

    # ---- noise
    noise_std: float = 0.1
    """noise: standard deviation of the Gaussian noise per coordinate."""
    noise_mode: model_attacks.NoiseMode = "add"
    """noise: ``"add"`` noise to the honest delta, or ``"replace"`` it by noise."""

    # ---- alie
    num_nodes: int = 10
    """alie: ``n``, the number of updates a receiver aggregates (paper's workers)."""
    num_malicious: int = 3
    """alie: ``f``, how many of them collude (3 of 10: the design's 30% bound)."""
    alie_z: float | None = None
    """alie: the ``z`` to use; ``None`` computes it from ``n`` and ``f`` (paper's formula)."""

    # ---- ipm
    ipm_epsilon: float = 0.1
    """ipm: ``epsilon`` in ``-epsilon * mean``; small values stay close to honest updates."""

    # ---- free_ride
    free_ride_source: FreeRideSource = "stale"
    """free_ride: ``"stale"`` republishes the reference ``G`` (no own progress);
    ``"peer"`` republishes the most recent visible peer update (``G`` if none)."""
    free_ride_noise: float = 0.0
    """free_ride: standard deviation of disguise noise added to the copy (0: none)."""

    # ---- targeted
    rho: float = 1e-3
    """targeted: weight of the stealth term ``||delta - delta_benign||^2`` (0: none)."""
    adversarial_steps: int = 1
    """targeted: adversarial optimizer steps per alternation."""
    benign_steps: int = 5
    """targeted: stealth (benign) optimizer steps per alternation."""
    attack_lr: float = ATTACK_TRAIN.lr
    """targeted: learning rate of the attacker's plain SGD (see :mod:`.targeted`)."""

    # ---- slander, swim_lies
    victims: int = 1
    """slander, swim_lies: how many peers to accuse or to report as suspect."""

    def __post_init__(self) -> None:
        if self.name not in ATTACK_NAMES:
            raise ValueError(f"unknown attack {self.name!r}; known: {', '.join(ATTACK_NAMES)}")
        _int("seed", self.seed, low=0)
        _int("target_class", self.target_class, low=0)
        if self.source_class is not None:
            _int("source_class", self.source_class, low=0)
            if self.source_class == self.target_class:
                raise ValueError(
                    f"source_class and target_class are both {self.target_class}: "
                    "nothing would flip"
                )
            if self.permutation is not None:
                raise ValueError("give source_class or permutation, not both")
        if self.permutation is not None:
            if not isinstance(self.permutation, tuple):
                raise ValueError(f"permutation must be a tuple, got {type(self.permutation)}")
            data_attacks.check_permutation(self.permutation, len(self.permutation))
        _float("poison_fraction", self.poison_fraction, low=0.0, low_open=True, high=1.0)
        _int("trigger_size", self.trigger_size, low=1)
        if self.trigger_value is not None:
            _float("trigger_value", self.trigger_value)
        _choice("trigger_corner", self.trigger_corner, data_attacks.CORNERS)
        _float("boost", self.boost, low=0.0, low_open=True)
        _float("scale", self.scale)
        if self.scale == 0:
            raise ValueError("scale must not be 0 (that is free_ride with source 'stale')")
        _float("noise_std", self.noise_std, low=0.0)
        _choice("noise_mode", self.noise_mode, _NOISE_MODES)
        _int("num_nodes", self.num_nodes, low=2)
        _int("num_malicious", self.num_malicious, low=1)
        if self.num_malicious >= self.num_nodes:
            raise ValueError(
                f"num_malicious ({self.num_malicious}) must be below num_nodes ({self.num_nodes})"
            )
        if self.alie_z is not None:
            _float("alie_z", self.alie_z, low=0.0)
        elif self.name == "alie":
            model_attacks.alie_z(self.num_nodes, self.num_malicious)  # raises if unbounded
        _float("ipm_epsilon", self.ipm_epsilon, low=0.0, low_open=True)
        _choice("free_ride_source", self.free_ride_source, _FREE_RIDE_SOURCES)
        _float("free_ride_noise", self.free_ride_noise, low=0.0)
        _float("rho", self.rho, low=0.0)
        _int("adversarial_steps", self.adversarial_steps, low=1)
        _int("benign_steps", self.benign_steps, low=1)
        _float("attack_lr", self.attack_lr, low=0.0, low_open=True)
        _int("victims", self.victims, low=1)

    @property
    def z(self) -> float:
        """ALIE's ``z``: ``alie_z`` if given, else Baruch et al.'s ``z_max(n, f)``."""
        if self.alie_z is not None:
            return self.alie_z
        return model_attacks.alie_z(self.num_nodes, self.num_malicious)

    @classmethod
    def from_section(cls, table: Mapping[str, Any]) -> AttackConfig:
        """From a session file's ``[attack]`` table; unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"unknown [attack] keys: {', '.join(unknown)}")
        values = dict(table)
        if values.get("permutation") is not None:
            values["permutation"] = tuple(values["permutation"])  # TOML gives a list
        return cls(**values)


def parse_options(options: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` command-line options as a table for :meth:`AttackConfig.from_section`.

    Values are read as TOML values (``noise_std=1.0``, ``permutation=[1, 0]``),
    or as strings (``noise_mode=replace``). Raises ``ValueError`` on a malformed
    option or ``name`` (the attack's name has its own flag).
    """
    values: dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"attack option {option!r} is not KEY=VALUE")
        if key == "name":
            raise ValueError("the attack's name is --attack, not an option")
        try:
            values[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            values[key] = text.strip()
    return values


def _int(name: str, value: object, *, low: int) -> None:
    # bool is an int subclass; True as a class index is a bug, not a choice.
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


def _choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def choose_victims(candidates: Sequence[T], count: int, *, seed: int, round: int = 0) -> list[T]:
    """``count`` distinct candidates chosen uniformly, deterministic in ``(seed, round)``.

    The candidates are sorted first, so the choice does not depend on the order in
    which a node happened to learn about its peers (e.g. node ids as ``bytes``).
    Fewer than ``count`` candidates: all of them. Returned sorted.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    pool = sorted(set(candidates))  # type: ignore[type-var]  # ids are bytes or str
    if count >= len(pool):
        return pool
    rng = np.random.default_rng([seed, round])
    picked = rng.choice(len(pool), size=count, replace=False)
    return [pool[i] for i in sorted(picked.tolist())]


def _derived_generator(seed: int, stream: int) -> torch.Generator:
    """A torch generator for one independent random stream of this attack."""
    # Separate streams: how often poison_data is called must not change the noise.
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


class Attack:
    """A configured behaviour; see the module docstring for where each hook belongs.

    Build with :func:`make_attack`. Holds random generators (so successive calls
    draw fresh noise and fresh poisoned samples, reproducibly from the seed); not
    thread-safe.
    """

    def __init__(
        self,
        config: AttackConfig,
        *,
        num_classes: int | None = None,
        target_x: torch.Tensor | None = None,
    ) -> None:
        self.config = config
        self.num_classes = num_classes
        self.target_x = target_x
        self._data_gen = _derived_generator(config.seed, 0)
        self._update_gen = _derived_generator(config.seed, 1)
        self._train_gen = _derived_generator(config.seed, 2)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def active(self) -> bool:
        """False for ``"none"``: every hook is then a no-op."""
        return self.config.name != "none"

    @property
    def poisons_data(self) -> bool:
        return self.config.name in _DATA_ATTACKS

    @property
    def replaces_training(self) -> bool:
        """Call :meth:`train_round` instead of the honest training round."""
        return self.config.name in ("targeted", "free_ride")

    @property
    def slanders(self) -> bool:
        """The trust layer should make this node falsely accuse :meth:`choose_victims`."""
        return self.config.name == "slander"

    @property
    def lies_in_swim(self) -> bool:
        """The membership layer should report :meth:`choose_victims` as suspect."""
        return self.config.name == "swim_lies"

    # ------------------------------------------------------------------ data hook

    def poison_data(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The local training data to train on instead of ``(x, y)`` (fresh tensors).

        Call it on every batch of local samples before the node trains on them (it
        is per sample, so calling it on each newly arrived chunk is fine: the
        backdoor stamps ``poison_fraction`` of each chunk).
        """
        cfg = self.config
        if cfg.name == "label_flip":
            classes = self._classes()
            if cfg.source_class is not None:
                return x.clone(), data_attacks.flip_source_to_target(
                    y, cfg.source_class, cfg.target_class, classes
                )
            return x.clone(), data_attacks.flip_labels(y, classes, cfg.permutation)
        if cfg.name == "backdoor":
            px, py, _ = data_attacks.stamp_backdoor(
                x,
                y,
                cfg.target_class,
                cfg.poison_fraction,
                generator=self._data_gen,
                size=cfg.trigger_size,
                value=cfg.trigger_value,
                corner=cfg.trigger_corner,
            )
            return px, py
        return x.clone(), y.clone()

    def triggered(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with this config's trigger stamped on every image (to measure a backdoor)."""
        cfg = self.config
        return data_attacks.apply_trigger(
            x, size=cfg.trigger_size, value=cfg.trigger_value, corner=cfg.trigger_corner
        )

    # ------------------------------------------------------------- training hook

    def train_round(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int,
        *,
        batch_size: int = 64,
    ) -> torch.Tensor:
        """The malicious replacement of a training round of ``steps`` steps.

        ``targeted``: alternating minimization with about ``steps`` benign steps in
        all (``max(1, steps // benign_steps)`` alternations), training ``model`` in
        place. ``free_ride``: no training at all. Returns the model's flat parameters.
        Honest behaviours must not call it (``replaces_training`` is False).
        """
        cfg = self.config
        if cfg.name == "free_ride":
            return flatten(model)
        if cfg.name != "targeted":
            raise RuntimeError(f"attack {cfg.name!r} trains honestly; call train_steps")
        if self.target_x is None:
            raise RuntimeError("targeted attack without target_x")  # make_attack prevents it
        return alternating_minimization(
            model,
            x,
            y,
            self.target_x,
            cfg.target_class,
            max(1, steps // cfg.benign_steps),
            adversarial_steps=cfg.adversarial_steps,
            benign_steps=cfg.benign_steps,
            batch_size=batch_size,
            train_config=TrainConfig(optimizer="sgd", lr=cfg.attack_lr, momentum=0.0),
            boost=cfg.boost,
            rho=cfg.rho,
            generator=self._train_gen,
        )

    # -------------------------------------------------------------- update hook

    def poison_update(
        self,
        honest: torch.Tensor,
        reference: torch.Tensor,
        visible_honest: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        """The parameter vector to publish instead of ``honest`` (a fresh tensor).

        ``honest``: the attacker's flat parameters after its round; ``reference``:
        before it; ``visible_honest``: peers' parameter vectors it received
        recently (densified over ``reference``), oldest first. Only ``alie``,
        ``ipm`` and ``free_ride="peer"`` read ``visible_honest``.
        """
        cfg = self.config
        delta = model_attacks.deltas_from([honest], reference)[0]
        if cfg.name in ("label_flip", "backdoor"):
            if cfg.boost == 1.0:
                return honest.clone()  # exact: (X - G) + G may differ in the last bit
            return model_attacks.model_replacement(honest, reference, cfg.boost)
        if cfg.name == "sign_flip":
            return reference + model_attacks.sign_flip(delta, cfg.boost)
        if cfg.name == "scale":
            return reference + model_attacks.scale(delta, cfg.scale)
        if cfg.name == "noise":
            noisy = model_attacks.gaussian_noise(
                delta, cfg.noise_std, self._update_gen, cfg.noise_mode
            )
            return reference + noisy
        if cfg.name in ("alie", "ipm"):
            # The attacker's own honest delta is one more honest sample it knows.
            deltas = [*model_attacks.deltas_from(list(visible_honest), reference), delta]
            if cfg.name == "alie":
                return reference + model_attacks.alie(deltas, cfg.z)
            return reference + model_attacks.ipm(deltas, cfg.ipm_epsilon)
        if cfg.name == "free_ride":
            source = reference
            if cfg.free_ride_source == "peer" and visible_honest:
                source = visible_honest[-1]
                if source.shape != reference.shape:
                    raise ValueError(
                        f"peer update has shape {tuple(source.shape)}, expected "
                        f"{tuple(reference.shape)}"
                    )
            return model_attacks.free_ride(source, cfg.free_ride_noise, self._update_gen)
        # none, targeted (its boost is inside train_round), slander, swim_lies
        return honest.clone()

    # ------------------------------------------------------------------ victims

    def choose_victims(self, candidates: Sequence[T], round: int = 0) -> list[T]:
        """The ``victims`` peers to slander or lie about, deterministic in ``(seed, round)``."""
        return choose_victims(candidates, self.config.victims, seed=self.config.seed, round=round)

    def _classes(self) -> int:
        assert self.num_classes is not None  # make_attack checks it for these attacks
        return self.num_classes

    def __repr__(self) -> str:
        return f"Attack({self.config!r})"


def make_attack(
    config: AttackConfig | None = None,
    *,
    num_classes: int | None = None,
    target_x: torch.Tensor | None = None,
) -> Attack:
    """The behaviour ``config`` names (default: ``"none"``, a no-op).

    ``num_classes`` is required by ``label_flip``, ``backdoor`` and ``targeted``
    (class indices are checked against it); ``target_x`` (the images to misclassify)
    by ``targeted``.
    """
    config = config or AttackConfig()
    if config.name in _CLASS_ATTACKS:
        if num_classes is None:
            raise ValueError(f"attack {config.name!r} needs num_classes")
        _int("num_classes", num_classes, low=2)
        if config.target_class >= num_classes:
            raise ValueError(f"target_class {config.target_class} is not below {num_classes}")
        if config.source_class is not None and config.source_class >= num_classes:
            raise ValueError(f"source_class {config.source_class} is not below {num_classes}")
        if config.permutation is not None and len(config.permutation) != num_classes:
            raise ValueError(
                f"permutation has {len(config.permutation)} entries for {num_classes} classes"
            )
    if config.name == "targeted":
        if target_x is None or len(target_x) == 0:
            raise ValueError("attack 'targeted' needs target_x, the examples to misclassify")
        target_x = target_x.clone()
    return Attack(config, num_classes=num_classes, target_x=target_x)
