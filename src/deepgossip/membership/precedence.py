"""Which claim about a member wins: the SWIM incarnation precedence rules.

Every member owns a counter, its *incarnation*, that only it may raise (by
signing a new alive claim). A claim ``kind(j)`` about a member we hold in
``state(i)`` is decided by this table alone, so every node that has seen the
same set of claims ends in the same state whatever the order they arrived in:

==============  ==========  ============  ============  ============
claim \\ state   alive(i)    suspect(i)    dead(i)       left(i)
==============  ==========  ============  ============  ============
alive(j)        j > i       j > i         j > i         j > i
suspect(j)      j >= i      j > i *       never         never
dead(j)         j >= i      j >= i        j > i **      never
left(j)         j >= i      j >= i        j >= i        j > i **
==============  ==========  ============  ============  ============

\\* at the same incarnation a suspect claim about a suspect member counts as an
independent confirmation (Lifeguard) if the accuser is new. At a higher one it
is a *new* suspicion (the member refuted the old one, which we missed): the
timer restarts. memberlist counts it as a confirmation, which lets a refuted
and re-suspected member be declared dead on the first suspicion's clock.
\\** only the stored incarnation moves; the state (and its events) stay.

Why: alive needs a *strictly* newer incarnation because only the member itself
can issue one, which is what a refutation is. Suspect, dead and left come from
failure detection (or the member's own goodbye) and win at the same
incarnation, otherwise a stale alive could never be overridden. Dead beats
suspect (the suspicion ran out), left beats dead (a goodbye is more precise than
a guess, and left members are never probed or reconnected to again), and
nothing but a newer alive brings a member back.
"""

from __future__ import annotations

from enum import Enum

from deepgossip.membership.state import ALIVE, DEAD, LEFT, SUSPECT, MemberState


class Verdict(Enum):
    """What to do with a claim about a known member."""

    IGNORE = "ignore"
    APPLY = "apply"  # the member's state becomes the claim's
    CONFIRM = "confirm"  # suspect about a suspect: Lifeguard confirmation
    BUMP = "bump"  # same state, newer incarnation: update the number only


def decide(kind: MemberState, j: int, state: MemberState, i: int) -> Verdict:
    """Apply the precedence table to claim ``kind(j)`` vs our ``state(i)``."""
    if kind == ALIVE:
        return Verdict.APPLY if j > i else Verdict.IGNORE
    if kind == SUSPECT:
        if state == ALIVE:
            return Verdict.APPLY if j >= i else Verdict.IGNORE
        if state == SUSPECT:
            if j == i:
                return Verdict.CONFIRM
            return Verdict.APPLY if j > i else Verdict.IGNORE
        return Verdict.IGNORE
    if kind == DEAD:
        if state in (ALIVE, SUSPECT):
            return Verdict.APPLY if j >= i else Verdict.IGNORE
        if state == DEAD:
            return Verdict.BUMP if j > i else Verdict.IGNORE
        return Verdict.IGNORE
    if kind == LEFT:
        if state == LEFT:
            return Verdict.BUMP if j > i else Verdict.IGNORE
        return Verdict.APPLY if j >= i else Verdict.IGNORE
    return Verdict.IGNORE
