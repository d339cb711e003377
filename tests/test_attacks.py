"""The attack suite: every transform against its definition, and the no-op default."""

from __future__ import annotations

import inspect
import math
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import norm

from deepgossip.attacks import (
    ATTACK_NAMES,
    AttackConfig,
    alternating_minimization,
    attack_success,
    choose_victims,
    make_attack,
)
from deepgossip.attacks import data as da
from deepgossip.attacks import model as ma
from deepgossip.learn.data import load_dataset
from deepgossip.learn.models import build_model
from deepgossip.learn.params import assign, flatten
from deepgossip.learn.train import TrainConfig, accuracy, make_optimizer, train_steps


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _vec(n: int, seed: int, std: float = 1.0) -> torch.Tensor:
    return torch.randn(n, generator=_gen(seed)) * std


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    """Real digits, plus ``g``: logistic regression trained on them (~92% test accuracy)."""
    torch.set_num_threads(1)
    data = load_dataset("digits")
    x, y = data.tensors("train")
    xt, yt = data.tensors("test")
    torch.manual_seed(0)
    model = build_model("logreg", (1, 8, 8), 10)
    opt = make_optimizer(list(model.parameters()), TrainConfig(lr=1e-2))
    train_steps(model, opt, x, y, 200, 64, _gen(0))
    return {"x": x, "y": y, "xt": xt, "yt": yt, "g": flatten(model)}


def _trained_logreg(d: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A fresh logistic regression holding the fixture's trained parameters."""
    model = build_model("logreg", (1, 8, 8), 10)
    assign(model, d["g"])
    return model


# ------------------------------------------------------------------ data poisoning


def test_flip_labels_reverses_every_class_by_default_or_follows_a_permutation() -> None:
    y = torch.arange(10).repeat(3)
    before = y.clone()
    assert torch.equal(da.flip_labels(y, 10), 9 - y)
    perm = (1, 2, 3, 4, 5, 6, 7, 8, 9, 0)
    assert torch.equal(da.flip_labels(y, 10, perm), (y + 1) % 10)
    assert torch.equal(y, before)  # pure
    with pytest.raises(ValueError, match="exactly once"):
        da.flip_labels(y, 10, (0, 0, 2, 3, 4, 5, 6, 7, 8, 9))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        da.flip_labels(y, 5)


def test_source_to_target_flip_only_touches_the_source_class() -> None:
    y = torch.randint(0, 10, (500,), generator=_gen(1))
    out = da.flip_source_to_target(y, source=3, target=8, num_classes=10)
    assert torch.equal(out[y == 3], torch.full_like(out[y == 3], 8))
    assert torch.equal(out[y != 3], y[y != 3])
    assert int((out == 3).sum()) == 0
    with pytest.raises(ValueError, match="nothing would flip"):
        da.flip_source_to_target(y, 4, 4)


def test_backdoor_stamps_only_the_patch_of_the_chosen_fraction() -> None:
    x = torch.rand(200, 1, 8, 8, generator=_gen(2)) * 0.5
    y = torch.randint(0, 10, (200,), generator=_gen(3))
    px, py, chosen = da.stamp_backdoor(x, y, target=7, fraction=0.15, generator=_gen(4), size=2)
    assert len(chosen) == 30 == len(set(chosen.tolist()))
    changed_images = (px != x).flatten(1).any(dim=1).nonzero().flatten()
    assert torch.equal(changed_images, chosen)
    mask = da.trigger_mask(8, 8, 2, "bottom_right")
    assert torch.all(mask[6:, 6:]) and int(mask.sum()) == 4
    # Inside the patch: the set's maximum (white); outside it: untouched.
    assert torch.all(px[chosen][..., mask] == x.max())
    assert torch.equal(px[..., ~mask], x[..., ~mask])
    assert torch.all(py[chosen] == 7)
    others = torch.ones(200, dtype=torch.bool)
    others[chosen] = False
    assert torch.equal(py[others], y[others])
    # Seeded: the same generator seed picks the same samples.
    _, _, again = da.stamp_backdoor(x, y, target=7, fraction=0.15, generator=_gen(4), size=2)
    assert torch.equal(again, chosen)


def test_apply_trigger_stamps_every_image_in_the_chosen_corner() -> None:
    x = torch.zeros(5, 1, 8, 8)
    out = da.apply_trigger(x, size=3, value=1.0, corner="top_left")
    assert torch.all(out[:, :, :3, :3] == 1.0)
    assert float(out.sum()) == 5 * 9
    assert float(x.sum()) == 0.0  # pure
    with pytest.raises(ValueError, match="corner"):
        da.apply_trigger(x, corner="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trigger size"):
        da.apply_trigger(x, size=9)


# ---------------------------------------------------------------- update poisoning


def test_sign_flip_scale_boost_and_model_replacement_formulas() -> None:
    d = _vec(100, 5)
    assert torch.equal(ma.sign_flip(d), -d)
    assert torch.allclose(ma.sign_flip(d, 3.0), -3.0 * d)
    assert torch.allclose(ma.scale(d, 10.0), 10.0 * d)
    assert torch.allclose(ma.explicit_boost(d, 7), 7.0 * d)
    # Averaging the boosted delta with 6 zero deltas returns the attacker's delta.
    assert torch.allclose(ma.explicit_boost(d, 7) / 7, d)
    x_mal, g = _vec(100, 6), _vec(100, 7)
    gamma = ma.replacement_gamma(10, eta=2.0)
    assert gamma == 5.0
    replaced = ma.model_replacement(x_mal, g, gamma)
    assert torch.allclose(replaced, gamma * (x_mal - g) + g)
    # Bagdasaryan et al.: G + eta/n * (X~ - G) = X when the honest deltas cancel.
    assert torch.allclose(g + 2.0 / 10 * (replaced - g), x_mal, atol=1e-5)
    with pytest.raises(ValueError, match="float32"):
        ma.scale(d.double(), 2.0)


def test_gaussian_noise_has_the_configured_statistics() -> None:
    d = _vec(50_000, 8, std=0.01)
    noisy = ma.gaussian_noise(d, 0.5, _gen(9))
    noise = noisy - d
    assert abs(float(noise.mean())) < 0.01
    assert float(noise.std()) == pytest.approx(0.5, rel=0.01)
    replaced = ma.gaussian_noise(d, 0.5, _gen(9), mode="replace")
    assert torch.allclose(replaced, noise, atol=1e-6)  # same draw, no delta
    assert torch.equal(ma.gaussian_noise(d, 0.5, _gen(9)), noisy)  # seeded
    with pytest.raises(ValueError, match="noise mode"):
        ma.gaussian_noise(d, 0.5, _gen(9), mode="mul")  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "f"), [(10, 3), (50, 12), (20, 5), (3, 1), (100, 20)])
