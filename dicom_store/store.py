"""The Store API: every other package and protocol stores and reads DICOM through this class.

Write path: bytes land in a temp file, are parsed (the header only, up to Pixel Data, whose frames
are located without decoding) and validated (identifying UIDs, complete Pixel Data), renamed into the
blob store and fsynced, and indexed in one transaction that commits only once the blob is durable.
Anything that fails before the commit leaves no index row and no blob. A C-STORE data set
(``store_received``) is renamed and its fsync started before the parse, which then overlaps the flush.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from dicom_store import attributes
from dicom_store.blobs import BlobStore, Placed, check_uid
from dicom_store.errors import DuplicateInstance, InvalidInstance, NotFound, OutOfResources, StoreError
from dicom_store.frames import FrameLayout, read_frame, scan_pixel_data
from dicom_store.models import FrameTable, Instance, Series, Study
from dicom_store.query import Level, Query, parse_query, run, run_json

log = logging.getLogger(__name__)

#: Seconds a cached frame layout is used before its blob's existence is checked again.
LAYOUT_RECHECK_S = 1.0


class DuplicatePolicy(StrEnum):
    REJECT = "reject"
    REPLACE = "replace"
    KEEP = "keep"


class Outcome(StrEnum):
    STORED = "stored"
    REPLACED = "replaced"
    KEPT_EXISTING = "kept_existing"


_SERIES_TABLE = Series.__table__  # type: ignore[attr-defined]
_INSTANCE_TABLE = Instance.__table__  # type: ignore[attr-defined]
_FRAMES_TABLE = FrameTable.__table__  # type: ignore[attr-defined]
_EXISTING_PATH = select(_INSTANCE_TABLE.c.path).where(_INSTANCE_TABLE.c.sop_instance_uid == bindparam("sop"))
_SERIES_STUDY = select(_SERIES_TABLE.c.study_instance_uid).where(
    _SERIES_TABLE.c.series_instance_uid == bindparam("series")
)
_INSERT_IGNORE = {
    (dialect, model): module.insert(model.__table__).on_conflict_do_nothing()  # type: ignore[attr-defined]
    for dialect, module in (("postgresql", postgresql), ("sqlite", sqlite))
    for model in (Study, Series)
}


def _insert_ignore(connection: Connection, dialect: str, model: type, values: dict) -> None:
    """INSERT … ON CONFLICT DO NOTHING: concurrent stores of one new study must not collide."""
    statement = _INSERT_IGNORE.get((dialect, model))
    if statement is None:  # pragma: no cover - other databases: check first
        table = model.__table__  # type: ignore[attr-defined]
        key = next(iter(table.primary_key.columns))
        if connection.execute(select(key).where(key == values[key.name])).first() is not None:
            return
        statement = table.insert()
    connection.execute(statement, values)


class _Blob:
    """An instance's bytes on their way in: a temp file, then (``placed``) a blob being made durable."""

    __slots__ = ("placed", "relative", "temp")

    def __init__(self, temp: Path) -> None:
        self.temp = temp
        self.placed: Placed | None = None
        self.relative = ""

    def drop(self, blobs: BlobStore) -> None:
        """Remove whichever exists (after its fsyncs ended, so none reopens a removed name)."""
        if self.placed is None:
            blobs.discard(self.temp)
            return
        try:
            self.placed.wait()
        except OSError:
            pass
        blobs.remove(self.relative)


@dataclass(frozen=True)
class StoredInstance:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    outcome: Outcome


@dataclass(frozen=True)
class FrameSource:
    """An instance's frames: where its blob is and how its bytes are laid out."""

    path: Path
    transfer_syntax_uid: str
    layout: FrameLayout
    instance: Instance


