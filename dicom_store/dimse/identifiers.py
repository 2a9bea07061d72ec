"""C-FIND / C-MOVE / C-GET identifiers ↔ the Store's query model (PS3.4 Annex C).

The Store already matches queries (``dicom_store.query``, shared with QIDO-RS); this module only
translates: which level and information model a request asks for, which instances a retrieve
identifier names, and which attributes a C-FIND response may carry (PS3.4 C.4.1.1.3.2: the keys the
request asked for, plus the unique keys).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from copy import deepcopy

from pydicom.dataset import Dataset

from dicom_store.dimse.contexts import PATIENT_ROOT
from dicom_store.models import Instance
from dicom_store.query import INSTANCE_EXTRAS, Level, UnsupportedQuery, to_query
from dicom_store.store import Store

#: The unique key of each level (PS3.4 C.6.1.1 / C.6.2.1).
UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}
_LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
#: Elements that describe the request rather than match anything.
_CONTROL_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}


class IdentifierError(ValueError):
    """The identifier cannot be served: answered with 0xA900 and the message as Error Comment."""

    status = 0xA900


def request_level(identifier: Dataset, sop_class_uid: str) -> Level:
    """The Query/Retrieve Level, checked against the information model of the SOP class."""
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(raw)
    except ValueError as exc:
        raise IdentifierError(f"QueryRetrieveLevel {raw!r} is not PATIENT/STUDY/SERIES/IMAGE") from exc
    if level == Level.PATIENT and sop_class_uid not in PATIENT_ROOT:
        raise IdentifierError("PATIENT level needs the Patient Root information model")
    return level


def _unique_keys_down_to(level: Level, sop_class_uid: str) -> list[str]:
    """Unique keys of this level and the levels above it in the model (returned with every match)."""
    top = 0 if sop_class_uid in PATIENT_ROOT else 1
    return [UNIQUE_KEYS[lv] for lv in _LEVEL_ORDER[top : _LEVEL_ORDER.index(level) + 1]]


def find(
    store: Store, level: Level, identifier: Dataset, sop_class_uid: str, ae_title: str
) -> tuple[bool, Iterator[Dataset]]:
    """Run a C-FIND; returns (all match keys were supported, response identifiers).

    The first value chooses the Pending status: 0xFF01 warns the SCU that some optional keys were
    treated as universal matches (PS3.4 C.4.1.1.4).
    """
    try:
        query = to_query(level, identifier)
        query.include |= {element.keyword for element in identifier if element.keyword in INSTANCE_EXTRAS}
        results = store.search(level, query)
    except UnsupportedQuery as exc:
        raise IdentifierError(str(exc)) from exc
    if level == Level.PATIENT:
        results = _patients(results)
    unique = _unique_keys_down_to(level, sop_class_uid)
    return not query.ignored, (_response(result, identifier, level, unique, ae_title) for result in results)


def _patients(studies: Sequence[Dataset]) -> list[Dataset]:
    """Study matches folded into one answer per Patient ID (the index keeps patients on studies)."""
    patients: dict[str, Dataset] = {}
    for study in studies:
        key = str(study.get("PatientID", ""))
        patient = patients.get(key)
        if patient is None:
            patient = Dataset()
            for keyword in ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
                if keyword in study:
                    patient[keyword] = deepcopy(study[keyword])
            patient.NumberOfPatientRelatedStudies = 0
            patient.NumberOfPatientRelatedSeries = 0
            patient.NumberOfPatientRelatedInstances = 0
            patients[key] = patient
        patient.NumberOfPatientRelatedStudies += 1
        patient.NumberOfPatientRelatedSeries += int(study.get("NumberOfStudyRelatedSeries", 0) or 0)
        patient.NumberOfPatientRelatedInstances += int(study.get("NumberOfStudyRelatedInstances", 0) or 0)
    return list(patients.values())


def _response(result: Dataset, identifier: Dataset, level: Level, unique: list[str], ae_title: str) -> Dataset:
    response = Dataset()
    response.SpecificCharacterSet = result.get("SpecificCharacterSet", "ISO_IR 192")
    response.QueryRetrieveLevel = level.value
    for keyword in unique:
        if keyword in result:
            response[keyword] = deepcopy(result[keyword])
    for element in identifier:
        keyword = element.keyword
        if keyword in _CONTROL_KEYS or element.tag in response:
            continue
        if keyword and keyword in result:
            response[element.tag] = deepcopy(result[element.tag])
        elif keyword == "RetrieveAETitle":
            response.RetrieveAETitle = ae_title
        elif keyword == "InstanceAvailability":
            response.InstanceAvailability = "ONLINE"
        else:
            # Asked for but not held: returned empty (PS3.4 C.2.2.1.2, zero-length value).
            response.add_new(element.tag, element.VR, [] if element.VR == "SQ" else None)
    return response


def retrieve(store: Store, level: Level, identifier: Dataset) -> list[Instance]:
    """The instances a C-MOVE / C-GET identifier names, in series and instance order.

    Only the level's unique key (a single value or a list) selects; an identifier without it would
    otherwise match the whole archive, so it is refused (PS3.4 C.4.2.2.1).
    """
    key = UNIQUE_KEYS[level]
    if not str(identifier.get(key, "") or "").strip():
        raise IdentifierError(f"{level.value} level retrieve needs {key}")
    try:
        uids = [str(ds.SOPInstanceUID) for ds in store.search(Level.IMAGE, to_query(Level.IMAGE, identifier))]
    except UnsupportedQuery as exc:
        raise IdentifierError(str(exc)) from exc
    rows: list[Instance] = []
    for start in range(0, len(uids), 500):
        rows.extend(store.instances(sop_instance_uids=uids[start : start + 500]))
    order = {uid: index for index, uid in enumerate(uids)}
    return sorted(rows, key=lambda row: order[row.sop_instance_uid])
