"""Poisoning experiments on the simulated network: attackers, defences, references.

:func:`run_poisoning_sim` runs the learning simulation of
:mod:`.learning_sim` (whole :class:`~deepgossip.node.Node` s with SWIM, rumour
gossip and the update exchange on a :class:`~deepgossip.net.sim.SimNetwork`,
each training a real PyTorch model on its partition) with a fraction of the
nodes malicious and every honest node defended, and reports what the issue's
benchmark asks for. It runs **three simulations with the same seed** (same
data, partitions, node identities, initial model and malicious nodes):

``main``         the attack against the defence;
``no_attack``    the same defence, every node honest (what the defence costs);
``no_defense``   the same attack against undefended nodes (what it would do).

and, on request, a third:

``honest_only``  the malicious nodes absent (members that publish nothing),
                 no defence: what a perfect defence would give. The attackers'
                 data is lost to the honest nodes either way, so the drop
                 against ``no_attack`` has a floor no defence can go below.

A reference that would repeat ``main`` (attack ``none``, or defence ``none``)
is not run twice.

The round of a node is the learning simulation's (train, maybe push the
trained model, merge what arrived) with the attack's hooks where
:mod:`deepgossip.attacks.behaviour` puts them: data poisoned once before
training, ``G`` taken before the round, ``train_round`` instead of honest
training for attacks that replace it, and the published parameters from
``poison_update``, never written back into the attacker's model. Attackers
merge what they receive like everybody else (staying close to the consensus is
what keeps their updates plausible) but run no defence and accuse nobody,
except slanderers, who falsely accuse their victims once membership has
converged (the blacklist core renews the accusations).

Defended nodes wire the defence into their mixing rule
(:class:`~deepgossip.trust.defense.Defense`), and, unless the defence says
otherwise, the gossiped blacklist into their node: AUROR's verdicts become
signed accusations, accusations from others are adopted by quorum or own
evidence, and blacklisted peers are dropped from mixing and from the peers the
exchange and the rumour core choose.

Default mixing: ``average`` with every peer each round (``fanout = nodes - 1``,
``period = steps_per_round``): FedAvg without a server, the setting of the
collaboration scenario. It is also AUROR's setting (the paper's server sees
every participant each round), so every node judges every peer every round;
with GoSGD (one random peer per push) a node hears a given peer every few
rounds and conviction takes correspondingly longer.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from dataclasses import fields as dataclass_fields
from typing import Any

import numpy as np
import torch

from deepgossip.attacks.behaviour import Attack, AttackConfig, make_attack
from deepgossip.attacks.targeted import attack_success
from deepgossip.experiments.learning_sim import (
    CURVE_SUBSET,
    LearningSimSettings,
    _lr_at,
    _set_lr,
    _train_config,
)
from deepgossip.gossip.events import ItemDelivered
from deepgossip.learn.data import load_dataset, to_tensors
from deepgossip.learn.exchange import UpdateExchange, UpdateReceived
from deepgossip.learn.mixing import MixingConfig, MixingRule, make_rule
from deepgossip.learn.models import build_model
from deepgossip.learn.params import assign, flatten
from deepgossip.learn.partition import cli_options, partition
from deepgossip.learn.sharing import Sharer, SharingConfig, SparseUpdate, UpdateRejected
from deepgossip.learn.train import accuracy, make_optimizer, train_steps
from deepgossip.net.sim import LinkModel, SimNetwork
from deepgossip.node import Node
from deepgossip.session import Session
from deepgossip.trust.accusation import ACCUSATION_KIND
from deepgossip.trust.blacklist import (
    BlacklistConfig,
    PeerBlacklisted,
    PeerUnblacklisted,
    PollDecided,
)
from deepgossip.trust.defense import Conviction, Defense, DefenseConfig
from deepgossip.wire.identity import Identity

__all__ = ["DEFAULT_REFERENCES", "REFERENCES", "PoisoningSettings", "run_poisoning_sim"]

REFERENCES = ("no_attack", "no_defense", "honest_only")
"""The reference simulations :func:`run_poisoning_sim` can run besides the main one."""

DEFAULT_REFERENCES = ("no_attack", "no_defense")
"""The ones the issue's benchmark reports; ``honest_only`` costs one more run."""


