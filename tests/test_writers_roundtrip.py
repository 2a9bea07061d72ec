"""highdicom reads every result object back, and what it reads agrees with the input and the slide."""

from __future__ import annotations

from collections import Counter

import highdicom as hd
import numpy as np
import pytest
from pydicom.uid import VLWholeSlideMicroscopyImageStorage

from acquisition.wsi import LevelGeometry
from ai.catalogue import UNIDENTIFIED
from ai.dicom import read_differential_report
from ai.dicom.seg import cell_masks
from tests.test_writers_support import SIGNER, results, scan


def _cell_counts() -> Counter:
    return Counter(c.cell_class or UNIDENTIFIED for r in scan().regions for c in r.detections.cells)


def test_seg_is_a_sparse_level_of_the_slide() -> None:
    s, seg = scan(), hd.seg.Segmentation.from_dataset(results().seg)
    source = s.sparse
    assert seg.SegmentationType == "BINARY"
    assert seg.DimensionOrganizationType == "TILED_SPARSE"
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ContainerIdentifier == source.ContainerIdentifier
    assert (seg.TotalPixelMatrixRows, seg.TotalPixelMatrixColumns) == (
        source.TotalPixelMatrixRows,
        source.TotalPixelMatrixColumns,
    )
    origin, source_origin = seg.TotalPixelMatrixOriginSequence[0], source.TotalPixelMatrixOriginSequence[0]
    assert float(origin.XOffsetInSlideCoordinateSystem) == pytest.approx(source_origin.XOffsetInSlideCoordinateSystem)
    assert float(origin.YOffsetInSlideCoordinateSystem) == pytest.approx(source_origin.YOffsetInSlideCoordinateSystem)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )
    assert "research use only" in seg.SeriesDescription
    description = seg.get_segment_description(1)
    assert description.segmented_property_type == hd.sr.CodedConcept("4421005", "SCT", "Cell")
    assert description.algorithm_identification[0].AlgorithmName == "marrowlink-unet16"


