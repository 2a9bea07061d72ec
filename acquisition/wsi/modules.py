"""The IOD modules every VL Whole Slide Microscopy instance of a slide shares (PS3.3 A.32.8).

Codes are the ones DICOM's own context groups list (checked against pydicom's CID tables):
SCT 14016003 Bone marrow (CID 644/8134), SCT 258433009 Smear sample (CID 8103), SCT 255803006
May-Grunwald Giemsa stain (CID 8112), SCT 433466003 Microscope slide (CID 8101),
DCM 111744 Brightfield illumination (CID 8123), SCT 414298005 Full Spectrum (CID 8122),
SCT 14766002 Aspiration (CID 8109).
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from pydicom.dataset import Dataset

from acquisition.wsi.context import SlideContext
from acquisition.wsi.geometry import IMAGE_ORIENTATION_SLIDE, PixelGrid


class Code(NamedTuple):
    """A coded concept. Not pydicom's Code: importing pydicom.sr loads all of DICOM's code tables."""

    value: str
    scheme_designator: str
    meaning: str


BONE_MARROW = Code("14016003", "SCT", "Bone marrow")
SMEAR_SAMPLE = Code("258433009", "SCT", "Smear sample")
MGG_STAIN = Code("255803006", "SCT", "May-Grunwald Giemsa stain")
MICROSCOPE_SLIDE = Code("433466003", "SCT", "Microscope slide")
BRIGHTFIELD = Code("111744", "DCM", "Brightfield illumination")
FULL_SPECTRUM = Code("414298005", "SCT", "Full Spectrum")
ASPIRATION = Code("14766002", "SCT", "Aspiration")
# The concepts of a Specimen Preparation Step (TID 8001), spelled as highdicom spells them.
SPECIMEN_IDENTIFIER = Code("121041", "DCM", "Specimen Identifier")
PROCESSING_TYPE = Code("111701", "DCM", "Processing type")
SPECIMEN_COLLECTION = Code("17636008", "SCT", "specimen collection")
STAINING = Code("127790008", "SCT", "Staining")
USING_SUBSTANCE = Code("424361007", "SCT", "Using substance (attribute)")


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


@cache
def srgb_icc_profile() -> bytes:
    """An sRGB ICC profile: colour images need one (Optical Path module, C.8.12.5) and viewers use it."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def patient_study_series(ds: Dataset, context: SlideContext, *, modality: str = "SM") -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = context.patient.name
    ds.PatientID = context.patient.id
    ds.PatientBirthDate = context.patient.birth_date
    ds.PatientSex = context.patient.sex
    ds.StudyInstanceUID = context.study_instance_uid
    when = context.acquired
    ds.StudyDate = when.date
    ds.StudyTime = when.time
    ds.TimezoneOffsetFromUTC = when.offset
    ds.ReferringPhysicianName = context.referring_physician_name
    ds.StudyID = context.study_id
    ds.AccessionNumber = context.accession_number
    ds.StudyDescription = context.study_description
    ds.Modality = modality
    ds.SeriesInstanceUID = context.series_instance_uid
    ds.SeriesNumber = context.series_number
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    ds.SeriesDescription = "Bone marrow smear scan"
    ds.FrameOfReferenceUID = context.frame_of_reference_uid
    ds.PositionReferenceIndicator = "SLIDE_CORNER"


def equipment(ds: Dataset, context: SlideContext) -> None:
    eq = context.equipment
    ds.Manufacturer = eq.manufacturer
    ds.ManufacturerModelName = eq.model_name
    ds.DeviceSerialNumber = eq.device_serial_number
    ds.SoftwareVersions = eq.software_versions
    ds.InstitutionName = ""