_MALICIOUS_STREAM = 0x706F6973
"""Seed-sequence tag of the choice of malicious nodes (independent of the rest)."""


@dataclass(frozen=True)
class PoisoningSettings:
    """One poisoning experiment; the learning fields mean what they mean in
    :class:`~.learning_sim.LearningSimSettings` (defaults chosen for MNIST / MLP)."""

    nodes: int = 10
    dataset: str = "mnist"
    model: str = "mlp"
    partition: str = "iid"
    alpha: float = 0.5
    rounds: int = 100
    """100 rounds of 10 steps: the MNIST MLP has converged (within a few tenths of a
    point of its final accuracy) and attackers have had 90 rounds after any
    plausible detection to do harm."""
    steps_per_round: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_schedule: str = "constant"
    round_period: float = 1.0
    eval_every: int = 10
    loss: float = 0.0
    seed: int = 0
    threads: int = 1
    """One thread: the machines are shared (DESIGN.md, measured facts)."""
    mixing: MixingConfig | None = None
    """None: ``average`` with every peer each round (module docstring)."""
    sharing: SharingConfig = field(default_factory=SharingConfig)
    malicious: float = 0.3
    """Fraction of malicious nodes, ``round(malicious * nodes)`` of them, chosen
    from the seed. 0.3: the design's bound."""
    attack: AttackConfig = field(default_factory=lambda: AttackConfig(name="label_flip"))
    """What every malicious node does (they collude: same config, same victims)."""
    defense: DefenseConfig = field(default_factory=lambda: DefenseConfig(auror=True))
    """What every honest node does."""
    blacklist: BlacklistConfig = field(default_factory=BlacklistConfig)
    """The gossiped blacklist's settings (used when ``defense.blacklist``)."""
    target_examples: int = 5
    """Targeted attack: how many test images (none of the target class) the
    attacker wants labelled ``attack.target_class``. A handful, as in Bhagoji et
    al. (who target one); success is measured per honest node over them."""
    references: tuple[str, ...] = DEFAULT_REFERENCES
    """Which references to run besides the main simulation (of
    :data:`REFERENCES`); tests that need one of them skip the others' cost."""

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ValueError("need at least 2 nodes")
        if not 0.0 <= self.malicious < 1.0:
            raise ValueError(f"malicious must be in [0, 1), got {self.malicious}")
        if self.attack.name != "none" and self.malicious_count == 0:
            raise ValueError(f"malicious {self.malicious} of {self.nodes} nodes is no node")
        if self.target_examples < 1:
            raise ValueError("target_examples must be >= 1")
        unknown = set(self.references) - set(REFERENCES)
        if unknown:
            raise ValueError(f"unknown references {sorted(unknown)}; choose from {REFERENCES}")
        self.learning  # validates optimizer and schedule  # noqa: B018

    @classmethod
    def from_learning(
        cls,
        learning: LearningSimSettings,
        *,
        malicious: float,
        attack: AttackConfig,
        defense: DefenseConfig | str,
        **fields: Any,
    ) -> PoisoningSettings:
        """A poisoning experiment on top of a learning scenario's settings.

        What a scenario runner needs: its ``[scenario]``, ``[mixing]`` and
        ``[sharing]`` tables already make a :class:`LearningSimSettings`; add the
        fraction of attackers, ``AttackConfig.from_section(table["attack"])`` and
        a defence (a name such as ``"auror+clipping"``, or a config).
        """
        shared = ({f.name for f in dataclass_fields(cls)} - {"references"}) & {
            f.name for f in dataclass_fields(LearningSimSettings)
        }
        base = {name: getattr(learning, name) for name in shared}
        if isinstance(defense, str):
            defense = DefenseConfig.from_name(defense)
        return cls(**{**base, **fields}, malicious=malicious, attack=attack, defense=defense)

    @property
    def malicious_count(self) -> int:
        return round(self.malicious * self.nodes)

    @property
    def separate_references(self) -> tuple[str, ...]:
        """The references that need a simulation of their own: without an attack
        the no-attack reference *is* the main run, and so is the no-defence one
        without a defence."""
        attacking = self.attack.name != "none"
        differs = {
            "no_attack": attacking,
            "no_defense": self.defense.active,
            "honest_only": attacking,
        }
        return tuple(name for name in self.references if differs[name])

    @property
    def learning(self) -> LearningSimSettings:
        """The learning part, for the learning simulation's helpers."""
        return LearningSimSettings(
            nodes=self.nodes,
            dataset=self.dataset,
            model=self.model,
            partition=self.partition,
            alpha=self.alpha,
            rounds=self.rounds,
            steps_per_round=self.steps_per_round,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            lr_schedule=self.lr_schedule,
            round_period=self.round_period,
            eval_every=self.eval_every,
            loss=self.loss,
            seed=self.seed,
            threads=self.threads,
            mixing=self.mixing_config,
            sharing=self.sharing,
            references=False,
        )

    @property
    def mixing_config(self) -> MixingConfig:
        if self.mixing is not None:
            return self.mixing
        return MixingConfig(
            rule="average", period=self.steps_per_round, fanout=max(1, self.nodes - 1)
        )


