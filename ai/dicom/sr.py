"""The differential as a Comprehensive 3D SR, TID 1500 Measurement Report (PS3.16 A.2.1).

Shaped so that Slim draws it (docs/architecture.md §6): subject class Specimen with the slide's specimen
UID and container identifier, and one TID 1410 planar ROI group per analysed region whose Image
Region is SCOORD3D in the slide's Frame of Reference. The differential itself is one TID 1501
image-level group: counts and percentages per class, M:E ratio, totals, critical-cell flags.

Result states (docs/architecture.md §4) map to the SR flags, and to HL7 P / F / C:

- ``preliminary``: CompletionFlag COMPLETE, PreliminaryFlag PRELIMINARY, VerificationFlag
  UNVERIFIED. COMPLETE, because the document holds the whole AI differential (PARTIAL would say
  content is missing); PRELIMINARY/UNVERIFIED, because nobody has reviewed it yet.
- ``final``: COMPLETE, FINAL, VERIFIED, with the signer in the Verifying Observer Sequence and as
  the person observer. No predecessor: a final report is made from the reviewed cells, not from the
  preliminary document, which stays in the study as what the AI said.
- ``corrected``: like final, plus Predecessor Documents Sequence → the report it supersedes. A
  correction is always a new instance; nothing is overwritten.

So the state is read back from the flags alone: PRELIMINARY → preliminary, VERIFIED without a
predecessor → final, VERIFIED with one → corrected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as sr_codes

from acquisition import CLASS_CODES, CRITICAL_CODES, ERYTHROID_CODES, NOT_CLASSED_CODES
from acquisition.wsi import LevelGeometry
from ai.catalogue import UNIDENTIFIED
from ai.dicom import codes
from ai.dicom.common import MANUFACTURER, describe, device_uid
from ai.dicom.regions import AlgorithmInfo, AnalysisRegion, SeriesSlot, VerifyingObserver
from ai.results import Differential

Status = Literal["preliminary", "final", "corrected"]
STATUSES: tuple[str, ...] = ("preliminary", "final", "corrected")


def write_differential_report(
    *,
    source: Dataset,
    seg: Dataset | None,
    ann: Dataset | None,
    differential: Differential,
    algorithm: AlgorithmInfo,
    regions: Sequence[AnalysisRegion],
    series: SeriesSlot,
    status: Status = "preliminary",
    verifying_observer: VerifyingObserver | None = None,
    predecessor: Dataset | None = None,
    evidence: Sequence[Dataset] = (),
    institution_name: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Write the differential as a TID 1500 Comprehensive 3D SR.

    Parameters
    ----------
    source: pydicom.Dataset
        The 40x VL Whole Slide Microscopy instance the regions are in: subject (specimen), Frame of
        Reference and evidence.
    seg, ann: pydicom.Dataset or None
        The cell SEG and cell ANN of the same run, referenced as evidence (None when the run found
        no cell, as then neither object can exist).
    differential: ai.results.Differential
        Counts, percentages, M:E ratio, totals and critical counts to report.
    algorithm: AlgorithmInfo
        The classification algorithm: device observer and Algorithm Identification (TID 4019).
    regions: Sequence[AnalysisRegion]
        The analysed rectangles: one planar ROI group (SCOORD3D polygon, cell count) each.
    series: SeriesSlot
        UID root, series and instance number of the new object.
    status: {"preliminary", "final", "corrected"}
        Result state; see the module docstring for the flags each one sets.
    verifying_observer: VerifyingObserver, optional
        The signer; required for "final" and "corrected", refused for "preliminary".
    predecessor: pydicom.Dataset, optional
        The SR this one supersedes; required for "corrected", refused otherwise.
    evidence: Sequence[pydicom.Dataset]
        Further instances to reference (e.g. the AOI annotations, the overview).
    institution_name: str, optional
        Institution Name.
    """
    _check_status(status, verifying_observer, predecessor)
    geometry = LevelGeometry.of(source)
    geometry.check_inside([(r.column, r.row, r.width, r.height) for r in regions], "region")
    identification = hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"{k}={v}" for k, v in algorithm.parameter_items().items()],
    )
    source_image = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
    groups: list[hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]
    groups = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=series.new_uid(), identifier="Differential"),
            finding_type=codes.DIFFERENTIAL,
            algorithm_id=identification,
            measurements=_differential_measurements(differential),
            qualitative_evaluations=_critical_flags(differential),
            source_images=[source_image],
        )
    ]
    for index, region in enumerate(regions, start=1):
        ring = geometry.image_to_slide(region.corners())
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=series.new_uid(), identifier=f"Region {index}"),
                # SR POLYGONs are closed explicitly (unlike ANN): the first point ends the ring.
                referenced_region=hd.sr.ImageRegion3D(
                    graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
                    graphic_data=np.vstack([ring, ring[:1]]),
                    frame_of_reference_uid=geometry.frame_of_reference_uid,
                ),
                finding_type=codes.ANALYSED_REGION,
                algorithm_id=identification,
                measurements=[hd.sr.Measurement(codes.REGION_CELL_COUNT, float(len(region.detections)), codes.CELLS)],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(source, algorithm, series.uid_root, verifying_observer),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    verified = status != "preliminary"
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source, *(d for d in (seg, ann) if d is not None), *evidence],
        content=report,
        **series.identity(),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=verified,
        is_verified=verified,
        institution_name=institution_name,
        verifying_observer_name=verifying_observer.name if verifying_observer else None,
        verifying_organization=verifying_observer.organization if verifying_observer else None,
        previous_versions=[predecessor] if predecessor is not None else None,
    )
    describe(sr, f"Cell differential, {status}", series)
    if verified:  # highdicom stamps the host's local clock; the SR's clock is the site's (TimezoneOffsetFromUTC)
        sr.VerifyingObserverSequence[0].VerificationDateTime = series.stamp.date + series.stamp.time
    codes.declare_scheme(sr)
    return sr


