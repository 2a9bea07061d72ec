"""Writers of marrowlink's AI results as standard DICOM: SEG, Bulk Annotations and TID 1500 SR.

Built with highdicom to the rules real viewers enforce (../shared/reference/dicom_viewers.md): every
object is in the slide's Frame of Reference, references the source WSI and says it is AI output for
research use only.
"""

from dicom_store.writers.ann import write_aoi_annotations, write_cell_annotations
from dicom_store.writers.regions import AlgorithmInfo, AnalysisRegion, AoiTile, VerifyingObserver
from dicom_store.writers.seg import write_cell_segmentation
from dicom_store.writers.sr import read_differential_report, write_differential_report

__all__ = [
    "AlgorithmInfo",
    "AnalysisRegion",
    "AoiTile",
    "VerifyingObserver",
    "read_differential_report",
    "write_aoi_annotations",
    "write_cell_annotations",
    "write_cell_segmentation",
    "write_differential_report",
]
