"""A session's trust settings: its ``[defense]`` and ``[blacklist]`` tables.

What a real node process (:mod:`deepgossip.node_process`) needs to put a
:class:`~deepgossip.trust.defense.Defense` between its peers' updates and its
model, and a :class:`~deepgossip.trust.blacklist.BlacklistCore` into its node::

    [defense]
    name = "auror+clipping"   # none (default) | auror | median | trimmed_mean | krum |
                              # multi_krum | clipping | balance | auror+<rule>
    auror_agree = 2           # any other DefenseConfig field
    polling = false           # ask neighbours about borderline peers (needs the blacklist)
    [defense.auror]           # AurorConfig fields
    tau = 0.6
    [defense.robust]          # RobustConfig fields (the rule comes from name)
    clip_radius = 1.0

    [blacklist]               # BlacklistConfig fields; with a defence that spreads
    max_malicious_fraction = 0.3   # its verdicts (DefenseConfig.blacklist, on by default)
    [blacklist.limits]        # AccusationLimits fields

No ``[defense]`` (or ``name = "none"``) is the undefended node, exactly as before
these tables existed. Everything is checked when the node starts, so a typo
fails at once with the table and key in the message instead of silently
running an undefended node.

Why the process refuses some combinations a simulation accepts:

* ``polling`` with ``blacklist = false``: polls are held and answered by the
  gossiped blacklist, which such a node does not run (the simulator then
  silently skips them; a process says so). With the blacklist, polling works
  in processes as in the simulator: the learner's thread hands each poll to the
  event loop and never waits for it (:mod:`deepgossip.trust.polling`).
* a robust rule that needs a set of updates (median, trimmed mean, Krum) with
  the ``gosgd`` mixing rule, which merges one push at a time (the mixing rule
  would refuse it only once learning started).
* a defence without ``[learning]``: there are no updates to defend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from deepgossip.session import Session, SessionError
from deepgossip.trust.accusation import AccusationLimits
from deepgossip.trust.blacklist import BlacklistConfig

if TYPE_CHECKING:
    from deepgossip.trust.defense import DefenseConfig

__all__ = ["TrustSettings"]


@dataclass(frozen=True)
class TrustSettings:
    """The parsed ``[defense]`` and ``[blacklist]`` tables of one session."""

    defense: DefenseConfig | None = None
    """The defence; None: no defence (no ``[defense]``, or ``name = "none"``)."""
    blacklist: BlacklistConfig | None = None
    """The gossiped blacklist's settings; None: the node runs no blacklist (no
    defence, or one whose verdicts stay local: ``[defense] blacklist = false``)."""

    @classmethod
    def from_session(cls, session: Session) -> TrustSettings:
        """Parse and check the tables; raise :class:`SessionError` saying what is wrong.

        torch is imported only when the session has a ``[defense]`` table.
        """
        sections = session.sections
        where = f"session {session.session_id!r}"
        blacklist_table = sections.get("blacklist")
        if "defense" not in sections:
            if blacklist_table is not None:
                raise SessionError(f"{where}: [blacklist] needs a [defense] that uses it")
            return cls()
        defense = _defense(sections["defense"], where)
        if not defense.active:
            if blacklist_table is not None:
                raise SessionError(
                    f"{where}: [blacklist] is set but [defense] name is 'none' (no defence)"
                )
            return cls()
        if "learning" not in sections:
            raise SessionError(f"{where}: [defense] needs [learning]: nothing to defend")
        _check_mixing(defense, sections["learning"], where)
        if defense.polling and not defense.blacklist:
            raise SessionError(
                f"{where}: [defense] polling needs the gossiped blacklist (neighbours "
                "answer polls through it), but blacklist = false"
            )
        if not defense.blacklist:
            if blacklist_table is not None:
                raise SessionError(
                    f"{where}: [blacklist] is set but [defense] blacklist = false "
                    "(verdicts stay local)"
                )
            return cls(defense, None)
        return cls(defense, _blacklist(blacklist_table or {}, where))


def _known(table: Mapping[str, Any], cls: type, name: str, where: str, skip: set[str]) -> None:
    unknown = sorted(set(table) - {f.name for f in fields(cls)} - skip)
    if unknown:
        raise SessionError(f"{where}: unknown {name} keys: {', '.join(unknown)}")


def _table(value: object, name: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SessionError(f"{where}: {name} must be a table")
    return value


def _defense(table: object, where: str) -> DefenseConfig:
    from deepgossip.trust.auror import AurorConfig
    from deepgossip.trust.defense import DefenseConfig
    from deepgossip.trust.robust import RobustConfig

    values = _table(table, "[defense]", where)
    if "name" in values and not isinstance(values["name"], str):
        raise SessionError(f"{where}: [defense] name must be a string like 'auror+clipping'")
    _known(values, DefenseConfig, "[defense]", where, {"name"})
    if "auror_config" in values:
        raise SessionError(f"{where}: unknown [defense] keys: auror_config (use [defense.auror])")
    if "auror" in values:
        if isinstance(values["auror"], bool):
            raise SessionError(f"{where}: [defense] auror: name the defence ('auror+...')")
        auror = _table(values["auror"], "[defense.auror]", where)
        _known(auror, AurorConfig, "[defense.auror]", where, set())
    if "robust" in values:
        robust = _table(values["robust"], "[defense.robust]", where)
        _known(robust, RobustConfig, "[defense.robust]", where, set())
        if "rule" in robust:
            raise SessionError(
                f"{where}: [defense.robust] rule: the rule comes from [defense] name"
            )
    try:
        return DefenseConfig.from_section(values)
    except (TypeError, ValueError) as exc:
        raise SessionError(f"{where}: [defense]: {exc}") from exc


def _check_mixing(defense: DefenseConfig, learning: object, where: str) -> None:
    from deepgossip.learn.mixing import MixingConfig
    from deepgossip.trust.defense import GOSGD_RULES

    table = _table(learning, "[learning]", where)
    rule = table.get("rule", MixingConfig.rule)
    if rule == "gosgd" and defense.robust.rule not in GOSGD_RULES:
        raise SessionError(
            f"{where}: [defense] {defense.name!r}: the gosgd mixing rule merges one update "
            f"at a time, so its robust rule must be one of {', '.join(GOSGD_RULES)}; "
            "use [learning] rule = 'average' for median, trimmed_mean or krum"
        )


def _blacklist(table: object, where: str) -> BlacklistConfig:
    values = dict(_table(table, "[blacklist]", where))
    _known(values, BlacklistConfig, "[blacklist]", where, set())
    try:
        if "limits" in values:
            limits = _table(values["limits"], "[blacklist.limits]", where)
            _known(limits, AccusationLimits, "[blacklist.limits]", where, set())
            values["limits"] = AccusationLimits(**limits)
        return BlacklistConfig(**values)
    except (TypeError, ValueError) as exc:
        raise SessionError(f"{where}: [blacklist]: {exc}") from exc