def test_seg_frames_sit_on_the_wsi_tile_grid_and_hold_the_cells() -> None:
    s, seg = scan(), results().seg
    source_positions = {
        (p.PlanePositionSlideSequence[0].ColumnPositionInTotalImagePixelMatrix,
         p.PlanePositionSlideSequence[0].RowPositionInTotalImagePixelMatrix): p.PlanePositionSlideSequence[0]
        for p in s.sparse.PerFrameFunctionalGroupsSequence
    }  # fmt: skip
    expected = cell_masks(s.regions, LevelGeometry.of(s.sparse))
    frames = seg.pixel_array if seg.pixel_array.ndim == 3 else seg.pixel_array[None]
    assert len(frames) == len(expected) > 0
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        position = group.PlanePositionSlideSequence[0]
        column = position.ColumnPositionInTotalImagePixelMatrix
        row = position.RowPositionInTotalImagePixelMatrix
        assert (column - 1) % 256 == 0 and (row - 1) % 256 == 0
        # Every SEG frame is a tile the WSI has, at the WSI's own slide offsets.
        twin = source_positions[(column, row)]
        assert float(position.XOffsetInSlideCoordinateSystem) == pytest.approx(twin.XOffsetInSlideCoordinateSystem)
        assert float(position.YOffsetInSlideCoordinateSystem) == pytest.approx(twin.YOffsetInSlideCoordinateSystem)
        assert np.array_equal(frame, expected[((row - 1) // 256, (column - 1) // 256)])
    # Independently of cell_masks: every cell's centre pixel is set in the frame that holds it.
    by_tile = {((g.PlanePositionSlideSequence[0].RowPositionInTotalImagePixelMatrix - 1) // 256,
                (g.PlanePositionSlideSequence[0].ColumnPositionInTotalImagePixelMatrix - 1) // 256): f
               for f, g in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True)}  # fmt: skip
    for region in s.regions:
        for cell in region.detections.cells:
            x, y = np.round(cell.polygon.mean(axis=0)).astype(int)
            x, y = x + region.column, y + region.row
            assert by_tile[(y // 256, x // 256)][y % 256, x % 256] == 1


def test_ann_groups_are_the_cell_classes_with_their_measurements() -> None:
    s, ann = scan(), hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(results().ann)
    assert ann.AnnotationCoordinateType == "3D"
    assert ann.FrameOfReferenceUID == s.sparse.FrameOfReferenceUID
    assert ann.ReferencedSeriesSequence[0].SeriesInstanceUID == s.sparse.SeriesInstanceUID
    assert ann.ReferencedImageSequence[0].ReferencedSOPInstanceUID == s.sparse.SOPInstanceUID
    assert ann.ReferencedImageSequence[0].ReferencedSOPClassUID == VLWholeSlideMicroscopyImageStorage
    assert [i.CodingSchemeDesignator for i in ann.CodingSchemeIdentificationSequence] == ["MARROWLINK"]
    sizes = {}
    for group in ann.get_annotation_groups():
        assert group.graphic_type == hd.ann.GraphicTypeValues.POLYGON
        assert group.annotated_property_category == hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")
        assert group.annotated_property_type.scheme_designator == "MARROWLINK"
        assert group.annotated_property_type.value == group.label
        assert group.algorithm_type == hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC
        assert "RecommendedDisplayCIELabValue" in group
        names, values, units = group.get_measurements()
        assert [n.value for n in names] == ["42798000", "CLSPROB"]
        assert [u.value for u in units] == ["um2", "1"]
        # A 100 x 96 px ellipse at 0.086 µm/px is about 60 µm²: areas are in µm², not pixels or mm².
        assert np.all((values[:, 0] > 30) & (values[:, 0] < 120))
        assert np.all((values[:, 1] > 0) & (values[:, 1] <= 1))
        sizes[group.label] = group.number_of_annotations
    assert sizes == dict(_cell_counts())
    assert UNIDENTIFIED in sizes


def test_ann_polygons_are_open_and_inside_their_regions() -> None:
    s, ann = scan(), hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(results().ann)
    geometry = LevelGeometry.of(s.sparse)
    rectangles = [(r.column, r.row, r.column + r.width, r.row + r.height) for r in s.regions]
    expected = {tuple(np.round(p.mean(axis=0), 2)) for r in s.regions for p in r.cell_polygons(geometry.pixel_size_um)}
    seen = set()
    for group in ann.get_annotation_groups():
        for graphic in group.get_graphic_data(coordinate_type="3D"):
            assert graphic.shape[1] == 3 and graphic.shape[0] >= 3
            assert not np.allclose(graphic[0], graphic[-1]), "POLYGON must not repeat its first point"
            pixels = geometry.slide_to_image(graphic)
            assert any(
                np.all((pixels[:, 0] >= c0 - 1e-3) & (pixels[:, 0] <= c1 + 1e-3))
                and np.all((pixels[:, 1] >= r0 - 1e-3) & (pixels[:, 1] <= r1 + 1e-3))
                for c0, r0, c1, r1 in rectangles
            )
            seen.add(tuple(np.round(pixels.mean(axis=0), 2)))
    assert seen == expected


def test_ann_cells_map_to_the_slide_like_the_wsi_frames_do() -> None:
    """A vertex on a tile's top-left pixel centre lands on that frame's Plane Position (Slide)."""
    s = scan()
    geometry = LevelGeometry.of(s.sparse)
    for group in s.sparse.PerFrameFunctionalGroupsSequence[:5]:
        position = group.PlanePositionSlideSequence[0]
        column = position.ColumnPositionInTotalImagePixelMatrix - 1
        row = position.RowPositionInTotalImagePixelMatrix - 1
        x, y, _ = geometry.image_to_slide(np.array([[column + 0.5, row + 0.5]]))[0]
        assert x == pytest.approx(position.XOffsetInSlideCoordinateSystem, abs=1e-6)
        assert y == pytest.approx(position.YOffsetInSlideCoordinateSystem, abs=1e-6)


def test_aoi_groups_are_quality_classes_of_rectangles() -> None:
    s, aoi = scan(), hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(results().aoi)
    assert aoi.FrameOfReferenceUID == s.sparse.FrameOfReferenceUID
    assert aoi.ReferencedImageSequence[0].ReferencedSOPInstanceUID == s.overview.SOPInstanceUID
    geometry = LevelGeometry.of(s.overview)
    by_class = Counter(t.quality_class for t in s.tiles)
    for group in aoi.get_annotation_groups():
        assert group.annotated_property_type.value == f"Q-{group.label.upper()}"
        graphics = group.get_graphic_data(coordinate_type="3D")
        assert len(graphics) == by_class[group.label]
        for graphic in graphics:
            assert graphic.shape == (4, 3)
            pixels = geometry.slide_to_image(graphic)
            assert np.allclose(pixels - pixels.min(axis=0), [[0, 0], [128, 0], [128, 128], [0, 128]], atol=1e-3)
        names, values, units = group.get_measurements()
        assert names[0].value == "AOISCORE" and units[0].value == "1"
        assert values.shape == (by_class[group.label], 1)


def test_sr_counts_equal_the_annotation_groups() -> None:
    report = read_differential_report(results().preliminary)
    ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(results().ann)
    sizes = {g.label: g.number_of_annotations for g in ann.get_annotation_groups()}
    assert {k: v for k, v in report["counts"].items() if v} == sizes
    differential = scan().differential
    assert report["total"] == differential.total == sum(sizes.values())
    assert report["total_classed"] == differential.total_classed
    assert report["me_ratio"] == pytest.approx(differential.me_ratio, abs=1e-4)
    for code, percent in report["percent"].items():
        assert percent == pytest.approx(differential.percent[code], abs=1e-4)
    # Not-classed bins are counted but get no percentage (they are outside the denominator).
    assert {"KSC", "NIF", UNIDENTIFIED} <= set(report["counts"]) and not {"KSC", "NIF", UNIDENTIFIED} & set(
        report["percent"]
    )
    assert sum(report["percent"].values()) == pytest.approx(100.0, abs=0.01)
    assert report["critical"] == {code: bool(n) for code, n in differential.critical.items()}
    assert report["critical_present"] is True
    assert report["algorithm"]["name"] == "marrowlink-xception"
    assert report["algorithm"]["parameters"]["weights_sha256"] == "b" * 64


def test_sr_has_specimen_subject_and_scoord3d_regions() -> None:
    s, ds = scan(), results().preliminary
    report = read_differential_report(ds)
    specimen = s.sparse.SpecimenDescriptionSequence[0]
    assert report["specimen"] == {
        "uid": specimen.SpecimenUID,
        "identifier": specimen.SpecimenIdentifier,
        "container_identifier": s.sparse.ContainerIdentifier,
    }
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    subject = sr.content.get_subject_contexts()[0]
    assert subject.subject_class == hd.sr.CodedConcept("121027", "DCM", "Specimen")
    geometry = LevelGeometry.of(s.sparse)
    assert len(report["regions"]) == len(s.regions)
    for region, read in zip(s.regions, report["regions"], strict=True):
        assert read["frame_of_reference_uid"] == s.sparse.FrameOfReferenceUID
        assert read["cell_count"] == len(region.detections)
        points = read["points"]
        assert np.allclose(points[0], points[-1])  # SR POLYGONs, unlike ANN's, are closed
        assert np.allclose(geometry.slide_to_image(points[:-1]), region.corners(), atol=1e-2)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert all(g.reference_type == hd.sr.CodedConcept("111030", "DCM", "Image Region") for g in groups)
    assert all(g.roi.value_type == hd.sr.ValueTypeValues.SCOORD3D for g in groups)


def test_sr_references_wsi_seg_and_ann_as_evidence() -> None:
    r, s = results(), scan()
    evidence = read_differential_report(r.preliminary)["evidence"]
    wanted = {s.sparse.SOPInstanceUID, s.overview.SOPInstanceUID, r.seg.SOPInstanceUID, r.ann.SOPInstanceUID}
    assert set(evidence) == wanted | {r.aoi.SOPInstanceUID}


def test_result_states_map_to_sr_flags() -> None:
    r = results()
    flags = [(d.CompletionFlag, d.PreliminaryFlag, d.VerificationFlag) for d in (r.preliminary, r.final, r.corrected)]
    assert flags == [
        ("COMPLETE", "PRELIMINARY", "UNVERIFIED"),
        ("COMPLETE", "FINAL", "VERIFIED"),
        ("COMPLETE", "FINAL", "VERIFIED"),
    ]
    preliminary, final, corrected = (read_differential_report(d) for d in (r.preliminary, r.final, r.corrected))
    assert [x["status"] for x in (preliminary, final, corrected)] == ["preliminary", "final", "corrected"]
    assert preliminary["verifying_observer"] is None and final["verifying_observer"] == SIGNER.name
    assert final["predecessors"] == [] and corrected["predecessors"] == [r.final.SOPInstanceUID]
    assert corrected["counts"]["BLA"] == final["counts"]["BLA"] + final["counts"]["MYB"]
    assert corrected["counts"]["MYB"] == 0
    observers = hd.sr.Comprehensive3DSR.from_dataset(r.final).content.get_observer_contexts()
    assert {o.observer_type.value for o in observers} == {"121006", "121007"}  # person and device
    assert all("research use only" in d.SeriesDescription for d in (r.preliminary, r.final, r.corrected))


def test_all_results_belong_to_the_slide_study_and_specimen() -> None:
    """IHE PaLM: AI results carry the slide's Study, Frame of Reference and Container Identifier."""
    s, r = scan(), results()
    for ds in (r.seg, r.ann, r.aoi, r.preliminary, r.final, r.corrected):
        assert ds.StudyInstanceUID == s.sparse.StudyInstanceUID
        assert ds.AccessionNumber == s.sparse.AccessionNumber
        assert ds.PatientID == s.sparse.PatientID
        assert ds.SeriesInstanceUID != s.sparse.SeriesInstanceUID
    for ds in (r.seg, r.ann, r.aoi):
        assert ds.FrameOfReferenceUID == s.sparse.FrameOfReferenceUID
        assert ds.ContainerIdentifier == s.sparse.ContainerIdentifier
    assert r.preliminary.ContentTemplateSequence[0].TemplateIdentifier == "1500"