class Store:
    """DICOM instances on the filesystem with an SQL index.

    Parameters
    ----------
    engine:
        A migrated index engine (``integration.database.open_index``).
    blob_root:
        Folder for the blob store; created if missing.
    duplicate_policy:
        What to do with an instance whose SOP Instance UID is already stored.
    max_instance_bytes:
        Instances larger than this are refused with 0xA700 before anything is written.
    """

    def __init__(
        self,
        engine: Engine,
        blob_root: Path,
        *,
        duplicate_policy: DuplicatePolicy | str = DuplicatePolicy.REJECT,
        max_instance_bytes: int = 4 * 1024**3,
    ) -> None:
        self.engine = engine
        self.blobs = BlobStore(blob_root)
        self.duplicate_policy = DuplicatePolicy(duplicate_policy)
        self.max_instance_bytes = max_instance_bytes
        self._layouts: OrderedDict[str, tuple[FrameSource, float]] = OrderedDict()
        self._layout_lock = threading.Lock()

    # ---- writing -------------------------------------------------------------------------------------------

    def store_bytes(self, data: bytes) -> StoredInstance:
        """Store one Part-10 file given as bytes (a STOW-RS part)."""
        if len(data) > self.max_instance_bytes:
            raise OutOfResources(f"instance of {len(data)} bytes exceeds the limit of {self.max_instance_bytes}")
        temp = self.blobs.temp_file()
        with open(temp, "wb") as handle:
            handle.write(data)
        return self._ingest(temp)

    def store_file(self, path: Path, *, move: bool = False) -> StoredInstance:
        """Store a Part-10 file; with ``move`` the file is taken over (it must be on the same filesystem).

        A file already in the blob store's temp folder (a C-STORE data set received there) is used in
        place.
        """
        path = Path(path)
        if move and path.parent == self.blobs.tmp and path.name.endswith(".part"):
            return self._ingest(path)
        temp = self.blobs.temp_file()
        if move:
            try:
                os.replace(path, temp)
            except OSError:
                shutil.copyfile(path, temp)
                os.unlink(path)
        else:
            shutil.copyfile(path, temp)
        return self._ingest(temp)

    def store_dataset(self, ds: Dataset, *, transfer_syntax_uid: str | None = None) -> StoredInstance:
        """Store an in-memory dataset (results written by our own writers)."""
        ds = _with_file_meta(ds, transfer_syntax_uid)
        temp = self.blobs.temp_file()
        try:
            ds.save_as(temp, enforce_file_format=True)
        except Exception as exc:
            self.blobs.discard(temp)
            raise InvalidInstance(f"dataset cannot be encoded: {exc}") from exc
        return self._ingest(temp)

    def store_datasets(self, datasets: Sequence[Dataset]) -> list[StoredInstance]:
        """Store several instances all or nothing: a failure removes what this call already stored.

        For results that only make sense together (a scan's pyramid levels, an analysis run's SEG,
        ANN and SR).
        """
        stored: list[StoredInstance] = []
        try:
            for ds in datasets:
                stored.append(self.store_dataset(ds))
        except BaseException:
            for item in stored:
                if item.outcome is not Outcome.KEPT_EXISTING:
                    self.delete_instance(item.sop_instance_uid)
            raise
        return stored

    def _ingest(self, temp: Path) -> StoredInstance:
        try:
            ds, layout, size = self._parse(temp)
        except BaseException:
            self.blobs.discard(temp)
            raise
        return self._commit(ds, layout, size, _Blob(temp))

    def store_received(self, path: Path, sop_instance_uid: str) -> StoredInstance:
        """Store a data set received into the blob store's temp folder (a ``*.part`` file) whose SOP
        Instance UID the protocol announced (C-STORE's Affected SOP Instance UID).

        Its blob name depends on that UID only, so the file is renamed into place and its fsyncs
        start before it is parsed: parsing and the duplicate check overlap the disk flush. A data set
        that names another UID, is refused, or fails is removed again; the index row is committed
        only after the blob is durable, as for every store.
        """
        path = Path(path)
        try:
            uid = check_uid(sop_instance_uid)
        except InvalidInstance:
            uid = ""
        if not uid or path.parent != self.blobs.tmp or not path.name.endswith(".part"):
            return self.store_file(path, move=True)
        blob = _Blob(path)
        try:
            size = os.stat(path).st_size
            if size > self.max_instance_bytes:
                raise OutOfResources(f"instance of {size} bytes exceeds the limit of {self.max_instance_bytes}")
            relative = self.blobs.new_relative_path(uid)
            blob.placed, blob.relative = self.blobs.place(path, relative), relative
            ds, layout, size = self._parse(blob.placed.path)
            if attributes.identify(ds)[2] != uid:
                raise InvalidInstance(f"SOPInstanceUID of the data set differs from the request's {uid}")
        except BaseException:
            blob.drop(self.blobs)
            raise
        return self._commit(ds, layout, size, blob)

    def _parse(self, temp: Path) -> tuple[Dataset, FrameLayout | None, int]:
        """The header (up to Pixel Data, never the pixels) and the frames' byte ranges; one pass."""
        with open(temp, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size > self.max_instance_bytes:
                raise OutOfResources(f"instance of {size} bytes exceeds the limit of {self.max_instance_bytes}")
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
            except InvalidDicomError as exc:
                raise InvalidInstance(f"not a DICOM Part-10 file: {exc}") from exc
            except Exception as exc:  # pydicom raises many types on corrupt input
                raise InvalidInstance(f"cannot parse DICOM: {type(exc).__name__}: {exc}") from exc
            if not ds.file_meta.get("TransferSyntaxUID"):
                raise InvalidInstance("file meta information has no TransferSyntaxUID")
            attributes.identify(ds)
            pixel_position = fp.tell()
            layout = None
            if pixel_position < size:
                fp.seek(pixel_position)
                tag = fp.read(4)
                if tag == b"\xe0\x7f\x10\x00":
                    frames = attributes.integer(ds, "NumberOfFrames") or 1
                    frame_bytes = attributes.frame_bytes(ds)
                    layout = scan_pixel_data(
                        fp,
                        pixel_position,
                        size,
                        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                        number_of_frames=frames if frame_bytes or frames == 1 else 1,
                        frame_bytes=frame_bytes,
                    )
        return ds, layout, size

    def _commit(self, ds: Dataset, layout: FrameLayout | None, size: int, blob: _Blob) -> StoredInstance:
        """Duplicate check, durable blob, then the index rows in one transaction, on one connection.

        The transaction's statements run while the blob is being fsynced; it commits only once the
        blob is durable, so a committed row always has its bytes. Core statements, not ORM objects:
        this runs once per received instance (C-STORE, STOW part). Anything that fails removes the
        blob (temp file or placed file) again.
        """
        try:
            ids = attributes.identify(ds)
            study_uid, series_uid, sop_uid, sop_class = ids
            transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
            with self.engine.connect() as connection:
                existing = connection.execute(_EXISTING_PATH, {"sop": sop_uid}).scalar()
                connection.rollback()  # no read transaction held while the blob is written
                if existing is not None and self.duplicate_policy == DuplicatePolicy.REJECT:
                    raise DuplicateInstance(
                        f"SOP Instance UID {sop_uid} is already stored (duplicate policy: reject)",
                        sop_instance_uid=sop_uid,
                        sop_class_uid=sop_class,
                    )
                if existing is not None and self.duplicate_policy == DuplicatePolicy.KEEP:
                    blob.drop(self.blobs)
                    return StoredInstance(
                        study_uid, series_uid, sop_uid, sop_class, transfer_syntax, Outcome.KEPT_EXISTING
                    )
                if blob.placed is None:
                    blob.relative = self.blobs.new_relative_path(sop_uid)
                    blob.placed = self.blobs.place(blob.temp, blob.relative)
                try:
                    with connection.begin():
                        # the rows are written while the blob's fsyncs run; the commit waits for them
                        self._index(connection, ds, ids, blob.relative, size, layout, replace=existing is not None)
                        blob.placed.wait()
                except IntegrityError as exc:
                    raise DuplicateInstance(
                        f"SOP Instance UID {sop_uid} was stored concurrently "
                        f"(duplicate policy: {self.duplicate_policy})",
                        sop_instance_uid=sop_uid,
                        sop_class_uid=sop_class,
                    ) from exc
        except BaseException:
            blob.drop(self.blobs)
            raise
        if existing is not None:
            self.blobs.remove(existing)
            with self._layout_lock:
                self._layouts.pop(sop_uid, None)
        outcome = Outcome.REPLACED if existing is not None else Outcome.STORED
        return StoredInstance(study_uid, series_uid, sop_uid, sop_class, transfer_syntax, outcome)

    def _index(
        self,
        connection: Connection,
        ds: Dataset,
        ids: tuple[str, str, str, str],
        relative: str,
        size: int,
        layout: FrameLayout | None,
        *,
        replace: bool,
    ) -> None:
        study_uid, series_uid, sop_uid, sop_class = ids
        now = datetime.now(UTC)
        dialect = connection.dialect.name
        study = {"study_instance_uid": study_uid, **attributes.study_values(ds), "created_at": now}
        _insert_ignore(connection, dialect, Study, study)
        series = {
            "series_instance_uid": series_uid,
            "study_instance_uid": study_uid,
            **attributes.series_values(ds),
            "created_at": now,
        }
        _insert_ignore(connection, dialect, Series, series)
        series_study = connection.execute(_SERIES_STUDY, {"series": series_uid}).scalar()
        if series_study != study_uid:
            raise InvalidInstance(
                f"SeriesInstanceUID {series_uid} belongs to study {series_study}, not {study_uid}",
                sop_instance_uid=sop_uid,
                sop_class_uid=sop_class,
            )
        values = {
            "series_instance_uid": series_uid,
            "study_instance_uid": study_uid,
            "sop_class_uid": sop_class,
            "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
            "path": relative,
            "size": size,
            **attributes.instance_values(ds),
            "stored_at": now,
        }
        updated = False
        if replace:
            connection.execute(_FRAMES_TABLE.delete().where(_FRAMES_TABLE.c.sop_instance_uid == sop_uid))
            result = connection.execute(
                _INSTANCE_TABLE.update().where(_INSTANCE_TABLE.c.sop_instance_uid == sop_uid).values(**values)
            )
            updated = result.rowcount > 0
        if not updated:
            connection.execute(_INSTANCE_TABLE.insert(), {"sop_instance_uid": sop_uid, **values})
        if layout is not None:
            connection.execute(
                _FRAMES_TABLE.insert(),
                {"sop_instance_uid": sop_uid, "encapsulated": layout.encapsulated, "fragments": layout.to_bytes()},
            )

    def delete_instance(self, sop_instance_uid: str) -> None:
        """Remove an instance (index rows first, then the blob); empty series and studies go with it.

        Used to undo a partly stored multi-instance write (an import or an analysis run that failed
        half way), so that such a write is all or nothing.
        """
        with Session(self.engine) as session, session.begin():
            row = session.get(Instance, sop_instance_uid)
            if row is None:
                return
            relative, series_uid, study_uid = row.path, row.series_instance_uid, row.study_instance_uid
            frames = session.get(FrameTable, sop_instance_uid)
            if frames is not None:
                session.delete(frames)
            session.delete(row)
            session.flush()
            if (
                session.scalar(select(Instance.sop_instance_uid).where(Instance.series_instance_uid == series_uid))
                is None
            ):
                series = session.get(Series, series_uid)
                if series is not None:
                    session.delete(series)
                    session.flush()
            if session.scalar(select(Series.series_instance_uid).where(Series.study_instance_uid == study_uid)) is None:
                study = session.get(Study, study_uid)
                if study is not None:
                    session.delete(study)
        self.blobs.remove(relative)
        with self._layout_lock:
            self._layouts.pop(sop_instance_uid, None)

    # ---- reading -------------------------------------------------------------------------------------------

    def instance(self, sop_instance_uid: str) -> Instance:
        with Session(self.engine) as session:
            row = session.get(Instance, sop_instance_uid)
            if row is None:
                raise NotFound(f"no instance {sop_instance_uid}")
            session.expunge(row)
            return row

    def instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
    ) -> list[Instance]:
        """Index rows in a stable order (series, instance number)."""
        statement = select(Instance)
        if study_instance_uid:
            statement = statement.where(Instance.study_instance_uid == study_instance_uid)
        if series_instance_uid:
            statement = statement.where(Instance.series_instance_uid == series_instance_uid)
        if sop_instance_uids is not None:
            statement = statement.where(Instance.sop_instance_uid.in_(list(sop_instance_uids)))
        statement = statement.order_by(
            Instance.series_instance_uid, Instance.instance_number, Instance.sop_instance_uid
        )
        with Session(self.engine) as session:
            rows = list(session.scalars(statement).all())
            for row in rows:
                session.expunge(row)
            return rows

    def path(self, sop_instance_uid: str) -> Path:
        return self.blobs.absolute(self.instance(sop_instance_uid).path)

    def read_bytes(self, sop_instance_uid: str) -> bytes:
        return self.path(sop_instance_uid).read_bytes()

    def get_dataset(self, sop_instance_uid: str, *, stop_before_pixels: bool = False) -> Dataset:
        return pydicom.dcmread(self.path(sop_instance_uid), stop_before_pixels=stop_before_pixels)

    def frame_source(self, sop_instance_uid: str) -> FrameSource:
        """The frame layout of an instance, cached (a viewer asks for hundreds of frames a second).

        Another process on the same data dir (an HTTP worker, a CLI command) may replace or delete the
        instance; it then removes the blob this entry points to. So an entry older than
        ``LAYOUT_RECHECK_S`` is trusted only while its blob still exists (one stat per instance per
        interval, not per request).
        """
        with self._layout_lock:
            cached = self._layouts.get(sop_instance_uid)
            if cached is not None:
                source, checked = cached
                now = time.monotonic()
                if now - checked < LAYOUT_RECHECK_S:
                    self._layouts.move_to_end(sop_instance_uid)
                    return source
        if cached is not None:
            if os.path.exists(cached[0].path):
                with self._layout_lock:
                    if sop_instance_uid in self._layouts:
                        self._layouts[sop_instance_uid] = (cached[0], now)
                        self._layouts.move_to_end(sop_instance_uid)
                return cached[0]
            with self._layout_lock:
                self._layouts.pop(sop_instance_uid, None)
        with Session(self.engine) as session:
            instance = session.get(Instance, sop_instance_uid)
            if instance is None:
                raise NotFound(f"no instance {sop_instance_uid}")
            table = session.get(FrameTable, sop_instance_uid)
            if table is None:
                raise NotFound(f"instance {sop_instance_uid} has no pixel data")
            session.expunge(instance)
            source = FrameSource(
                path=self.blobs.absolute(instance.path),
                transfer_syntax_uid=instance.transfer_syntax_uid,
                layout=FrameLayout.from_bytes(table.fragments, table.encapsulated),
                instance=instance,
            )
        with self._layout_lock:
            self._layouts[sop_instance_uid] = (source, time.monotonic())
            while len(self._layouts) > 512:
                self._layouts.popitem(last=False)
        return source

    def get_frames(self, sop_instance_uid: str, frame_numbers: Iterable[int]) -> list[bytes]:
        """Frames (1-based) as stored: encoded bytes for compressed syntaxes, raw bytes for native."""
        source = self.frame_source(sop_instance_uid)
        instance = source.instance
        numbers = list(frame_numbers)
        for number in numbers:
            if number < 1 or number > instance.number_of_frames:
                raise NotFound(f"frame {number} out of range 1..{instance.number_of_frames}")
        if not source.layout.encapsulated and source.layout.number_of_frames != instance.number_of_frames:
            return self._unpacked_frames(sop_instance_uid, numbers)
        fd = os.open(source.path, os.O_RDONLY)
        try:
            return [read_frame(fd, source.layout, number) for number in numbers]
        finally:
            os.close(fd)

    def _unpacked_frames(self, sop_instance_uid: str, numbers: list[int]) -> list[bytes]:
        """1-bit frames that are not byte-aligned: unpack once, re-pack each frame on its own."""
        from pydicom.pixels import pack_bits

        ds = self.get_dataset(sop_instance_uid)
        array = ds.pixel_array
        if array.ndim == 2:
            array = array[None]
        return [pack_bits(array[n - 1]) for n in numbers]

    # ---- searching -----------------------------------------------------------------------------------------

    def search(self, level: Level | str, params: Iterable[tuple[str, str]] | Query = ()) -> list[Dataset]:
        """QIDO/C-FIND matching; ``params`` are (keyword or tag, value) pairs or a parsed Query."""
        query = params if isinstance(params, Query) else parse_query(Level(level), params)
        with Session(self.engine) as session:
            return run(session, query)

    def search_json(self, level: Level | str, params: Iterable[tuple[str, str]] | Query = ()) -> list[dict]:
        """As ``search``, answered as DICOM JSON objects (QIDO-RS) without building Datasets."""
        query = params if isinstance(params, Query) else parse_query(Level(level), params)
        with Session(self.engine) as session:
            return run_json(session, query)

    def study_exists(self, study_instance_uid: str) -> bool:
        with Session(self.engine) as session:
            return session.get(Study, study_instance_uid) is not None

    def series_exists(self, series_instance_uid: str) -> bool:
        with Session(self.engine) as session:
            return session.get(Series, series_instance_uid) is not None


def _with_file_meta(ds: Dataset, transfer_syntax_uid: str | None) -> Dataset:
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    sop_uid = check_uid(attributes.text(ds, "SOPInstanceUID"), "SOPInstanceUID")
    sop_class = check_uid(attributes.text(ds, "SOPClassUID"), "SOPClassUID")
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    if transfer_syntax_uid:
        meta.TransferSyntaxUID = transfer_syntax_uid
    elif not meta.get("TransferSyntaxUID"):
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


__all__ = [
    "DuplicatePolicy",
    "FrameSource",
    "Outcome",
    "Store",
    "StoreError",
    "StoredInstance",
]