def malicious_nodes(settings: PoisoningSettings) -> list[int]:
    """Indices of the malicious nodes: deterministic in the seed, sorted."""
    rng = np.random.default_rng([settings.seed, _MALICIOUS_STREAM])
    chosen = rng.choice(settings.nodes, size=settings.malicious_count, replace=False)
    return sorted(int(i) for i in chosen)


# ------------------------------------------------------------------------- the data


@dataclass
class _Data:
    x: torch.Tensor
    y: torch.Tensor
    test: tuple[torch.Tensor, torch.Tensor]
    curve_test: tuple[torch.Tensor, torch.Tensor]
    shape: tuple[int, int, int]
    classes: int
    parts: list[np.ndarray]
    target_x: torch.Tensor
    """Targeted attack: the images to misclassify."""


def _load(settings: PoisoningSettings) -> _Data:
    data = load_dataset(settings.dataset)
    x, y = to_tensors(data.train_images, data.train_labels)
    test = to_tensors(data.test_images, data.test_labels)
    parts = partition(
        settings.partition,
        data.train_labels,
        settings.nodes,
        settings.seed,
        **cli_options(settings.partition, alpha=settings.alpha),
    )
    # Targets: test images of other classes than the target, chosen from the seed.
    others = torch.nonzero(test[1] != settings.attack.target_class).flatten().numpy()
    rng = np.random.default_rng([settings.seed, 1])
    picked = np.sort(rng.choice(others, size=settings.target_examples, replace=False))
    return _Data(
        x=x,
        y=y,
        test=test,
        curve_test=(test[0][:CURVE_SUBSET], test[1][:CURVE_SUBSET]),
        shape=tuple(x.shape[1:]),  # type: ignore[arg-type]
        classes=data.num_classes,
        parts=[np.asarray(p) for p in parts],
        target_x=test[0][torch.from_numpy(picked)],
    )


def _success_probe(attack: AttackConfig, data: _Data) -> tuple[torch.Tensor, int] | None:
    """The images on which an attack's success is measured and the label it wants.

    targeted: the chosen examples; backdoor: every triggered test image whose
    true class is not the target; label flip of one source class: the test
    images of that class. Other attacks have no success rate (None).
    """
    x_test, y_test = data.test
    if attack.name == "targeted":
        return data.target_x, attack.target_class
    if attack.name == "backdoor":
        # The trigger's intensity is the training images' white, as the attacker stamped.
        value = attack.trigger_value if attack.trigger_value is not None else float(data.x.max())
        probe = make_attack(replace(attack, trigger_value=value), num_classes=data.classes)
        return probe.triggered(x_test[y_test != attack.target_class]), attack.target_class
    if attack.name == "label_flip" and attack.source_class is not None:
        return x_test[y_test == attack.source_class], attack.target_class
    return None


# ------------------------------------------------------------------- one simulation


@dataclass
class _Peer:
    index: int
    node: Node
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    sharer: Sharer
    rule: MixingRule
    exchange: UpdateExchange
    np_rng: np.random.Generator
    attack: Attack | None = None
    defense: Defense | None = None
    recent: deque[SparseUpdate] = field(default_factory=lambda: deque(maxlen=64))
    """Attackers: honest updates received lately (ALIE, IPM, free riding read them)."""
    rejected: int = 0
    merged: int = 0
    screened_out: int = 0
    nonfinite_pushes: int = 0
    round: int = 0


