"""The review domain: each AI run's cells as people see and change them, and the reports a case has had.

A cell row is one detection of one analysis run, kept in the 40x level's pixels, region by region, as
the writers want it back: the final SR is built from these rows. People never change what the AI said
(`predicted_class`); they set `reviewed_class`, delete a false cell (`deleted`) or add a missed one
(`added_by`). A report row is one SR the case has had (preliminary, final, corrected), with the
objects of its run, so a sign-off can reference the same SEG and annotations and a correction its
predecessor. Every change is audited in the same transaction (integration.cases.audit).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Column, ColumnElement, Text, func
from sqlmodel import Field, Session, SQLModel, col, select

from integration.cases import utcnow


class Report(SQLModel, table=True):
    """One differential report (SR) of a case: the AI's preliminary one, a signed final one, a correction."""

    __tablename__ = "case_reports"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id", index=True)
    status: str = Field(max_length=20)  # preliminary | final | corrected
    study_instance_uid: str = Field(max_length=64)
    sr_instance_uid: str = Field(max_length=64, unique=True)
    seg_instance_uid: str = Field(default="", max_length=64)
    ann_instance_uid: str = Field(default="", max_length=64)
    aoi_instance_uid: str = Field(default="", max_length=64)
    #: The preliminary report whose cells this report counts (itself for a preliminary one).
    run_id: int | None = Field(default=None, foreign_key="case_reports.id")
    predecessor_sr_uid: str = Field(default="", max_length=64)
    #: AlgorithmInfo of the run as JSON (name, version, weights_sha256, parameters).
    algorithm: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    pixel_size_um: float = 0.0
    #: The analysed rectangles of the level, [[column, row, width, height], ...] as JSON (cells or not).
    regions: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    signed_by: str = Field(default="", max_length=200)
    outbox_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class CellRow(SQLModel, table=True):
    """One cell of an analysis run, in the 40x level's pixels relative to its analysed region."""

    __tablename__ = "cells"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="case_reports.id", index=True)
    region_column: int
    region_row: int
    region_width: int
    region_height: int
    #: Open ring of (x, y) pixel centres, region-local, at the level's pixel size, as JSON.
    polygon: str = Field(sa_column=Column(Text, nullable=False))
    x0: int
    y0: int
    x1: int
    y1: int
    area_px: float
    predicted_class: str | None = Field(default=None, max_length=20)
    probability: float | None = None
    #: The classifier's five most likely classes with their probabilities, {code: p}, as JSON.
    probabilities: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    reviewed_class: str | None = Field(default=None, max_length=20)
    deleted: bool = False
    #: Cut by the edge of its analysed image (ai.results.Cell.border): shown in the viewer, never counted
    #: and not in the gallery, as a reviewer skips a cell only partly in the field.
    border: bool = False
    added_by: str = Field(default="", max_length=200)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def current_class(self) -> str | None:
        """What the cell counts as now: the reviewer's class if one was given, else the AI's."""
        return self.reviewed_class if self.reviewed_class is not None else self.predicted_class

    def points(self) -> np.ndarray:
        return np.asarray(json.loads(self.polygon), dtype=np.float64)


@dataclass(frozen=True)
class RegionCells:
    """An analysed rectangle of the level and the cells that count in it now."""

    column: int
    row: int
    width: int
    height: int
    cells: list[CellRow]


def cell_row(
    run_id: int, column: int, row: int, width: int, height: int, polygon: np.ndarray, **fields: object
) -> CellRow:
    """A cell from its region-local polygon (pixel centres at the level's pixel size)."""
    points = np.asarray(polygon, dtype=np.float64)
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 1
    return CellRow(
        run_id=run_id,
        region_column=column,
        region_row=row,
        region_width=width,
        region_height=height,
        polygon=json.dumps([[round(float(x), 2), round(float(y), 2)] for x, y in points]),
        x0=int(max(0, x0)),
        y0=int(max(0, y0)),
        x1=int(min(width, x1)),
        y1=int(min(height, y1)),
        **fields,  # type: ignore[arg-type]
    )