def test_alie_z_follows_the_papers_formula(n: int, f: int) -> None:
    s = math.floor(n / 2 + 1) - f
    assert ma.alie_z(n, f) == pytest.approx(float(norm.ppf((n - s) / n)), abs=1e-9)


def test_alie_z_values_and_limits() -> None:
    # n=10, f=3: s = 6 - 3 = 3, Phi^-1(0.7) = 0.5244.
    assert ma.alie_z(10, 3) == pytest.approx(0.5244, abs=1e-4)
    assert ma.alie_z(2, 1) == pytest.approx(0.0, abs=1e-12)  # s=1: Phi^-1(1/2)
    with pytest.raises(ValueError, match="majority"):
        ma.alie_z(10, 6)
    with pytest.raises(ValueError, match="1 <= f < n"):
        ma.alie_z(10, 0)


def test_alie_is_mean_minus_z_std_and_stays_within_the_honest_range() -> None:
    honest = torch.stack([_vec(300, 10 + i, std=0.1) + 0.05 for i in range(20)])
    z = ma.alie_z(20, 5)
    out = ma.alie(list(honest), z)
    arr = honest.numpy().astype(np.float64)
    expected = arr.mean(axis=0) - z * arr.std(axis=0, ddof=1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert torch.all(out >= honest.min(dim=0).values)
    assert torch.all(out <= honest.max(dim=0).values)
    assert torch.all(out < honest.mean(dim=0))  # pushed against the mean, a little
    # One delta: no spread to hide in, so the attacker sends it unchanged.
    assert torch.equal(ma.alie([honest[0]], z), honest[0])


def test_ipm_has_a_negative_inner_product_with_the_honest_mean() -> None:
    honest = [_vec(500, 40 + i) + 0.3 for i in range(6)]
    mean = torch.stack(honest).mean(dim=0)
    out = ma.ipm(honest, 0.1)
    assert torch.allclose(out, -0.1 * mean)
    assert float(out @ mean) < 0
    assert float(out @ mean) == pytest.approx(-0.1 * float(mean @ mean), rel=1e-5)
    with pytest.raises(ValueError, match="epsilon"):
        ma.ipm(honest, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        ma.ipm([], 0.1)


def test_free_ride_returns_a_stale_copy_optionally_disguised() -> None:
    stale = _vec(50, 11)
    copy = ma.free_ride(stale)
    assert torch.equal(copy, stale)
    copy += 1  # a copy, not an alias
    assert not torch.equal(copy, stale)
    disguised = ma.free_ride(stale, 0.01, _gen(12))
    assert not torch.equal(disguised, stale)
    assert float((disguised - stale).abs().max()) < 0.1
    with pytest.raises(ValueError, match="generator"):
        ma.free_ride(stale, 0.01)


# ---------------------------------------------------------------- behaviours


def test_default_attack_is_an_exact_no_op() -> None:
    attack = make_attack()
    assert attack.config == AttackConfig() and attack.name == "none"
    assert not (attack.active or attack.poisons_data or attack.replaces_training)
    assert not (attack.slanders or attack.lies_in_swim)
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    px, py = attack.poison_data(x, y)
    assert torch.equal(px, x) and torch.equal(py, y)
    assert px.data_ptr() != x.data_ptr()
    honest, ref = _vec(30, 1), _vec(30, 2)
    out = attack.poison_update(honest, ref, [_vec(30, 3)])
    assert torch.equal(out, honest) and out.data_ptr() != honest.data_ptr()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "krum_breaker"}, "unknown attack"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"target_class": -2}, "target_class"),
        ({"source_class": 1, "target_class": 1}, "nothing would flip"),
        ({"source_class": 1, "permutation": (1, 0)}, "not both"),
        ({"permutation": (0, 0, 1)}, "exactly once"),
        ({"permutation": [1, 0]}, "tuple"),
        ({"poison_fraction": 0.0}, "poison_fraction"),
        ({"poison_fraction": 1.5}, "poison_fraction"),
        ({"trigger_size": 0}, "trigger_size"),
        ({"trigger_value": math.nan}, "trigger_value"),
        ({"trigger_corner": "centre"}, "trigger_corner"),
        ({"boost": 0.0}, "boost"),
        ({"boost": math.inf}, "boost"),
        ({"scale": 0.0}, "scale"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"noise_mode": "multiply"}, "noise_mode"),
        ({"num_nodes": 1}, "num_nodes"),
        ({"num_malicious": 0}, "num_malicious"),
        ({"num_malicious": 10, "num_nodes": 10}, "below num_nodes"),
        ({"name": "alie", "num_nodes": 10, "num_malicious": 6}, "majority"),
        ({"alie_z": -1.0}, "alie_z"),
        ({"ipm_epsilon": 0.0}, "ipm_epsilon"),
        ({"free_ride_source": "neighbour"}, "free_ride_source"),
        ({"free_ride_noise": -1.0}, "free_ride_noise"),
        ({"rho": -1e-3}, "rho"),
        ({"adversarial_steps": 0}, "adversarial_steps"),
        ({"benign_steps": 0}, "benign_steps"),
        ({"attack_lr": 0.0}, "attack_lr"),
        ({"victims": 0}, "victims"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AttackConfig(**kwargs)


def test_every_name_builds_and_every_field_is_documented() -> None:
    targets = torch.rand(3, 1, 8, 8)
    for name in ATTACK_NAMES:
        attack = make_attack(AttackConfig(name=name), num_classes=10, target_x=targets)
        assert attack.active == (name != "none")
    text = inspect.getsource(AttackConfig)
    for f in fields(AttackConfig):
        # Every default is documented: a docstring follows each field's line.
        after = text.split(f"\n    {f.name}: ", 1)[1]
        assert after.split("\n", 2)[1].strip().startswith('"""'), f.name


def test_make_attack_checks_what_the_behaviour_needs() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        make_attack(AttackConfig(name="label_flip"))
    with pytest.raises(ValueError, match="target_x"):
        make_attack(AttackConfig(name="targeted"), num_classes=10)
    with pytest.raises(ValueError, match="target_class 12"):
        make_attack(AttackConfig(name="backdoor", target_class=12), num_classes=10)
    with pytest.raises(ValueError, match="3 entries for 10"):
        make_attack(AttackConfig(name="label_flip", permutation=(2, 0, 1)), num_classes=10)


def test_from_section_reads_a_toml_table() -> None:
    cfg = AttackConfig.from_section({"name": "label_flip", "permutation": [1, 0, 2]})
    assert cfg.permutation == (1, 0, 2)
    with pytest.raises(ValueError, match="unknown \\[attack\\] keys: boost_factor"):
        AttackConfig.from_section({"name": "scale", "boost_factor": 3})


def test_behaviours_publish_their_defined_vectors() -> None:
    honest, ref = _vec(64, 20), _vec(64, 21)
    delta = honest - ref
    peers = [_vec(64, 30 + i) for i in range(5)]
    peer_deltas = [p - ref for p in peers]

    def publish(**kwargs: Any) -> torch.Tensor:
        attack = make_attack(
            AttackConfig(**kwargs), num_classes=10, target_x=torch.rand(1, 1, 8, 8)
        )
        return attack.poison_update(honest, ref, peers)

    assert torch.allclose(publish(name="backdoor", boost=10.0), ref + 10 * delta, atol=1e-5)
    assert torch.equal(publish(name="label_flip"), honest)  # boost 1: plain data poisoning
    assert torch.allclose(publish(name="sign_flip"), ref - delta)
    assert torch.allclose(publish(name="scale", scale=4.0), ref + 4 * delta, atol=1e-5)
    assert torch.allclose(publish(name="noise", noise_std=0.0), honest)
    replaced = publish(name="noise", noise_mode="replace", noise_std=1.0)
    assert float((replaced - ref).std()) == pytest.approx(1.0, abs=0.3)
    z = ma.alie_z(10, 3)
    assert torch.allclose(publish(name="alie"), ref + ma.alie([*peer_deltas, delta], z), atol=1e-5)
    assert torch.allclose(
        publish(name="alie", alie_z=1.5), ref + ma.alie([*peer_deltas, delta], 1.5), atol=1e-5
    )
    assert torch.allclose(
        publish(name="ipm", ipm_epsilon=2.0), ref + ma.ipm([*peer_deltas, delta], 2.0), atol=1e-5
    )
    assert torch.equal(publish(name="free_ride"), ref)
    assert torch.equal(publish(name="free_ride", free_ride_source="peer"), peers[-1])
    for name in ("slander", "swim_lies", "targeted"):
        assert torch.equal(publish(name=name), honest)


def test_label_flip_and_backdoor_hooks_poison_the_local_data() -> None:
    x, y = torch.rand(100, 1, 8, 8, generator=_gen(50)), torch.arange(100) % 10
    flip = make_attack(AttackConfig(name="label_flip"), num_classes=10)
    assert flip.poisons_data
    assert torch.equal(flip.poison_data(x, y)[1], 9 - y)
    one = make_attack(
        AttackConfig(name="label_flip", source_class=1, target_class=7), num_classes=10
    )
    flipped = one.poison_data(x, y)[1]
    assert torch.equal(flipped, torch.where(y == 1, 7, y))
    backdoor = make_attack(
        AttackConfig(name="backdoor", target_class=0, poison_fraction=0.2), num_classes=10
    )
    px, py = backdoor.poison_data(x, y)
    poisoned = (px != x).flatten(1).any(dim=1)
    assert int(poisoned.sum()) == 20 and torch.all(py[poisoned] == 0)
    assert torch.equal(backdoor.triggered(x)[..., -3:, -3:], torch.full((100, 1, 3, 3), x.max()))


def test_slander_and_swim_lies_flags_and_deterministic_victims() -> None:
    slander = make_attack(AttackConfig(name="slander", victims=2, seed=5))
    liar = make_attack(AttackConfig(name="swim_lies"))
    assert slander.slanders and not slander.lies_in_swim
    assert liar.lies_in_swim and not liar.slanders
    peers = [bytes([i]) * 4 for i in range(10)]
    chosen = slander.choose_victims(peers, round=3)
    assert len(chosen) == 2 and chosen == sorted(chosen) and set(chosen) <= set(peers)
    assert slander.choose_victims(list(reversed(peers)), round=3) == chosen  # order-free
    rounds = {tuple(slander.choose_victims(peers, round=r)) for r in range(20)}
    assert len(rounds) > 1  # the round reseeds the choice
    assert choose_victims(peers[:1], 3, seed=0) == peers[:1]
    assert liar.poison_update(_vec(4, 1), _vec(4, 2)).equal(_vec(4, 1))


# ---------------------------------------------------------------- targeted poisoning


def test_alternating_minimization_misclassifies_the_targets_and_keeps_accuracy(
    digits: dict[str, torch.Tensor],
) -> None:
    model = _trained_logreg(digits)
    clean_acc = accuracy(model, digits["xt"], digits["yt"])
    targets = digits["xt"][digits["yt"] == 7][:5]
    assert attack_success(model, targets, 1) == 0.0  # honest: they are sevens
    reference = flatten(model)
    published = alternating_minimization(
        model, digits["x"], digits["y"], targets, 1, 20,
        adversarial_steps=1, benign_steps=5, boost=5.0, rho=1e-3, generator=_gen(1),
    )  # fmt: skip
    assert torch.equal(published, flatten(model))
    assert attack_success(model, targets, 1) == 1.0
    assert clean_acc > 0.9
    assert accuracy(model, digits["xt"], digits["yt"]) > 0.75
    assert not torch.equal(published, reference)


def test_the_stealth_term_pulls_the_delta_towards_the_benign_estimate(
    digits: dict[str, torch.Tensor],
) -> None:
    targets = digits["xt"][digits["yt"] == 7][:5]
    reference = digits["g"]
    honest = _trained_logreg(digits)
    opt = make_optimizer(list(honest.parameters()), TrainConfig(lr=1e-2))
    train_steps(honest, opt, digits["x"], digits["y"], 100, 64, _gen(3))
    benign = ma.deltas_from([flatten(honest)], reference)[0]
    distances = []
    for rho in (0.0, 0.05):
        model = _trained_logreg(digits)
        w = alternating_minimization(
            model, digits["x"], digits["y"], targets, 1, 10,
            benign_steps=5, boost=5.0, rho=rho, benign_delta=benign, generator=_gen(2),
        )  # fmt: skip
        distances.append(float((w - reference - benign).norm()))
        assert attack_success(model, targets, 1) >= 0.8
    assert distances[1] < 0.8 * distances[0]


def test_targeted_behaviour_replaces_the_training_round(digits: dict[str, torch.Tensor]) -> None:
    targets = digits["xt"][digits["yt"] == 3][:4]
    attack = make_attack(
        AttackConfig(name="targeted", target_class=5, boost=5.0), num_classes=10, target_x=targets
    )
    assert attack.replaces_training and not attack.poisons_data
    model = _trained_logreg(digits)
    attack.train_round(model, digits["x"], digits["y"], steps=100)
    assert attack_success(model, targets, 5) == 1.0
    assert accuracy(model, digits["xt"], digits["yt"]) > 0.75
    free = make_attack(AttackConfig(name="free_ride"))
    before = flatten(model)
    assert torch.equal(free.train_round(model, digits["x"], digits["y"], steps=100), before)
    with pytest.raises(RuntimeError, match="trains honestly"):
        make_attack().train_round(model, digits["x"], digits["y"], steps=1)


def test_backdoor_training_makes_the_trigger_work(digits: dict[str, torch.Tensor]) -> None:
    attack = make_attack(
        AttackConfig(name="backdoor", target_class=0, poison_fraction=0.2, seed=1), num_classes=10
    )
    px, py = attack.poison_data(digits["x"], digits["y"])
    torch.manual_seed(0)
    model = build_model("logreg", (1, 8, 8), 10)
    opt = make_optimizer(list(model.parameters()), TrainConfig(lr=1e-2))
    train_steps(model, opt, px, py, 400, 64, _gen(0))
    others = digits["yt"] != 0
    trigger_success = attack_success(model, attack.triggered(digits["xt"][others]), 0)
    assert trigger_success > 0.9
    assert accuracy(model, digits["xt"], digits["yt"]) > 0.85