class _Poller:
    """The node's blacklist polls, as the defence's :class:`~.defense.Poller`."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def is_borderline(self, suspicion: float) -> bool:
        assert self.node.blacklist is not None
        return self.node.blacklist.is_borderline(suspicion)

    def poll(self, peer_id: bytes) -> int | None:
        return self._start("poll", peer_id)

    def confirm(self, peer_id: bytes) -> int | None:
        return self._start("confirm", peer_id)

    def _start(self, kind: str, peer_id: bytes) -> int:
        """Run the blacklist's ``poll`` or ``confirm`` on the event loop (the
        simulator merges there) and carry out its effects."""
        blacklist = self.node.blacklist
        assert blacklist is not None
        start = blacklist.confirm if kind == "confirm" else blacklist.poll
        poll_id, effects = start(peer_id, self.node.host.runtime.now())
        self.node.host.execute(effects)
        return poll_id


@dataclass
class _Record:
    """What the harness observes of the trust layer during one simulation."""

    listed: dict[tuple[int, bytes], float] = field(default_factory=dict)
    """(honest node, peer) -> when the peer was (last) blacklisted there."""
    how: dict[tuple[int, bytes], str] = field(default_factory=dict)
    """(honest node, peer) -> the verdict that (last) listed it: local, quorum, own_evidence."""
    first_local: dict[bytes, float] = field(default_factory=dict)
    """peer -> first local verdict about it at any honest node."""
    ever_listed: set[bytes] = field(default_factory=set)
    """Peers blacklisted by some honest node at some time."""
    verdicts: list[tuple[float, int, bytes]] = field(default_factory=list)
    """Every local conviction by an honest node: (time, judge index, peer)."""
    known: dict[tuple[int, bytes], float] = field(default_factory=dict)
    """(honest node, peer) -> when the node first knew the peer stood accused:
    it held a signed accusation that counts there, or blacklisted the peer."""


def _simulate(
    settings: PoisoningSettings,
    data: _Data,
    malicious: list[int],
    attack_config: AttackConfig,
    defense_config: DefenseConfig,
    progress: Callable[[int], None] | None,
    absent: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """One simulation. ``absent`` nodes join the membership but never run a
    round (they publish nothing) and are not evaluated."""
    learning = settings.learning
    mixing = settings.mixing_config
    attacking = attack_config.name != "none"
    defended = defense_config.active
    use_blacklist = defended and defense_config.blacklist
    net = SimNetwork(seed=settings.seed, link=LinkModel(loss=settings.loss))
    session = Session("poisoning-sim")
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    initial = build_model(settings.model, data.shape, data.classes)
    initial_flat = flatten(initial)
    size = initial_flat.numel()
    groups = [p.numel() for p in initial.parameters()]  # flatten()'s order
    record = _Record()
    peers: list[_Peer] = []
    bad = set(malicious)

    for i, indices in enumerate(data.parts):
        address = (f"10.0.{i // 250}.{i % 250 + 1}", 7000)
        identity = Identity.from_private_bytes(rng.randbytes(32))
        is_bad = attacking and i in bad
        slanders = is_bad and attack_config.name == "slander"
        node = Node(
            net,
            address,
            identity,
            session,
            rng=net.rng_for(address),
            wall_clock=net.now,
            blacklist=settings.blacklist if (use_blacklist and not is_bad) or slanders else None,
        )
        model = build_model(settings.model, data.shape, data.classes)
        model.load_state_dict(initial.state_dict())
        exchange = UpdateExchange(
            identity.public_key_bytes,
            size,
            lambda node=node: [m.address for m in node.live_peers()],
            random.Random(rng.getrandbits(64)),
        )
        node.host.add_core("learn", exchange)
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        x, y = data.x[index], data.y[index]
        attack: Attack | None = None
        if is_bad:
            attack = make_attack(attack_config, num_classes=data.classes, target_x=data.target_x)
            x, y = attack.poison_data(x, y)
        defense: Defense | None = None
        if defended and not is_bad:
            defense = _make_defense(
                defense_config, node, i, size, initial_flat, settings, record, groups
            )
        peer = _Peer(
            index=i,
            node=node,
            model=model,
            optimizer=make_optimizer(list(model.parameters()), _train_config(learning)),
            x=x,
            y=y,
            generator=torch.Generator().manual_seed(settings.seed + i),
            sharer=Sharer(flatten(model), settings.sharing, seed=settings.seed + i),
            rule=make_rule(
                mixing,
                size=size,
                self_id=identity.node_id,
                num_nodes=settings.nodes,
                defense=defense,
            ),
            exchange=exchange,
            np_rng=np.random.default_rng(settings.seed + i),
            attack=attack,
            defense=defense,
        )
        node.host.subscribe(lambda event, peer=peer: _on_event(peer, event, net.now(), record))
        net.attach(address, node.host.receive)
        peers.append(peer)
    ids = [p.node.node_id for p in peers]
    bad_ids = {ids[i] for i in malicious} if attacking else set()
    for i, peer in enumerate(peers):
        peer.node.start([peers[0].node.address] if i else [])
    net.run_until(10.0)  # membership converges before learning starts
    start = net.now()

    # Slanderers accuse their victims (honest nodes, the same ones for all of them).
    for peer in peers:
        if peer.attack is not None and peer.attack.slanders:
            honest_ids = [ids[j] for j in range(settings.nodes) if ids[j] not in bad_ids]
            for victim in peer.attack.choose_victims(honest_ids):
                peer.node.accuse(victim, 1.0, (), reason="slander")

    def round_of(peer: _Peer) -> None:
        now = net.now()
        _set_lr(peer.optimizer, _lr_at(learning, peer.round / settings.rounds))
        reference = flatten(peer.model) if peer.attack is not None else None
        if peer.attack is not None and peer.attack.replaces_training:
            peer.attack.train_round(
                peer.model, peer.x, peer.y, settings.steps_per_round, batch_size=settings.batch_size
            )
        else:
            train_steps(
                peer.model,
                peer.optimizer,
                peer.x,
                peer.y,
                settings.steps_per_round,
                settings.batch_size,
                peer.generator,
            )
        peer.rule.on_local_step(settings.steps_per_round)
        peer.round += 1
        if peer.defense is not None:
            peer.defense.progress = min(1.0, peer.round / settings.rounds)
        if peer.rule.should_push(peer.np_rng):
            params = flatten(peer.model)
            if peer.attack is not None:
                assert reference is not None
                visible = (
                    [u.to_dense(reference) for u in peer.recent]
                    if peer.attack.name in ("alie", "ipm", "free_ride")
                    else []
                )
                params = peer.attack.poison_update(params, reference, visible)
            if torch.isfinite(params).all():
                update = peer.sharer.make_update(
                    params, origin=peer.node.node_id, round=peer.round, samples=len(peer.y)
                )
                update = peer.rule.make_outgoing(update)
                peer.node.host.execute(peer.exchange.push(update, peer.rule.config.fanout))
            else:
                # An attack diverged (e.g. a huge boost). The wire refuses to encode
                # NaN/Inf and every receiver would reject it anyway; the attacker
                # just loses this push, and the run goes on.
                peer.nonfinite_pushes += 1
        if peer.rule.pending or (peer.defense is not None and peer.defense.held_weight > 0):
            w = flatten(peer.model)
            report = peer.rule.merge(w, now)
            assign(peer.model, w)
            peer.merged += report.merged
            peer.screened_out += report.rejected
        if progress is not None:
            progress(1)
        if peer.round < settings.rounds:
            net.call_at(
                start + peer.round * settings.round_period + offsets[peer.index],
                lambda: round_of(peer),
            )

    offsets = [net.rng.uniform(0, settings.round_period) for _ in peers]
    for peer in peers:
        if peer.index in absent:
            if progress is not None:
                progress(settings.rounds)
            continue
        net.call_at(start + offsets[peer.index], lambda peer=peer: round_of(peer))
    honest = [p for p in peers if p.attack is None and p.index not in absent]
    probe = _success_probe(attack_config if attacking else settings.attack, data)
    curve: list[dict[str, Any]] = []
    for checkpoint in range(settings.eval_every, settings.rounds + 1, settings.eval_every):
        net.run_until(start + checkpoint * settings.round_period + settings.round_period)
        accs = [accuracy(p.model, *data.curve_test) for p in honest]
        per_node: list[float | None] = [None] * settings.nodes  # None: an attacker
        for p, acc in zip(honest, accs, strict=True):
            per_node[p.index] = acc
        curve.append(
            {
                "round": checkpoint,
                "honest_accuracy_mean": float(np.mean(accs)),
                "honest_accuracy_min": float(np.min(accs)),
                "per_node": per_node,
                "attackers_blacklisted_pairs": sum(len(_final_listed(p) & bad_ids) for p in honest),
            }
        )
    net.run_until(start + (settings.rounds + 1) * settings.round_period)

    accs = np.array([accuracy(p.model, *data.test) for p in honest])
    success = [attack_success(p.model, *probe) for p in honest] if probe is not None else None
    gossip_interval = peers[0].node.settings.swim.gossip_interval
    result: dict[str, Any] = {
        "honest_accuracy_mean": float(accs.mean()),
        "honest_accuracy_min": float(accs.min()),
        "honest_accuracy_per_node": accs.tolist(),
        "attack_success": float(np.mean(success)) if success is not None else None,
        "attack_success_max": float(np.max(success)) if success is not None else None,
        "attack_success_per_node": success,
        **_detection(honest, ids, bad_ids, record, gossip_interval, start),
        "updates_screened_out_per_honest_node": float(np.mean([p.screened_out for p in honest])),
        "updates_merged_per_honest_node": float(np.mean([p.merged for p in honest])),
        "updates_rejected": int(sum(p.rejected + sum(p.exchange.rejected.values()) for p in peers)),
        "attacker_nonfinite_pushes": int(sum(p.nonfinite_pushes for p in peers)),
        "defense_stats": _sum_stats(honest),
        "virtual_seconds": net.now() - start,
        "curve": curve,
    }
    return result


def _make_defense(
    config: DefenseConfig,
    node: Node,
    index: int,
    size: int,
    initial: torch.Tensor,
    settings: PoisoningSettings,
    record: _Record,
    groups: list[int],
) -> Defense:
    """A defended node's :class:`Defense`, wired to its blacklist when it has one."""

    def on_verdict(conviction: Conviction) -> None:
        now = node.host.runtime.now()
        peer = conviction.peer_id
        record.first_local[peer] = min(record.first_local.get(peer, math.inf), now)
        record.verdicts.append((now, index, peer))
        if node.blacklist is not None:
            node.accuse(peer, conviction.suspicion, conviction.evidence, conviction.reason)
        else:  # verdicts stay local: the detector's list is the node's list
            record.listed[(index, peer)] = now
            record.ever_listed.add(peer)

    # Private per-node randomness for AUROR's coordinate subset, reproducible here.
    seed = int(np.random.SeedSequence([settings.seed, index, 0xA0]).generate_state(1)[0])
    defense = Defense(
        config,
        size=size,
        groups=groups,
        seed=seed,
        initial=initial,
        is_blacklisted=node.is_blacklisted,
        on_verdict=on_verdict,
        on_evidence=node.reconsider_accusations if node.blacklist is not None else None,
        poller=_Poller(node) if node.blacklist is not None else None,
    )
    node.own_suspicion = defense.own_suspicion
    node.own_evidence = defense.evidence_of
    return defense


