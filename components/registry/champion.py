"""Moving the `champion` alias: gated promotion, promotion by hand, and rollback.

`candidate` is the most recently registered version (components.registry.versions); `champion` the one
`models:/NAME@champion` serves. It moves only through `promote` (gated by components.registry.gates, or by hand
with a reason) and `rollback`.

Rollback history
    The registered model's tag `talkalign.champion_history` is the JSON list of versions that were champion,
    oldest first. promote appends; rollback moves `champion` back to the latest earlier entry that still exists
    and drops the entries after it. The actual alias is the truth: when `champion` was moved outside these
    functions, promote records it before appending, and rollback treats it as the top of the history. A
    rolled-back version is tagged `talkalign.rolled_back` and is then never promoted by the gates again, only
    by hand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.config import PromotionGate
from components.registry.gates import Decision, decide
from components.registry.versions import (
    CHAMPION,
    TAG_STATE,
    Registration,
    RegistryError,
    get_version,
    is_complete,
    is_missing,
    set_version_tags,
    version_metrics,
)

log = logging.getLogger(__name__)

TAG_PREVIOUS = "talkalign.previous_champion"  # on a version: the champion it replaced
TAG_PROMOTED = "talkalign.promoted"  # on a version: when and why it became champion
TAG_ROLLED_BACK = "talkalign.rolled_back"  # on a version: when and why it was rolled back
TAG_HISTORY = "talkalign.champion_history"  # on the registered model: JSON list of champion versions
HISTORY_LIMIT = 200
DESCRIPTION_LIMIT = 5000  # MLflow's SQL stores keep 5000 characters of a description


@dataclass(frozen=True)
class Transition:
    """The champion alias before and after an operation."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class GatedPromotion:
    decision: Decision
    outcome: str  # "promoted", "refused" or "kept" (the candidate already is the champion)
    champion_before: str | None
    champion_after: str | None
    champion_metrics: dict[str, float] | None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        version = (client.get_registered_model(name).aliases or {}).get(alias)
        return None if version is None else str(version)
    except MlflowException as exc:
        if is_missing(exc):
            return None
        raise


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    version = alias_version(client, name, CHAMPION)
    return None if version is None else client.get_model_version(name, version)


def champion_history(client: MlflowClient, name: str) -> list[str]:
    raw = (client.get_registered_model(name).tags or {}).get(TAG_HISTORY)
    try:
        history = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        log.warning("%s: unreadable %s tag %r, starting a new history", name, TAG_HISTORY, raw)
        return []
    return [str(v) for v in history] if isinstance(history, list) else []


def _write_history(client: MlflowClient, name: str, history: Sequence[str]) -> None:
    client.set_registered_model_tag(name, TAG_HISTORY, json.dumps(list(history)[-HISTORY_LIMIT:]))


def append_description(client: MlflowClient, mv: ModelVersion, text: str) -> None:
    current = client.get_model_version(mv.name, mv.version).description or ""
    joined = f"{current.rstrip()}\n\n{text}".strip() if current else text
    set_description(client, mv, joined)


def set_description(client: MlflowClient, mv: ModelVersion, text: str) -> None:
    if len(text) > DESCRIPTION_LIMIT:
        text = text[: DESCRIPTION_LIMIT - 20].rstrip() + "\n\n[... truncated]"
    client.update_model_version(mv.name, mv.version, description=text)


def promote(client: MlflowClient, name: str, version: str | int, reason: str) -> Transition:
    """Make `version` the champion (recording the champion it replaces); refuses incomplete versions."""
    if not reason or not reason.strip():
        raise RegistryError(f"{name}: a promotion needs a reason")
    mv = get_version(client, name, version)
    if not is_complete(mv):
        raise RegistryError(
            f"{name} version {mv.version}: its registration is {mv.tags.get(TAG_STATE, 'unknown')!r}, not complete; "
            "it cannot be promoted"
        )
    version = str(mv.version)  # the SQL store answers ints, the REST store strings
    before = alias_version(client, name, CHAMPION)
    if before == version:
        return Transition(before, before)
    client.set_registered_model_alias(name, CHAMPION, version)
    history = champion_history(client, name)
    if before is not None and (not history or history[-1] != before):
        history.append(before)  # the alias was moved outside promote(): keep it rollback-able
    _write_history(client, name, history + [version])
    stamp = f"{now()} {reason.strip()}"
    set_version_tags(client, mv, {TAG_PREVIOUS: before or "none", TAG_PROMOTED: stamp})
    if TAG_ROLLED_BACK in mv.tags:
        client.delete_model_version_tag(name, version, TAG_ROLLED_BACK)
    return Transition(before, version)


def rollback(client: MlflowClient, name: str, reason: str = "rolled back by hand") -> Transition:
    """Move `champion` back to the previous champion on record; tag the demoted version `rolled_back`."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name}: there is no champion to roll back")
    history = champion_history(client, name)
    earlier = history[: len(history) - 1 - history[::-1].index(current)] if current in history else list(history)
    target = None
    while earlier:
        version = earlier.pop()
        if version == current:
            continue
        try:
            mv = get_version(client, name, version)
        except RegistryError:
            continue  # deleted since
        if is_complete(mv):
            target = str(mv.version)
            break
    if target is None:
        raise RegistryError(
            f"{name}: version {current} is the first champion on record; there is nothing to roll back to"
        )
    client.set_registered_model_alias(name, CHAMPION, target)
    _write_history(client, name, earlier + [target])
    stamp = f"{now()} {reason.strip() or 'rolled back by hand'}"
    client.set_model_version_tag(name, current, TAG_ROLLED_BACK, stamp)
    return Transition(current, target)


def gated_promotion(
    client: MlflowClient,
    registration: Registration,
    metrics: Mapping[str, Any],
    gates: Sequence[PromotionGate],
    describe: Callable[[GatedPromotion], str] | None = None,
) -> GatedPromotion:
    """Apply the gates to a registered candidate against the current champion, and promote it if they pass.

    describe(result) -> the text written to the version's description before the alias moves (skipped
    when the candidate already is the champion, so a rerun keeps the reasons of the original decision).
    """
    name, version = registration.name, registration.version
    current = champion(client, name)
    champ_metrics = None if current is None else version_metrics(current)
    mv = client.get_model_version(name, version)
    if current is not None and str(current.version) == version:
        decision = Decision(False, [f"version {version} already is the champion; nothing to do"])
        return GatedPromotion(decision, "kept", version, version, champ_metrics)
    if TAG_ROLLED_BACK in mv.tags:
        decision = Decision(
            False,
            [f"refused: version {version} was rolled back ({mv.tags[TAG_ROLLED_BACK]}); only "
             f"`talkalign promote {version} --reason ...` makes it champion again"],
        )
    else:
        decision = decide(metrics, champ_metrics, gates)
    before = None if current is None else str(current.version)
    after = version if decision.promote else before
    result = GatedPromotion(decision, "promoted" if decision.promote else "refused", before, after, champ_metrics)
    if describe is not None:
        set_description(client, mv, describe(result))
    if decision.promote:
        promote(client, name, version, reason=decision.reasons[0])
    return result
