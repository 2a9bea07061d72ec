"""What every AI result object of marrowlink says about itself, in one place."""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ai.dicom.regions import AlgorithmInfo, SeriesSlot

RESEARCH_NOTICE = "AI (research use only)"
MANUFACTURER = "marrowlink"
MODEL_NAME = "marrowlink"


def algorithm_identification(algorithm: AlgorithmInfo) -> hd.AlgorithmIdentificationSequence:
    """Algorithm Identification Sequence of SEG/ANN: family AI (CID 7162), parameters incl. weights hash."""
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version,
        source=algorithm.manufacturer,
        parameters=algorithm.parameter_items(),
    )


def device_uid(uid_root: str, algorithm: AlgorithmInfo) -> str:
    """A UID for the algorithm as a device, the same for every run of the same weights.

    Derived from the weights hash so that a reader can group results by the exact model that made
    them (IHE AIR's "algorithm identity"), under the site's UID root.
    """
    return generate_uid(uid_root, entropy_srcs=[algorithm.name, algorithm.version, algorithm.weights_sha256])


def describe(ds: Dataset, what: str, series: SeriesSlot) -> None:
    """Say on the object what it is and that it is research output (every user-facing output says so).

    Series Description is what worklists and viewers list; SEG and ANN also show their Content
    Description, so it says the same.
    """
    ds.SeriesDescription = f"{what} - {RESEARCH_NOTICE}"[:64]
    # Content/Series Date and Time are on the site's clock; the offset says which clock that is.
    ds.TimezoneOffsetFromUTC = series.stamp.offset
    if "ContentDescription" in ds:
        ds.ContentDescription = ds.SeriesDescription
