"""The watch folder: Metafer export folders dropped into a directory become import jobs by themselves.

    DIR/<export>/         arriving; taken once complete
    DIR/processing/<export>/   taken: its import job is waiting, queued or running
    DIR/done/<export>/         imported
    DIR/failed/<export>/       refused or failed for good, with ``marrowlink-reason.txt`` saying why

A folder is *complete* when its manifest (``manifest.json`` or ``manifest.csv``) is there and nothing
in it (names, sizes, modification times) changed for the settle time, so a folder that is still being
copied is never touched, whatever order the copy writes its files in. It is then read and checked
(`acquisition.metafer.read_metafer_export`); a broken one goes to failed/ at once. Moves are renames
inside DIR, so DIR must be one filesystem; with Celery workers on other hosts it must be mounted at the
same path on each (docs/deployment.md). After a crash, folders found in processing/ without a job are
registered again, and finished jobs' folders are filed away.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from sqlmodel import Session, col, select

from integration.jobs import Job, JobState, Step
from integration.pipeline import Pipeline

log = logging.getLogger("marrowlink.watch")

PROCESSING, DONE, FAILED = "processing", "done", "failed"
REASON_FILE = "marrowlink-reason.txt"
MANIFESTS = ("manifest.json", "manifest.csv")

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(folder: Path) -> Fingerprint:
    """Every file under the folder with its size and modification time."""
    found = []
    for base, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed while we looked: the folder is changing
                continue
            found.append((os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


class WatchFolder:
    """Looks at DIR each `tick`; `Pipeline.register_scan` turns complete folders into jobs."""

    def __init__(self, root: Path, pipeline: Pipeline, *, settle_s: float = 10.0) -> None:
        self.root = root.resolve()
        self.pipeline = pipeline
        self.settle_s = settle_s
        self._seen: dict[str, tuple[Fingerprint, float]] = {}
        for name in (PROCESSING, DONE, FAILED):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def recover(self) -> None:
        """After a crash: a folder in processing/ that no job names is registered again."""
        known = {Path(job.folder) for job in self._import_jobs()}
        for folder in sorted((self.root / PROCESSING).iterdir()):
            if folder.is_dir() and folder not in known:
                log.info("%s was taken before a restart; registering it again", folder.name)
                self._take(folder, already_moved=True)

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        present = set()
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.name in (PROCESSING, DONE, FAILED) or folder.name.startswith("."):
                continue
            present.add(folder.name)
            if self._settled(folder, now):
                self._seen.pop(folder.name, None)
                self._take(folder)
        for name in list(self._seen):
            if name not in present:
                del self._seen[name]
        self.file_away()

    def _settled(self, folder: Path, now: float) -> bool:
        if not any((folder / name).is_file() for name in MANIFESTS):
            self._seen.pop(folder.name, None)
            return False
        current = fingerprint(folder)
        previous = self._seen.get(folder.name)
        if previous is None or previous[0] != current:
            self._seen[folder.name] = (current, now)
            return self.settle_s <= 0
        return now - previous[1] >= self.settle_s

    def _take(self, folder: Path, *, already_moved: bool = False) -> None:
        from acquisition.metafer import MetaferExportError, read_metafer_export

        try:
            barcode = read_metafer_export(folder).barcode
        except MetaferExportError as exc:
            log.error("%s is not a usable export: %s", folder.name, exc)
            self._move(folder, FAILED, reason=f"not a usable Metafer export: {exc}")
            return
        taken = folder if already_moved else self._move(folder, PROCESSING)
        registered = self.pipeline.register_scan(taken, barcode)
        if registered.refused:
            log.error("%s: %s", folder.name, registered.refused)
            self._move(taken, FAILED, reason=registered.refused)
        else:
            log.info("%s: slide %s taken (import job %s, %s)", folder.name, barcode, registered.job.id,  # type: ignore[union-attr]
                     registered.job.state)  # type: ignore[union-attr]  # fmt: skip

    def file_away(self) -> None:
        """Folders of finished imports go to done/, of failed or cancelled ones to failed/ (with the reason)."""
        processing, done = self.root / PROCESSING, self.root / DONE
        for job in self._import_jobs():
            folder = Path(job.folder)
            if not folder.is_dir():
                continue
            if job.state == JobState.DONE.value and folder.parent != done:
                self._refile(job, self._move(folder, DONE))
            elif job.state in (JobState.FAILED.value, JobState.CANCELLED.value) and folder.parent == processing:
                self._refile(job, self._move(folder, FAILED, reason=job.reason or job.state))

    def _import_jobs(self) -> list[Job]:
        prefix = str(self.root) + os.sep
        with Session(self.pipeline.engine, expire_on_commit=False) as session:
            query = select(Job).where(Job.step == Step.IMPORT.value, col(Job.folder).startswith(prefix))
            return list(session.exec(query).all())

    def _refile(self, job: Job, folder: Path) -> None:
        with Session(self.pipeline.engine) as session, session.begin():
            row = session.get(Job, job.id)
            if row is not None:
                row.folder = str(folder)
                session.add(row)

    def _move(self, folder: Path, into: str, *, reason: str = "") -> Path:
        """Rename the folder into DIR/<into>/ (a free name: -2, -3 … when taken); write the reason file."""
        target = self.root / into / folder.name
        number = 2
        while target.exists():
            target = self.root / into / f"{folder.name}-{number}"
            number += 1
        os.replace(folder, target)
        if reason:
            (target / REASON_FILE).write_text(reason.rstrip() + "\n", encoding="utf-8")
        log.info("%s → %s/", folder.name, into)
        return target
