"""Our own convictions on disk, so that a restarted node still ignores whom it convicted.

Without it a restarted node starts with an empty blacklist and a fresh
detector: it merges a convicted attacker's updates again until its detector
convicts anew (two or three evaluations), or until a quorum's accusations
reach it by anti-entropy. Only *local* verdicts are kept. Adopted entries rest
on other nodes' signed records, which the node relearns through gossip and
re-checks against the current quorum; a stale copy on disk could outlive a
withdrawal.

The file (``verdicts.json`` in the node's data directory) is JSON, written
atomically (a temporary file, fsync, rename) after every new conviction. On
start the node re-issues each verdict (:meth:`Node.restore_verdicts`): the
peer is blacklisted at once and a freshly signed accusation is published.
Verdicts are sticky, as in memory; deleting the file (node stopped) forgives
them all.

A file that cannot be read or parsed is moved aside (``verdicts.json.corrupt``)
and logged, and the node starts without it; an entry that is out of range is
skipped and logged. Bad bytes on disk never stop a node from starting.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from deepgossip.trust.accusation import AccusationLimits, Evidence, check_claim
from deepgossip.trust.blacklist import LocalVerdict
from deepgossip.wire.identity import NODE_ID_SIZE

__all__ = ["VERDICTS_FILE", "load_verdicts", "save_verdicts"]

log = logging.getLogger(__name__)

VERDICTS_FILE: Final = "verdicts.json"
FORMAT: Final = 1
_LIMITS: Final = AccusationLimits()


def save_verdicts(path: Path, verdicts: Iterable[LocalVerdict]) -> None:
    """Replace the file at ``path`` with ``verdicts``, atomically and durably."""
    doc = {
        "format": FORMAT,
        "verdicts": [
            {
                "peer": v.peer_id.hex(),
                "reason": v.reason,
                "suspicion": v.suspicion,
                "evidence": [[e.digest.hex(), e.round, e.score] for e in v.evidence],
            }
            for v in verdicts
        ],
    }
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_verdicts(path: Path) -> list[LocalVerdict]:
    """The verdicts saved at ``path``; none if there is no file or it is unusable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} verdicts file")
        entries = doc["verdicts"]
        if not isinstance(entries, list):
            raise ValueError("'verdicts' is not a list")
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError) as exc:  # JSONDecodeError, UnicodeError too
        aside = path.with_name(path.name + ".corrupt")
        log.error("unusable verdicts file %s (%s): moved to %s", path, exc, aside.name)
        try:
            os.replace(path, aside)
        except OSError as move_error:
            log.error("could not move %s aside: %s", path, move_error)
        return []
    verdicts: list[LocalVerdict] = []
    for index, entry in enumerate(entries):
        try:
            verdicts.append(_verdict(entry))
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("skipping verdict %d in %s: %s", index, path, exc)
    return verdicts


def _verdict(entry: Any) -> LocalVerdict:
    """One entry, checked as a peer would check the accusation it becomes."""
    peer = bytes.fromhex(entry["peer"])
    if len(peer) != NODE_ID_SIZE:
        raise ValueError("peer ids are 16 bytes")
    reason = entry["reason"]
    if not isinstance(reason, str):
        raise ValueError("bad reason")
    evidence = tuple(
        Evidence(bytes.fromhex(digest_hex), int(round_), float(score))
        for digest_hex, round_, score in entry["evidence"][: _LIMITS.max_evidence]
    )
    verdict = LocalVerdict(peer, reason, float(entry["suspicion"]), evidence)
    check_claim(verdict.suspicion, verdict.reason, verdict.evidence, _LIMITS)
    return verdict
