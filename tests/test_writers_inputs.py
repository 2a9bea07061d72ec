"""The writers refuse inconsistent input at construction, and the codes they use are pinned."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition import CLASS_CODES
from ai.catalogue import UNIDENTIFIED
from ai.dicom import (
    AlgorithmInfo,
    AnalysisRegion,
    AoiTile,
    SeriesSlot,
    VerifyingObserver,
    codes,
    read_differential_report,
    write_cell_annotations,
    write_cell_segmentation,
    write_differential_report,
)
from ai.results import Cell, CellDetections, Differential
from tests.test_writers_support import CLS_ALGORITHM, SIGNER, UID_ROOT, results, scan


def _cell(polygon: list[list[float]]) -> Cell:
    return Cell(polygon=np.array(polygon, np.float32), bbox=(0, 0, 1, 1), area_px=1.0, cell_class="BLA")


def _region(cells: list[Cell], column: int = 0, row: int = 0, size: int = 100) -> AnalysisRegion:
    return AnalysisRegion(column, row, size, size, CellDetections(cells, (size, size), 0.08625))


def test_regions_refuse_closed_or_degenerate_polygons() -> None:
    with pytest.raises(ValueError, match="repeats its first point"):
        _region([_cell([[1, 1], [5, 1], [5, 5], [1, 1]])])
    with pytest.raises(ValueError, match="polygon must be"):
        _region([_cell([[1, 1], [5, 1]])])
    with pytest.raises(ValueError, match="width/height"):
        AnalysisRegion(0, 0, 0, 10, CellDetections([], (10, 0), 0.1))


def test_cells_outside_their_region_or_regions_outside_the_slide_are_refused() -> None:
    source = scan().sparse
    outside = _region([_cell([[1, 1], [150, 1], [150, 5]])])
    with pytest.raises(ValueError, match="leaves the 100x100 region"):
        write_cell_annotations(source, [outside], CLS_ALGORITHM, series=SeriesSlot(UID_ROOT, 1))
    far = _region([_cell([[1, 1], [5, 1], [5, 5]])], column=source.TotalPixelMatrixColumns - 50)
    with pytest.raises(ValueError, match="total pixel matrix"):
        write_cell_annotations(source, [far], CLS_ALGORITHM, series=SeriesSlot(UID_ROOT, 1))
    with pytest.raises(ValueError, match="at least one non-empty frame"):
        write_cell_segmentation(source, [_region([])], CLS_ALGORITHM, series=SeriesSlot(UID_ROOT, 1))
    with pytest.raises(ValueError, match="VL Whole Slide"):
        write_cell_annotations(results().seg, [_region([])], CLS_ALGORITHM, series=SeriesSlot(UID_ROOT, 1))


def test_detections_at_another_scale_are_mapped_to_the_level() -> None:
    """Cells found at half resolution land where the same cells at full resolution do."""
    half = AnalysisRegion(
        512, 512, 200, 200, CellDetections([_cell([[10, 10], [40, 10], [40, 30]])], (100, 100), 0.1725)
    )
    full = AnalysisRegion(
        512, 512, 200, 200, CellDetections([_cell([[20.5, 20.5], [80.5, 20.5], [80.5, 60.5]])], (200, 200), 0.08625)
    )
    assert np.allclose(half.cell_polygons(0.08625)[0], full.cell_polygons(0.08625)[0])


def test_report_states_need_the_right_signatures() -> None:
    s, r = scan(), results()
    common = {
        "source": s.sparse, "seg": None, "ann": None, "differential": s.differential, "algorithm": CLS_ALGORITHM,
        "regions": s.regions, "series": SeriesSlot(UID_ROOT, 1),
    }  # fmt: skip
    with pytest.raises(ValueError, match="needs the verifying_observer"):
        write_differential_report(**common, status="final")
    with pytest.raises(ValueError, match="has no verifying_observer"):
        write_differential_report(**common, verifying_observer=SIGNER)
    with pytest.raises(ValueError, match="needs the predecessor"):
        write_differential_report(**common, status="corrected", verifying_observer=SIGNER)
    with pytest.raises(ValueError, match="has no predecessor"):
        write_differential_report(**common, status="final", verifying_observer=SIGNER, predecessor=r.final)
    with pytest.raises(ValueError, match="status must be"):
        write_differential_report(**common, status="amended")  # type: ignore[arg-type]
    # A run without cells has neither SEG nor ANN, and still gets its report.
    assert write_differential_report(**common).VerificationFlag == "UNVERIFIED"


def test_typed_inputs_validate_themselves() -> None:
    with pytest.raises(ValueError, match="weights_sha256"):
        AlgorithmInfo("x", "1", "not-a-hash")
    with pytest.raises(ValueError, match="quality_class"):
        AoiTile(0, 0, 10, 10, "great", 0.9)
    with pytest.raises(ValueError, match="name and organization"):
        VerifyingObserver("", "Lab")
    assert next(iter(CLS_ALGORITHM.parameter_items())) == "weights_sha256"


def test_loinc_codes_are_the_verified_ones() -> None:
    """Pinned: code and display of the verified list, nothing else."""
    assert codes.LOINC == {
        "11105-4": "Basophils/100 cells in Bone marrow",
        "11106-2": "Eosinophils/100 cells in Bone marrow",
        "11108-8": "Lymphocytes/100 cells in Bone marrow",
        "56960-8": "Segmented neutrophils/100 cells in Bone marrow",
        "40689-2": "Erythroid cells/100 cells in Bone marrow",
        "11138-5": "Myeloid cells/Erythroid cells [Ratio] in Bone marrow",
        "38257-2": "Cells counted total [#] in Bone marrow",
    }
    assert codes.PERCENT_LOINC == {"BAS": "11105-4", "EOS": "11106-2", "LYT": "11108-8", "NGS": "56960-8"}
    assert codes.class_percent("BLA").scheme_designator == "MARROWLINK"  # blasts in BM: unverified LOINC
    with pytest.raises(KeyError):
        codes.loinc("11150-0")


def test_standard_codes_are_in_the_dicom_context_groups_we_cite() -> None:
    from pydicom.sr.codedict import codes as dicom

    assert dicom.cid7150.AnatomicalStructure == codes.ANATOMICAL_STRUCTURE
    assert dicom.cid7150.SpatialAndRelationalConcept == codes.SPATIAL_AND_RELATIONAL_CONCEPT
    assert dicom.cid8135.Cell == codes.CELL
    assert dicom.cid8136.Area == codes.AREA
    assert dicom.cid100.ImagingProcedure == codes.IMAGING_PROCEDURE
    assert dicom.cid241.Present == codes.PRESENT and dicom.cid241.Absent == codes.ABSENT
    assert dicom.cid7181.SquareMicrometer == codes.SQUARE_MICROMETER


def test_local_codes_are_unique_and_fit_dicom() -> None:
    local = codes.all_local_codes()
    assert len({c.value for c in local}) == len(local)
    assert all(c.scheme_designator == "MARROWLINK" and len(c.value) <= 16 and len(c.meaning) <= 64 for c in local)
    assert {codes.cell_class(c).value for c in (*CLASS_CODES, UNIDENTIFIED)} == {*CLASS_CODES, UNIDENTIFIED}


def test_a_run_without_cells_still_reports_zero_counts() -> None:
    s = scan()
    empty = [_region([], column=r.column, row=r.row, size=200) for r in s.regions]
    sr = write_differential_report(
        source=s.sparse,
        seg=None,
        ann=None,
        differential=Differential.from_classes([]),
        algorithm=CLS_ALGORITHM,
        regions=empty,
        series=SeriesSlot(UID_ROOT, 1),
    )
    report = read_differential_report(sr)
    assert report["total"] == 0 and set(report["counts"].values()) == {0}
    assert report["percent"] == {} and report["me_ratio"] is None
    assert report["critical_present"] is False and not any(report["critical"].values())
    assert [region["cell_count"] for region in report["regions"]] == [0, 0, 0]