def _on_event(peer: _Peer, event: Any, now: float, record: _Record) -> None:
    if isinstance(event, UpdateReceived):
        try:
            accepted = peer.rule.offer(event.update, now)
        except UpdateRejected:
            peer.rejected += 1
            return
        if accepted and peer.attack is not None:
            peer.recent.append(event.update)
    elif peer.attack is not None:
        return  # attackers' own blacklists are not the experiment's concern
    elif isinstance(event, ItemDelivered) and event.kind == ACCUSATION_KIND:
        # The node's own listener (registered first) has taken the item in.
        blacklist = peer.node.blacklist
        if blacklist is not None:
            for accused in blacklist.accused():
                record.known.setdefault((peer.index, accused), now)
    elif isinstance(event, PeerBlacklisted):
        record.known.setdefault((peer.index, event.peer_id), now)
        record.listed[(peer.index, event.peer_id)] = now
        record.how[(peer.index, event.peer_id)] = event.by
        record.ever_listed.add(event.peer_id)
        if event.by == "local":
            record.first_local[event.peer_id] = min(
                record.first_local.get(event.peer_id, math.inf), now
            )
    elif isinstance(event, PeerUnblacklisted):
        record.listed.pop((peer.index, event.peer_id), None)
    elif isinstance(event, PollDecided) and peer.defense is not None:
        peer.defense.poll_decided(event.poll_id, event.discard)


