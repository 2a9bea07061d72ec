"""Writers of marrowlink's AI results as standard DICOM: SEG, Bulk Annotations and TID 1500 SR.

They live beside the networks that produce the results (the archive only stores them). Each writer
takes the source WSI's dataset and the typed results and returns a highdicom object, built to the rules
real viewers enforce (docs/conformance.md, "What viewers require"): every object is in the slide's
Frame of Reference, references the source WSI and says it is AI output for research use only.
"""

from ai.dicom.ann import write_aoi_annotations, write_cell_annotations
from ai.dicom.regions import AlgorithmInfo, AnalysisRegion, AoiTile, SeriesSlot, VerifyingObserver
from ai.dicom.seg import write_cell_segmentation
from ai.dicom.sr import read_differential_report, write_differential_report

__all__ = [
    "AlgorithmInfo",
    "AnalysisRegion",
    "AoiTile",
    "SeriesSlot",
    "VerifyingObserver",
    "read_differential_report",
    "write_aoi_annotations",
    "write_cell_annotations",
    "write_cell_segmentation",
    "write_differential_report",
]