def _check_status(status: str, observer: VerifyingObserver | None, predecessor: Dataset | None) -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if status == "preliminary" and observer is not None:
        raise ValueError("a preliminary report has no verifying_observer (nobody signed it)")
    if status != "preliminary" and observer is None:
        raise ValueError(f"a {status} report needs the verifying_observer who signed it")
    if status == "corrected" and predecessor is None:
        raise ValueError("a corrected report needs the predecessor it supersedes")
    if status != "corrected" and predecessor is not None:
        raise ValueError(f"a {status} report has no predecessor; only a correction supersedes")


def _observation_context(
    source: Dataset, algorithm: AlgorithmInfo, uid_root: str, observer: VerifyingObserver | None
) -> hd.sr.ObservationContext:
    device = hd.sr.ObserverContext(
        observer_type=sr_codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(uid_root, algorithm),
            name=algorithm.name,
            manufacturer_name=algorithm.manufacturer,
            model_name=f"{algorithm.name} {algorithm.version}"[:64],
        ),
    )
    person = None
    if observer is not None:
        person = hd.sr.ObserverContext(
            observer_type=sr_codes.cid270.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=observer.name,
                login_name=observer.login or None,
                organization_name=observer.organization,
            ),
        )
    specimen = source.SpecimenDescriptionSequence[0]
    specimen_type = specimen.get("SpecimenTypeCodeSequence")
    subject = hd.sr.SubjectContext(
        subject_class=sr_codes.DCM.Specimen,
        subject_class_specific_context=hd.sr.SubjectContextSpecimen(
            uid=specimen.SpecimenUID,
            identifier=specimen.SpecimenIdentifier,
            container_identifier=source.ContainerIdentifier,
            specimen_type=hd.sr.CodedConcept.from_dataset(specimen_type[0]) if specimen_type else None,
        ),
    )
    return hd.sr.ObservationContext(
        observer_person_context=person, observer_device_context=device, subject_context=subject
    )


