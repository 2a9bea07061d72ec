"""Coded concepts of the AI results: standard codes where verified, the private MARROWLINK scheme otherwise.

Standard codes, each checked against pydicom's copy of DICOM PS3.16 (``pydicom/sr/_concepts_dict.py``):

- SCT 91723000 Anatomical Structure: Segmented/Annotated Property Category (CID 7150).
- SCT 4421005 Cell: the SEG segment's property type (CID 8135 Microscopy Annotation Property Type).
  It is a *type*, not a category: CID 7150 does not list it, so the cell classes (more specific
  kinds of cell) are the annotation groups' property types, extending CID 8135.
- SCT 309825002 Spatial and Relational Concept: category of the AOI quality regions (CID 7150).
- SCT 42798000 Area (CID 8136 Microscopy Measurement Type); UCUM um2, 1, %, {ratio} (CID 7181).
- SCT 363679005 Imaging procedure: TID 1500 Procedure Reported (CID 100).
- SCT 52101004 Present / SCT 272519000 Absent (CID 241) for the critical-cell flags.
- SCT 14016003 Bone marrow (CID 8134), the SEG segment's primary anatomic structure.
- LOINC codes only from the verified bone-marrow list (docs/hl7-interface.md §4.2; the same subset
  hl7/codes.py uses, so the SR and the ORU say the same thing).

TID 1500's Procedure Reported is SCT 363679005 Imaging procedure, from CID 100: pixelmed's validator
reports an error for a code outside that group there (tried with a local code; LOINC 48807-2 is not
in the group either), and 48807-2 "Bone marrow aspiration report" names a report document, not a
procedure, anyway.
What the report is about is said by the image-level group's Finding, MARROWLINK BMDIFF. No SNOMED
CT code for the 23 classes is listed in PS3.16 (DICOM has no context group for marrow cell types),
so none is dual-coded.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from acquisition import CLASS_BY_CODE, CLASS_CODES, QUALITY_CLASSES
from ai.catalogue import UNIDENTIFIED

SCHEME = "MARROWLINK"
SCHEME_NAME = "marrowlink bone marrow cytomorphology codes"
SCHEME_VERSION = "1"
SCHEME_ORGANIZATION = "marrowlink"

ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
CELL = Code("4421005", "SCT", "Cell")
SPATIAL_AND_RELATIONAL_CONCEPT = Code("309825002", "SCT", "Spatial and Relational Concept")
BONE_MARROW = Code("14016003", "SCT", "Bone marrow")
AREA = Code("42798000", "SCT", "Area")
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")

SQUARE_MICROMETER = Code("um2", "UCUM", "square micrometer")
NO_UNITS = Code("1", "UCUM", "no units")
PERCENT = Code("%", "UCUM", "Percent")
RATIO = Code("{ratio}", "UCUM", "ratio")
CELLS = Code("{cells}", "UCUM", "cells")

#: Verified bone-marrow LOINC codes that the SR uses, code → display.
LOINC = {
    "11105-4": "Basophils/100 cells in Bone marrow",
    "11106-2": "Eosinophils/100 cells in Bone marrow",
    "11108-8": "Lymphocytes/100 cells in Bone marrow",
    "56960-8": "Segmented neutrophils/100 cells in Bone marrow",
    "40689-2": "Erythroid cells/100 cells in Bone marrow",
    "11138-5": "Myeloid cells/Erythroid cells [Ratio] in Bone marrow",
    "38257-2": "Cells counted total [#] in Bone marrow",
}
#: Class percentages with a verified LOINC code meaning exactly that class (as hl7/codes.py).
PERCENT_LOINC = {"BAS": "11105-4", "EOS": "11106-2", "LYT": "11108-8", "NGS": "56960-8"}


def loinc(code: str) -> Code:
    """A verified LOINC code; any other is a programming error, never a silent guess."""
    return Code(code, "LN", LOINC[code])


ME_RATIO = loinc("11138-5")
TOTAL_COUNTED = loinc("38257-2")
ERYTHROID_PERCENT = loinc("40689-2")


def local(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


DIFFERENTIAL = local("BMDIFF", "Bone marrow cell differential")
CLASS_PROBABILITY = local("CLSPROB", "Class probability")
QUALITY_SCORE = local("AOISCORE", "Smear area quality score")
TOTAL_CLASSED = local("NCLASSED", "Cells counted, excluding not classed")
REGION_CELL_COUNT = local("NREGION", "Nucleated cells in analysed region")
CRITICAL_CELLS = local("CRITICAL", "Critical cell forms")
ANALYSED_REGION = local("REGION", "Analysed 40x region")

_QUALITY_MEANINGS = {
    "optimal": "Optimal smear area",
    "acceptable": "Acceptable smear area",
    "too_dense": "Too dense smear area",
    "too_sparse": "Too sparse smear area",
    "artefact": "Smear area with artefact",
    "background": "Background outside smear",
}
_UNIDENTIFIED_MEANING = "Unidentified cell (below confidence threshold)"


def class_name(code: str) -> str:
    if code == UNIDENTIFIED:
        return _UNIDENTIFIED_MEANING
    known = CLASS_BY_CODE.get(code)
    return known.name if known else code


def cell_class(code: str) -> Code:
    """The cell class as a coded concept: ANN property type, SR concept of its flags."""
    return local(code, class_name(code))


def class_count(code: str) -> Code:
    return local(f"N-{code}", _clip(f"Count: {class_name(code)}"))


def class_percent(code: str) -> Code:
    """Percent of classed cells: the verified LOINC where one means exactly this class."""
    if code in PERCENT_LOINC:
        return loinc(PERCENT_LOINC[code])
    return local(f"P-{code}", _clip(f"Percent: {class_name(code)}"))


def quality_class(name: str) -> Code:
    return local(f"Q-{name.upper()}", _QUALITY_MEANINGS[name])


def _clip(meaning: str) -> str:
    """Code Meaning is LO (64 characters)."""
    return meaning if len(meaning) <= 64 else meaning[:61] + "..."


def all_local_codes() -> list[Code]:
    """Every MARROWLINK code, for documentation and the tests that pin values and meanings."""
    codes = [DIFFERENTIAL, CLASS_PROBABILITY, QUALITY_SCORE, TOTAL_CLASSED, REGION_CELL_COUNT]
    codes += [CRITICAL_CELLS, ANALYSED_REGION]
    for code in (*CLASS_CODES, UNIDENTIFIED):
        codes += [cell_class(code), class_count(code)]
        if code not in PERCENT_LOINC:
            codes.append(class_percent(code))
    codes += [quality_class(name) for name in QUALITY_CLASSES]
    return codes


def declare_scheme(ds: Dataset) -> None:
    """Declare MARROWLINK in the Coding Scheme Identification Sequence (PS3.3 C.12.1.1.1).

    A private designator must be identified in every object that uses it, so that a reader that
    meets ``MARROWLINK`` learns who defines it; LOINC and SNOMED CT are standard and need no entry.
    No Coding Scheme UID: the scheme is not registered, and that attribute is only required for
    schemes that have an OID.
    """
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeVersion = SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = SCHEME_ORGANIZATION
    existing = [i for i in ds.get("CodingSchemeIdentificationSequence", []) if i.CodingSchemeDesignator != SCHEME]
    ds.CodingSchemeIdentificationSequence = [*existing, item]