def specimen(ds: Dataset, context: SlideContext) -> None:
    """Specimen module: the smear, identified by the slide barcode, stained with MGG."""
    ds.ContainerIdentifier = context.container_identifier
    ds.IssuerOfTheContainerIdentifierSequence = []
    ds.ContainerTypeCodeSequence = [_code_item(MICROSCOPE_SLIDE)]
    identifier = context.container_identifier
    description = Dataset()
    description.PrimaryAnatomicStructureSequence = [_code_item(BONE_MARROW)]
    description.SpecimenIdentifier = identifier
    description.SpecimenUID = context.specimen_uid
    description.IssuerOfTheSpecimenIdentifierSequence = []
    description.SpecimenTypeCodeSequence = [_code_item(SMEAR_SAMPLE)]
    description.SpecimenShortDescription = "Bone marrow aspirate smear, MGG"
    description.SpecimenPreparationSequence = [
        _preparation_step(identifier, [(PROCESSING_TYPE, SPECIMEN_COLLECTION), (SPECIMEN_COLLECTION, ASPIRATION)]),
        _preparation_step(identifier, [(PROCESSING_TYPE, STAINING), (USING_SUBSTANCE, MGG_STAIN)]),
    ]
    ds.SpecimenDescriptionSequence = [description]


def _preparation_step(identifier: str, codes: list[tuple[Code, Code]]) -> Dataset:
    """One Specimen Preparation Step (TID 8001): the specimen's identifier, then coded name/value pairs.

    Built by hand as highdicom's SpecimenPreparationStep builds it (tests compare the two), without
    importing highdicom on the encode path.
    """
    text = Dataset()
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = [_code_item(SPECIMEN_IDENTIFIER)]
    text.TextValue = identifier
    items = [text]
    for name, value in codes:
        item = Dataset()
        item.ValueType = "CODE"
        item.ConceptNameCodeSequence = [_code_item(name)]
        item.ConceptCodeSequence = [_code_item(value)]
        items.append(item)
    step = Dataset()
    step.SpecimenPreparationStepContentItemSequence = items
    return step


def optical_path(ds: Dataset, *, objective_power: float) -> None:
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    path.OpticalPathDescription = "Brightfield"
    path.IlluminationTypeCodeSequence = [_code_item(BRIGHTFIELD)]
    path.IlluminationColorCodeSequence = [_code_item(FULL_SPECTRUM)]
    path.ObjectiveLensPower = objective_power
    path.ICCProfile = srgb_icc_profile()
    path.ColorSpace = "SRGB"
    ds.NumberOfOpticalPaths = 1
    ds.OpticalPathSequence = [path]


def image_geometry(ds: Dataset, grid: PixelGrid) -> None:
    """Total pixel matrix, its origin on the slide, orientation, imaged volume, pixel spacing."""
    ds.TotalPixelMatrixColumns = grid.columns
    ds.TotalPixelMatrixRows = grid.rows
    ds.TotalPixelMatrixFocalPlanes = 1
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = round(grid.origin.x_mm, 6)
    origin.YOffsetInSlideCoordinateSystem = round(grid.origin.y_mm, 6)
    ds.TotalPixelMatrixOriginSequence = [origin]
    ds.ImageOrientationSlide = list(IMAGE_ORIENTATION_SLIDE)
    ds.ImagedVolumeWidth = round(grid.width_mm, 6)
    ds.ImagedVolumeHeight = round(grid.height_mm, 6)
    ds.ImagedVolumeDepth = 0.001
    spacing_mm = grid.pixel_size_um / 1000.0
    measures = Dataset()
    measures.PixelSpacing = [round(spacing_mm, 9), round(spacing_mm, 9)]
    measures.SliceThickness = 0.001
    frame_type = Dataset()
    frame_type.FrameType = list(ds.ImageType)
    path_id = Dataset()
    path_id.OpticalPathIdentifier = "1"
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.WholeSlideMicroscopyImageFrameTypeSequence = [frame_type]
    shared.OpticalPathIdentificationSequence = [path_id]
    ds.SharedFunctionalGroupsSequence = [shared]