def reported_classes(differential: Differential) -> list[str]:
    """Every catalogue class (zeros are results too), then any other code, then the unidentified bin."""
    extra = sorted(set(differential.counts) - set(CLASS_CODES) - {UNIDENTIFIED})
    return [*CLASS_CODES, *extra, UNIDENTIFIED]


def _differential_measurements(differential: Differential) -> list[hd.sr.Measurement]:
    not_classed = {*NOT_CLASSED_CODES, UNIDENTIFIED}
    measurements = []
    for code in reported_classes(differential):
        count = differential.counts.get(code, 0)
        measurements.append(hd.sr.Measurement(codes.class_count(code), float(count), codes.CELLS))
        # Not-classed bins are outside the denominator: a 0 % there would be a false statement.
        if code not in not_classed and differential.total_classed:
            percent = differential.percent.get(code, 0.0)
            measurements.append(hd.sr.Measurement(codes.class_percent(code), round(percent, 4), codes.PERCENT))
    if differential.total_classed:
        erythroid = sum(differential.percent.get(c, 0.0) for c in ERYTHROID_CODES)
        measurements.append(hd.sr.Measurement(codes.ERYTHROID_PERCENT, round(erythroid, 4), codes.PERCENT))
    if differential.me_ratio is not None:
        measurements.append(hd.sr.Measurement(codes.ME_RATIO, round(differential.me_ratio, 4), codes.RATIO))
    measurements.append(hd.sr.Measurement(codes.TOTAL_COUNTED, float(differential.total), codes.CELLS))
    measurements.append(hd.sr.Measurement(codes.TOTAL_CLASSED, float(differential.total_classed), codes.CELLS))
    return measurements


def _critical_flags(differential: Differential) -> list[hd.sr.QualitativeEvaluation]:
    critical = {code: differential.critical.get(code, differential.counts.get(code, 0)) for code in CRITICAL_CODES}
    flags = [
        hd.sr.QualitativeEvaluation(codes.CRITICAL_CELLS, codes.PRESENT if any(critical.values()) else codes.ABSENT)
    ]
    for code, count in critical.items():
        flags.append(hd.sr.QualitativeEvaluation(codes.cell_class(code), codes.PRESENT if count else codes.ABSENT))
    return flags