def _final_listed(peer: _Peer) -> frozenset[bytes]:
    """The peers ``peer`` ignores now: its blacklist, else its detector's."""
    if peer.node.blacklist is not None:
        return peer.node.blacklist.blacklisted()
    if peer.defense is not None:
        return peer.defense.blacklisted
    return frozenset()


def _detection(
    honest: list[_Peer],
    ids: list[bytes],
    bad_ids: set[bytes],
    record: _Record,
    gossip_interval: float,
    start: float,
) -> dict[str, Any]:
    """Precision / recall of the honest nodes' final blacklists and how fast they got there."""
    lists = {p.index: _final_listed(p) for p in honest}
    true_pos = sum(len(listed & bad_ids) for listed in lists.values())
    false_pos = sum(len(listed - bad_ids) for listed in lists.values())
    listed_any = true_pos + false_pos
    precision = true_pos / listed_any if listed_any else None
    recall = true_pos / (len(honest) * len(bad_ids)) if bad_ids else None
    honest_ids = set(ids) - bad_ids

    rounds_all: float | None = None
    rounds_each: float | None = None
    if all(bad_ids <= lists[p.index] for p in honest):  # listed at the end, and when
        rounds_all, rounds_each = _spread_rounds(
            record.listed, honest, bad_ids, record, gossip_interval
        )
    know_all, know_each = _spread_rounds(record.known, honest, bad_ids, record, gossip_interval)
    first_detection = min(record.first_local.values()) - start if record.first_local else None
    index_of = {node_id: i for i, node_id in enumerate(ids)}
    return {
        "detection": {"precision": precision, "recall": recall},
        "rounds_to_blacklist_all": rounds_all,
        "rounds_to_blacklist_each_max": rounds_each,
        # Dissemination alone: until every honest node holds a signed accusation
        # against every attacker (adopting it may wait for evidence or a quorum).
        "rounds_to_know_all": know_all,
        "rounds_to_know_each_max": know_each,
        "first_detection_virtual_s": first_detection,
        "honest_blacklisted": len(record.ever_listed & honest_ids),
        "blacklist_timeline": _timeline(honest, bad_ids, index_of, record, gossip_interval),
        # Who convicted whom on its own, and when (rounds of virtual time since
        # the start): false convictions show here before any spread.
        "local_verdicts": [
            {"round": round(t - start, 2), "judge": judge, "peer": index_of[peer]}
            for t, judge, peer in record.verdicts
            if peer in index_of
        ],
        "blacklists": {
            str(i): sorted(index_of[b] for b in listed if b in index_of)
            for i, listed in lists.items()
        },
    }