def counted() -> ColumnElement[bool]:
    """The cells that count (in the differential, the gallery and the sign-off): not deleted, not cut by an edge."""
    return (CellRow.deleted == False) & (CellRow.border == False)  # noqa: E712 (SQL, not Python)


def run_cells(session: Session, run_id: int, *, include_deleted: bool = False) -> list[CellRow]:
    """The run's counted cells (with `include_deleted`: every cell, deleted and edge-cut ones too)."""
    query = select(CellRow).where(CellRow.run_id == run_id).order_by(col(CellRow.id))
    if not include_deleted:
        query = query.where(counted())
    return list(session.exec(query).all())


def class_counts(session: Session, run_id: int) -> dict[str | None, int]:
    """How many cells of a run count as each class now (None: unidentified), counted by the database:
    a slide has up to ~12,000 cells and the worklist asks this for every case."""
    current = func.coalesce(CellRow.reviewed_class, CellRow.predicted_class)
    query = select(current, func.count()).where(CellRow.run_id == run_id, counted()).group_by(current)
    return {cls: int(n) for cls, n in session.exec(query).all()}


def review_changes(session: Session, run_id: int, now: dict[str | None, int]) -> dict[str, object]:
    """What people changed since the AI's result: cells reclassified, deleted, added, and counts AI → now.

    `now` is `class_counts` of the run, which the caller has already counted for its differential.
    """
    ai_class = CellRow.predicted_class
    ai_counts = dict(
        session.exec(
            select(ai_class, func.count())
            .where(CellRow.run_id == run_id, CellRow.added_by == "", CellRow.border == False)  # noqa: E712
            .group_by(ai_class)
        ).all()
    )
    changed = (CellRow.reviewed_class != None) & (  # noqa: E711 (SQL)
        (CellRow.predicted_class == None) | (CellRow.reviewed_class != CellRow.predicted_class)  # noqa: E711
    )
    base = select(func.count()).where(CellRow.run_id == run_id, CellRow.border == False)  # noqa: E712
    return {
        "reclassified": session.exec(base.where(changed, CellRow.added_by == "", counted())).one(),
        "deleted": session.exec(base.where(CellRow.deleted == True, CellRow.added_by == "")).one(),  # noqa: E712
        "added": session.exec(base.where(CellRow.added_by != "", CellRow.deleted == False)).one(),  # noqa: E712
        "counts": {
            str(cls or "UNIDENTIFIED"): {"ai": int(ai_counts.get(cls, 0)), "now": int(now.get(cls, 0))}
            for cls in {*ai_counts, *now}
            if ai_counts.get(cls, 0) != now.get(cls, 0)
        },
    }


def classes_of(counts: dict[str | None, int]) -> Iterator[str | None]:
    """The counts as one label per cell, for Differential.from_classes."""
    for cls, n in counts.items():
        yield from [cls] * n


def by_region(cells: Iterable[CellRow], regions: Iterable[tuple[int, int, int, int]] = ()) -> list[RegionCells]:
    """Cells grouped by their region, regions in reading order; `regions` adds analysed ones without cells."""
    grouped: dict[tuple[int, int, int, int], list[CellRow]] = {key: [] for key in regions}
    for cell in cells:
        key = (cell.region_column, cell.region_row, cell.region_width, cell.region_height)
        grouped.setdefault(key, []).append(cell)
    return [RegionCells(*key, cells=grouped[key]) for key in sorted(grouped, key=lambda k: (k[1], k[0]))]


def run_regions(run: Report) -> list[tuple[int, int, int, int]]:
    return [(int(c), int(r), int(w), int(h)) for c, r, w, h in json.loads(run.regions)]


def latest_report(session: Session, case_id: int, *, statuses: tuple[str, ...] = ()) -> Report | None:
    query = select(Report).where(Report.case_id == case_id).order_by(col(Report.id).desc())
    if statuses:
        query = query.where(col(Report.status).in_(statuses))
    return session.exec(query).first()


def case_reports(session: Session, case_id: int) -> list[Report]:
    return list(session.exec(select(Report).where(Report.case_id == case_id).order_by(col(Report.id))).all())
