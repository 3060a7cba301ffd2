"""The roster's version rules, shared by both stores: pure functions from the stored workers
and a change to the rows to write. No SQL, no I/O, no clock (the caller passes `today`
and `now_ms`).

A project's roster is its workers with `entry_date <= today < exit_date`. The rules that
make a terminal's delta sound without a change log (docs/downlink.md):

- A change that a terminal can see takes the project's next version, stamped on the row
  as `version`; changes are numbered in the order they are made, one version per worker
  changed. A terminal at version k holds the current state of every worker whose last
  change is at or below k, so the delta from k is exactly the rows with version > k.
- What a terminal can see: a worker on the roster before or after the change. A worker
  off the roster on both sides (not entered yet, or gone) changes nothing on any
  terminal, so the row is updated and keeps its version (0 for one never on the roster).
- `added_version` is the version at which the worker last joined the roster: a delta row
  with `added_version <= k` is a ROSTER_UPDATE for a terminal at k, else a ROSTER_ADD.
- `face_version` is the version at which terminals last had to fetch the face: set when
  the face changes on the roster and when the worker joins the roster with a face, so a
  terminal at k must be sent the face exactly when `face_version > k`.
- A face is never taken away (a terminal can be given another face but not told to drop
  one): an import row without a face keeps the stored one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date

from lmg.storage.api import ImportResult, Worker, WorkerIn


def on_roster(entry_date: date, exit_date: date | None, today: date) -> bool:
    """Whether a worker with these dates is on the roster `today`."""
    return entry_date <= today and (exit_date is None or today < exit_date)


@dataclass(slots=True)
class RosterPlan:
    """The rows one call writes and where the project's version ends up."""

    version: int  # the project's roster version after the call
    writes: list[Worker]  # new and changed rows, in the order they took their versions
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def result(self) -> ImportResult:
        return ImportResult(self.added, self.updated, self.unchanged, self.version)


def _versions(old: Worker, on: bool, face: bytes | None, version: int) -> tuple[int, int, int, int]:
    """The (version, added_version, face_version) of a changed row whose roster state
    becomes `on` and whose face becomes `face`, then the project's version after it."""
    if not old.on_roster and not on:
        return old.version, old.added_version, old.face_version, version
    version += 1
    joins = on and not old.on_roster
    face_version = old.face_version
    if face is not None and (joins or (on and face != old.face_sha256)):
        face_version = version
    return version, version if joins else old.added_version, face_version, version


def _changed(old: Worker, new: Worker, version: int) -> tuple[Worker, int]:
    """`new` (old's fields changed, on_roster recomputed) with its versions; the project's
    version after it."""
    row_version, added, face_version, version = _versions(old, new.on_roster, new.face_sha256, version)
    return replace(new, version=row_version, added_version=added, face_version=face_version), version


def _same(old: Worker, new: Worker) -> bool:
    return (old.name, old.card_no, old.enterprise, old.team, old.post, old.entry_date, old.exit_date,
            old.face_sha256, old.on_roster) == (
        new.name, new.card_no, new.enterprise, new.team, new.post, new.entry_date, new.exit_date,
        new.face_sha256, new.on_roster)


# A WorkerIn's fields in order, as plain values: what crosses to the SQLite writer process
# (a tuple pickles in a third of the time of the dataclass, and unpickles in a tenth).
WorkerFields = tuple[str, str, str, str, str, str, date, "date | None", "bytes | None"]


def worker_fields(row: WorkerIn) -> WorkerFields:
    return (row.worker_id, row.name, row.card_no, row.enterprise, row.team, row.post, row.entry_date,
            row.exit_date, row.face_sha256)


def plan_import(project_code: str, version: int, stored: Mapping[str, Worker],
                rows: Sequence[WorkerFields], today: date, now_ms: int) -> RosterPlan:
    """What `import_workers` writes. `rows` are checked (api.check_worker), each worker once,
    as `worker_fields`; `stored` holds the stored rows of those workers; `version` is the
    project's now."""
    plan = RosterPlan(version, [])
    for worker_id, name, card_no, enterprise, team, post, entry, exit_, face in rows:
        old = stored.get(worker_id)
        on = on_roster(entry, exit_, today)
        if old is None:
            plan.added += 1
            if on:
                plan.version += 1
                row_version = added = plan.version
                face_version = plan.version if face is not None else 0
            else:
                row_version = added = face_version = 0
        else:
            if face is None:
                face = old.face_sha256
            if (old.name, old.card_no, old.enterprise, old.team, old.post, old.entry_date, old.exit_date,
                    old.face_sha256, old.on_roster) == (name, card_no, enterprise, team, post, entry, exit_,
                                                        face, on):
                plan.unchanged += 1
                continue
            plan.updated += 1
            row_version, added, face_version, plan.version = _versions(old, on, face, plan.version)
        plan.writes.append(Worker(project_code, worker_id, name, card_no, enterprise, team, post, entry, exit_,
                                  face, on, row_version, added, face_version, now_ms))
    return plan


def plan_dates(version: int, workers: Iterable[Worker], today: date, now_ms: int) -> RosterPlan:
    """What `apply_roster_dates` writes for one project: the workers whose roster state
    `today` differs from the stored one, in the order given (by worker_id)."""
    plan = RosterPlan(version, [])
    for old in workers:
        on = on_roster(old.entry_date, old.exit_date, today)
        if on == old.on_roster:
            continue
        written, plan.version = _changed(old, replace(old, on_roster=on, updated_at_ms=now_ms), plan.version)
        plan.writes.append(written)
        plan.updated += 1
    return plan


def plan_removal(version: int, old: Worker, exit_date: date, today: date, now_ms: int) -> RosterPlan:
    """What `remove_worker` writes for a worker on the roster (nothing if the exit date is
    the stored one). Raises ValueError for an exit date before the entry date."""
    if exit_date < old.entry_date:
        raise ValueError(f"exit_date {exit_date} is before the worker's entry_date {old.entry_date}")
    plan = RosterPlan(version, [])
    new = replace(old, exit_date=exit_date, on_roster=on_roster(old.entry_date, exit_date, today),
                  updated_at_ms=now_ms)
    if _same(old, new):
        plan.unchanged = 1
        return plan
    written, plan.version = _changed(old, new, version)
    plan.writes.append(written)
    plan.updated = 1
    return plan


def prune_floor(floor: int, pruned_versions: Iterable[int]) -> int:
    """A project's roster floor after deleting tombstones with these versions."""
    return max([floor, *pruned_versions])
