"""Test instances built from scratch: small secondary-capture images and a multi-frame JPEG WSI level.

Tests build their own DICOM rather than shipping opaque files, so what each test sends is visible.
"""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    VLWholeSlideMicroscopyImageStorage,
    generate_uid,
)

ROOT = "1.2.826.0.1.3680043.8.498."


def _patient_study(ds: Dataset, *, study_uid: str, patient_name: str, patient_id: str, accession: str) -> None:
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20261125"
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.ReferringPhysicianName = "REF^DOC"
    ds.StudyDescription = "Bone marrow smear"


def _file_meta(ds: Dataset, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


def secondary_capture(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    patient_name: str = "DOE^JANE",
    patient_id: str = "P001",
    accession: str = "ACC001",
    modality: str = "OT",
    instance_number: int = 1,
    size: int = 16,
    seed: int = 0,
) -> Dataset:
    """A tiny uncompressed 8-bit greyscale Secondary Capture image."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid(ROOT)
    _patient_study(
        ds,
        study_uid=study_uid or generate_uid(ROOT),
        patient_name=patient_name,
        patient_id=patient_id,
        accession=accession,
    )
    ds.SeriesInstanceUID = series_uid or generate_uid(ROOT)
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8).tobytes()
    _file_meta(ds, ExplicitVRLittleEndian)
    return ds


def wsi_level(
    *,
    frames: int = 12,
    tile: int = 256,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_name: str = "DOE^JANE",
    patient_id: str = "P001",
    accession: str = "ACC001",
    seed: int = 0,
) -> tuple[Dataset, list[bytes]]:
    """A TILED_FULL VL Whole Slide Microscopy level with JPEG baseline frames; returns (dataset, frames)."""
    rng = np.random.default_rng(seed)
    columns_in_tiles = max(1, int(np.ceil(np.sqrt(frames))))
    rows_in_tiles = int(np.ceil(frames / columns_in_tiles))
    encoded = []
    for index in range(frames):
        pixels = np.full((tile, tile, 3), (230, 200, 210), dtype=np.uint8)
        pixels[rng.integers(0, tile, 200), rng.integers(0, tile, 200)] = (120, 40, 140)
        pixels[:8, :8] = index % 256
        encoded.append(imagecodecs.jpeg8_encode(pixels, level=90))
    ds = Dataset()
    ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.SOPInstanceUID = generate_uid(ROOT)
    _patient_study(
        ds,
        study_uid=study_uid or generate_uid(ROOT),
        patient_name=patient_name,
        patient_id=patient_id,
        accession=accession,
    )
    ds.SeriesInstanceUID = series_uid or generate_uid(ROOT)
    ds.Modality = "SM"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.FrameOfReferenceUID = generate_uid(ROOT)
    ds.ContainerIdentifier = "SLIDE-0001"
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns = columns_in_tiles * tile
    ds.TotalPixelMatrixRows = rows_in_tiles * tile
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows = ds.Columns = tile
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    _file_meta(ds, JPEGBaseline8Bit)
    return ds, encoded


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path
