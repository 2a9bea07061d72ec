"""Who and what a slide scan belongs to: patient, study, slide, scanner. Typed, not a dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from pydicom.uid import generate_uid

from acquisition.timestamps import DicomDateTime, format_dicom


@dataclass(frozen=True)
class Patient:
    name: str = ""
    id: str = ""
    birth_date: str = ""
    sex: str = ""


@dataclass(frozen=True)
class Equipment:
    manufacturer: str = "MetaSystems"
    model_name: str = "Metafer 4"
    device_serial_number: str = "unknown"
    software_versions: str = "unknown"
    microscope: str = "Zeiss Axio Imager.Z2"


@dataclass(frozen=True)
class SlideContext:
    """Everything that is the same for every DICOM instance made from one slide scan.

    All instances of one slide share study, series, Frame of Reference and Container Identifier, so
    that viewers align the overview, the FOVs and the AI results (IHE PaLM).
    """

    container_identifier: str
    uid_root: str
    patient: Patient = field(default_factory=Patient)
    accession_number: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    specimen_uid: str = ""
    study_id: str = ""
    study_description: str = "Bone marrow smear"
    referring_physician_name: str = ""
    series_number: int = 1
    equipment: Equipment = field(default_factory=Equipment)
    #: When the slide was scanned (aware; a naive value is taken as the site's wall clock).
    acquisition_datetime: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The site's time zone: DICOM dates and times are written on its clock, with TimezoneOffsetFromUTC.
    zone: tzinfo = UTC

    def __post_init__(self) -> None:
        if not self.container_identifier:
            raise ValueError("container_identifier (the slide barcode) is required")
        for name in ("study_instance_uid", "series_instance_uid", "frame_of_reference_uid", "specimen_uid"):
            if not getattr(self, name):
                object.__setattr__(self, name, generate_uid(self.uid_root))

    def new_uid(self) -> str:
        return generate_uid(self.uid_root)

    @property
    def acquired(self) -> DicomDateTime:
        """The acquisition time as DA, TM and offset on the site's clock."""
        when = self.acquisition_datetime
        return format_dicom(when if when.tzinfo else when.replace(tzinfo=self.zone), self.zone)
