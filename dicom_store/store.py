"""The Store API: every other package and protocol stores and reads DICOM through this class.

Write path: bytes land in a temp file, are parsed and validated (identifying UIDs, complete Pixel
Data), fsynced and renamed into the blob store, and only then indexed in one transaction. Anything
that fails before the commit leaves no index row and no blob.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from dicom_store import attributes
from dicom_store.blobs import BlobStore, check_uid
from dicom_store.errors import DuplicateInstance, InvalidInstance, NotFound, OutOfResources, StoreError
from dicom_store.frames import FrameLayout, read_frame, scan_pixel_data
from dicom_store.models import FrameTable, Instance, Series, Study
from dicom_store.query import Level, Query, parse_query, run

log = logging.getLogger(__name__)


class DuplicatePolicy(StrEnum):
    REJECT = "reject"
    REPLACE = "replace"
    KEEP = "keep"


class Outcome(StrEnum):
    STORED = "stored"
    REPLACED = "replaced"
    KEPT_EXISTING = "kept_existing"


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
        self._layouts: OrderedDict[str, FrameSource] = OrderedDict()
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
        """Store a Part-10 file; with ``move`` the file is taken over (it must be on the same filesystem)."""
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
            parsed = self._parse(temp)
            return self._commit(temp, *parsed)
        except BaseException:
            self.blobs.discard(temp)
            raise

    def _parse(self, temp: Path) -> tuple[Dataset, FrameLayout | None]:
        size = temp.stat().st_size
        if size > self.max_instance_bytes:
            raise OutOfResources(f"instance of {size} bytes exceeds the limit of {self.max_instance_bytes}")
        with open(temp, "rb") as fp:
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
        return ds, layout

    def _commit(self, temp: Path, ds: Dataset, layout: FrameLayout | None) -> StoredInstance:
        study_uid, series_uid, sop_uid, sop_class = attributes.identify(ds)
        transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
        existing = self._existing_path(sop_uid)
        if existing is not None and self.duplicate_policy == DuplicatePolicy.REJECT:
            raise DuplicateInstance(
                f"SOP Instance UID {sop_uid} is already stored (duplicate policy: reject)",
                sop_instance_uid=sop_uid,
                sop_class_uid=sop_class,
            )
        if existing is not None and self.duplicate_policy == DuplicatePolicy.KEEP:
            self.blobs.discard(temp)
            return StoredInstance(study_uid, series_uid, sop_uid, sop_class, transfer_syntax, Outcome.KEPT_EXISTING)

        relative = self.blobs.new_relative_path(sop_uid)
        self.blobs.commit_temp(temp, relative)
        try:
            self._index(ds, relative, layout, replace=existing is not None)
        except IntegrityError as exc:
            self.blobs.remove(relative)
            raise DuplicateInstance(
                f"SOP Instance UID {sop_uid} was stored concurrently (duplicate policy: {self.duplicate_policy})",
                sop_instance_uid=sop_uid,
                sop_class_uid=sop_class,
            ) from exc
        except BaseException:
            self.blobs.remove(relative)
            raise
        if existing is not None:
            self.blobs.remove(existing)
            with self._layout_lock:
                self._layouts.pop(sop_uid, None)
        outcome = Outcome.REPLACED if existing is not None else Outcome.STORED
        return StoredInstance(study_uid, series_uid, sop_uid, sop_class, transfer_syntax, outcome)

    def _existing_path(self, sop_uid: str) -> str | None:
        with Session(self.engine) as session:
            return session.scalar(select(Instance.path).where(Instance.sop_instance_uid == sop_uid))

    def _index(self, ds: Dataset, relative: str, layout: FrameLayout | None, *, replace: bool) -> None:
        study_uid, series_uid, sop_uid, sop_class = attributes.identify(ds)
        size = self.blobs.absolute(relative).stat().st_size
        with Session(self.engine) as session, session.begin():
            self._insert_ignore(session, Study, {"study_instance_uid": study_uid, **attributes.study_values(ds)})
            self._insert_ignore(
                session,
                Series,
                {"series_instance_uid": series_uid, "study_instance_uid": study_uid, **attributes.series_values(ds)},
            )
            series_study = session.scalar(
                select(Series.study_instance_uid).where(Series.series_instance_uid == series_uid)
            )
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
            }
            if replace:
                old_frames = session.get(FrameTable, sop_uid)
                if old_frames is not None:
                    session.delete(old_frames)
                row = session.get(Instance, sop_uid)
                if row is None:
                    session.add(Instance(sop_instance_uid=sop_uid, **values))
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
            else:
                session.add(Instance(sop_instance_uid=sop_uid, **values))
            session.flush()
            if layout is not None:
                session.add(
                    FrameTable(sop_instance_uid=sop_uid, encapsulated=layout.encapsulated, fragments=layout.to_bytes())
                )

    @staticmethod
    def _insert_ignore(session: Session, model: type, values: dict) -> None:
        """INSERT … ON CONFLICT DO NOTHING: concurrent stores of one new study must not collide."""
        dialect = session.get_bind().dialect.name
        table = model.__table__  # type: ignore[attr-defined]
        values = {**values, "created_at": datetime.now(UTC)}
        if dialect == "postgresql":
            statement = postgresql.insert(table).values(**values).on_conflict_do_nothing()
        elif dialect == "sqlite":
            statement = sqlite.insert(table).values(**values).on_conflict_do_nothing()
        else:  # pragma: no cover - other databases: check first
            key = next(iter(table.primary_key.columns)).name
            if session.get(model, values[key]) is not None:
                return
            statement = table.insert().values(**values)
        session.execute(statement)

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
        """The frame layout of an instance, cached (a viewer asks for hundreds of frames a second)."""
        with self._layout_lock:
            cached = self._layouts.get(sop_instance_uid)
            if cached is not None:
                self._layouts.move_to_end(sop_instance_uid)
                return cached
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
            self._layouts[sop_instance_uid] = source
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


def read_part10(data: bytes) -> Dataset:
    """Parse bytes as a Part-10 file, raising InvalidInstance with the reason."""
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise InvalidInstance(f"not a DICOM Part-10 file: {exc}") from exc


__all__ = [
    "DuplicatePolicy",
    "FrameSource",
    "Outcome",
    "Store",
    "StoreError",
    "StoredInstance",
]