def _spread_rounds(
    times: Mapping[tuple[int, bytes], float],
    honest: list[_Peer],
    bad_ids: set[bytes],
    record: _Record,
    gossip_interval: float,
) -> tuple[float | None, float | None]:
    """Gossip rounds from the first local detection until every honest node
    reached a state (``times``: when it did, per node and attacker) about every
    attacker, and the worst such delay counted per attacker from its own first
    detection; None when some node never got there."""
    if not bad_ids or not record.first_local:
        return None, None
    if any((p.index, b) not in times for p in honest for b in bad_ids):
        return None, None
    first = min(record.first_local.values())
    overall = (max(times[(p.index, b)] for p in honest for b in bad_ids) - first) / gossip_interval
    per = [
        (max(times[(p.index, b)] for p in honest) - record.first_local.get(b, first))
        / gossip_interval
        for b in bad_ids
    ]
    return overall, max(per)


def _timeline(
    honest: list[_Peer],
    bad_ids: set[bytes],
    index_of: dict[bytes, int],
    record: _Record,
    gossip_interval: float,
) -> dict[str, dict[str, list[Any]]]:
    """Per attacker and honest node: gossip rounds from the attacker's first local
    detection anywhere to its listing there, and the verdict that listed it (why a
    spread is slow: nodes waiting for their own evidence, or for a quorum)."""
    out: dict[str, dict[str, list[Any]]] = {}
    for bad in sorted(bad_ids, key=index_of.__getitem__):
        first = record.first_local.get(bad)
        if first is None:
            continue
        out[str(index_of[bad])] = {
            str(p.index): [
                round((record.listed[(p.index, bad)] - first) / gossip_interval, 2),
                record.how[(p.index, bad)],
            ]
            for p in honest
            if (p.index, bad) in record.listed
        }
    return out