def read_differential_report(ds: Dataset) -> dict:
    """Parse a report written by `write_differential_report` back into plain values.

    Parameters
    ----------
    ds: pydicom.Dataset
        A Comprehensive 3D SR with a TID 1500 Measurement Report.

    Returns
    -------
    dict
        ``status`` ("preliminary" | "final" | "corrected"), ``counts`` and ``percent`` per class
        code, ``total``, ``total_classed``, ``me_ratio`` (None when absent), ``erythroid_percent``,
        ``critical`` (class code → bool), ``critical_present``, ``algorithm`` (name, version,
        parameters), ``regions`` (tracking id, (N, 3) slide points, frame of reference, cell count),
        ``specimen`` (uid, identifier, container identifier), ``verifying_observer``,
        ``predecessors`` and ``evidence`` (SOP Instance UIDs).
    """
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise ValueError("not a TID 1500 Measurement Report")
    groups = report.get_image_measurement_groups(finding_type=codes.DIFFERENTIAL)
    if len(groups) != 1:
        raise ValueError(f"expected one differential measurement group, found {len(groups)}")
    group = groups[0]
    result: dict = {
        "status": _status(ds),
        "counts": {},
        "percent": {},
        "total": None,
        "total_classed": None,
        "me_ratio": None,
        "erythroid_percent": None,
        "critical": {},
        "critical_present": None,
    }
    percent_by_loinc = {value: key for key, value in codes.PERCENT_LOINC.items()}
    for measurement in group.get_measurements():
        name = measurement.name
        if name == codes.TOTAL_COUNTED:
            result["total"] = int(measurement.value)
        elif name == codes.TOTAL_CLASSED:
            result["total_classed"] = int(measurement.value)
        elif name == codes.ME_RATIO:
            result["me_ratio"] = float(measurement.value)
        elif name == codes.ERYTHROID_PERCENT:
            result["erythroid_percent"] = float(measurement.value)
        elif name.scheme_designator == "LN" and name.value in percent_by_loinc:
            result["percent"][percent_by_loinc[name.value]] = float(measurement.value)
        elif name.scheme_designator == codes.SCHEME and name.value[:2] in ("N-", "P-"):
            key = "counts" if name.value.startswith("N-") else "percent"
            value = measurement.value
            result[key][name.value[2:]] = int(value) if key == "counts" else float(value)
    for evaluation in group.get_qualitative_evaluations():
        present = evaluation.value == codes.PRESENT
        if evaluation.name == codes.CRITICAL_CELLS:
            result["critical_present"] = present
        elif evaluation.name.scheme_designator == codes.SCHEME:
            result["critical"][evaluation.name.value] = present
    result["algorithm"] = _algorithm(group)
    result["regions"] = [
        {
            "tracking_id": str(roi_group.tracking_identifier),
            "points": np.asarray(roi_group.roi.value, dtype=np.float64),
            "frame_of_reference_uid": roi_group.roi.frame_of_reference_uid,
            "cell_count": next(int(m.value) for m in roi_group.get_measurements(name=codes.REGION_CELL_COUNT)),
        }
        for roi_group in report.get_planar_roi_measurement_groups()
    ]
    result["specimen"] = _specimen(ds)
    observers = ds.get("VerifyingObserverSequence", [])
    result["verifying_observer"] = str(observers[0].VerifyingObserverName) if observers else None
    result["predecessors"] = _references(ds.get("PredecessorDocumentsSequence", []))
    result["evidence"] = _references(ds.get("CurrentRequestedProcedureEvidenceSequence", []))
    return result


def _status(ds: Dataset) -> str:
    if ds.get("PreliminaryFlag") == "PRELIMINARY" or ds.get("VerificationFlag") != "VERIFIED":
        return "preliminary"
    return "corrected" if ds.get("PredecessorDocumentsSequence") else "final"


def _items(sequence: Sequence[Dataset]):  # type: ignore[no-untyped-def]
    """Every content item under `sequence`, depth first."""
    for item in sequence:
        yield item
        yield from _items(item.get("ContentSequence", []))


def _concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return f"{names[0].CodingSchemeDesignator}:{names[0].CodeValue}" if names else ""


def _algorithm(group: Sequence[Dataset]) -> dict:
    """TID 4019 items of the group: DCM 111001 name, 111003 version, 111002 parameters."""
    algorithm: dict = {"name": None, "version": None, "parameters": {}}
    for item in _items(group):
        concept = _concept(item)
        if concept == "DCM:111001":
            algorithm["name"] = item.TextValue
        elif concept == "DCM:111003":
            algorithm["version"] = item.TextValue
        elif concept == "DCM:111002":
            key, _, value = item.TextValue.partition("=")
            algorithm["parameters"][key] = value
    return algorithm


def _specimen(ds: Dataset) -> dict:
    """TID 1009 subject context: DCM 121039 Specimen UID, 121041 Identifier, 111700 Container."""
    wanted = {"DCM:121039": "uid", "DCM:121041": "identifier", "DCM:111700": "container_identifier"}
    specimen: dict = dict.fromkeys(wanted.values())
    for item in ds.get("ContentSequence", []):
        key = wanted.get(_concept(item))
        if key:
            specimen[key] = item.get("UID") or item.get("TextValue")
    return specimen


def _references(sequence: Sequence[Dataset]) -> list[str]:
    return [
        instance.ReferencedSOPInstanceUID
        for study in sequence
        for series in study.get("ReferencedSeriesSequence", [])
        for instance in series.get("ReferencedSOPSequence", [])
    ]