def _sum_stats(peers: list[_Peer]) -> dict[str, int]:
    total: dict[str, int] = {}
    for p in peers:
        if p.defense is not None:
            for key, value in p.defense.stats.items():
                total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))


# --------------------------------------------------------------------- the benchmark


def run_poisoning_sim(
    settings: PoisoningSettings, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """The attack against the defence and its two references; see the module docstring."""
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    data = _load(settings)
    malicious = malicious_nodes(settings)
    attacking = settings.attack.name != "none"
    main = _simulate(settings, data, malicious, settings.attack, settings.defense, progress)
    no_attack = no_defense = honest_only = None
    separate = settings.separate_references
    if "no_attack" in settings.references:
        no_attack = (
            _simulate(settings, data, malicious, AttackConfig(), settings.defense, progress)
            if "no_attack" in separate
            else main
        )
    if "no_defense" in settings.references:
        no_defense = (
            _simulate(settings, data, malicious, settings.attack, DefenseConfig(), progress)
            if "no_defense" in separate
            else main
        )
    if "honest_only" in separate:
        honest_only = _simulate(
            settings,
            data,
            malicious,
            AttackConfig(),
            DefenseConfig(),
            progress,
            absent=frozenset(malicious),
        )
    result: dict[str, Any] = {
        "benchmark": "poisoning",
        "runtime": "sim",
        "nodes": settings.nodes,
        "malicious": settings.malicious,
        "malicious_nodes": malicious if attacking else [],
        "attack": settings.attack.name,
        "defense": settings.defense.name,
        "dataset": settings.dataset,
        "partition": settings.partition,
        "model": settings.model,
        "mixing": settings.mixing_config.rule,
    }
    result.update({k: v for k, v in main.items() if k != "curve"})
    reference: dict[str, Any] = {}
    if no_attack is not None:
        reference.update(
            no_attack_accuracy_mean=no_attack["honest_accuracy_mean"],
            no_attack_accuracy_min=no_attack["honest_accuracy_min"],
            no_attack_honest_blacklisted=no_attack["honest_blacklisted"],
            no_attack_attack_success=no_attack["attack_success"],
        )
        result["accuracy_drop_vs_no_attack"] = (
            no_attack["honest_accuracy_mean"] - main["honest_accuracy_mean"]
        )
        if no_attack is not main and main["attack_success_per_node"] is not None:
            result["attack_success_excess_max"] = _success_excess(
                main["attack_success_per_node"],
                no_attack["attack_success_per_node"],
                [i for i in range(settings.nodes) if not (attacking and i in malicious)],
            )
    if no_defense is not None:
        reference.update(
            no_defense_accuracy_mean=no_defense["honest_accuracy_mean"],
            no_defense_accuracy_min=no_defense["honest_accuracy_min"],
            no_defense_attack_success=no_defense["attack_success"],
        )
    if honest_only is not None:
        reference.update(
            honest_only_accuracy_mean=honest_only["honest_accuracy_mean"],
            honest_only_accuracy_min=honest_only["honest_accuracy_min"],
        )
    result["reference"] = reference
    runs = {
        "main": main,
        "no_attack": no_attack,
        "no_defense": no_defense,
        "honest_only": honest_only,
    }
    result["curves"] = {name: run["curve"] for name, run in runs.items() if run is not None}
    result["settings"] = _settings_dict(settings)
    result["seconds"] = time.perf_counter() - started
    return result


def _success_excess(attacked: list[float], clean: list[float], honest: list[int]) -> float:
    """The worst honest node's attack success above what the same node gives in
    the no-attack run (where every node is honest, in index order): the target
    images a clean network already mislabels are not the attacker's doing."""
    return max(max(0.0, s - clean[i]) for s, i in zip(attacked, honest, strict=True))


def _settings_dict(settings: PoisoningSettings) -> dict[str, Any]:
    out = asdict(settings)
    out["mixing"] = asdict(settings.mixing_config)
    out["defense"] = {**asdict(settings.defense), "name": settings.defense.name}
    return out
