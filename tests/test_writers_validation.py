"""The result objects checked by independent validators: dciodvfy (all four) and pixelmed (TID 1500)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.test_writers_support import dciodvfy_errors, results

PIXELMED = Path("/usr/share/java/pixelmed.jar")


@pytest.mark.parametrize("name", ["seg", "ann", "aoi", "preliminary", "final", "corrected"])
def test_dciodvfy_finds_no_error(name: str, tmp_path: Path) -> None:
    require_program("dciodvfy")
    errors, output = dciodvfy_errors(getattr(results(), name), tmp_path / f"{name}.dcm")
    assert not errors, output
    # The only warnings left are our private scheme (declared, unknown to dciodvfy), the Specimen
    # module highdicom copies into ANN (newer than this dciodvfy), and the source's empty StudyID.
    expected = ("MARROWLINK", "not present in standard DICOM IOD", "StudyID")
    unexpected = [w for w in output.splitlines() if w.startswith("Warning") and not any(e in w for e in expected)]
    assert not unexpected, output


def test_pixelmed_validates_the_sr_against_tid_1500(tmp_path: Path) -> None:
    """One run on the corrected report: it has both observers, a predecessor and every content item."""
    java = require_program("java")
    if not PIXELMED.exists():
        pytest.fail("pixelmed is not installed (apt-get install libpixelmed-java); .ci/run installs it")
    path = tmp_path / "sr.dcm"
    results().corrected.save_as(path, enforce_file_format=True)
    command = [
        java,
        # A short-lived JVM on a busy 2-core machine: C1 only and one GC thread halve the wall time.
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        "-Djdk.xml.xpathExprOpLimit=0",
        "-Djdk.xml.xpathExprGrpLimit=0",
        "-Djdk.xml.xpathTotalOpLimit=0",
        "-cp",
        str(PIXELMED),
        "com.pixelmed.validate.DicomSRValidator",
        str(path),
    ]
    output = subprocess.run(command, capture_output=True, text=True, timeout=300).stdout
    assert "Found Root Template TID_1500 (MeasurementReport)" in output, output
    assert "Root Template Validation Complete" in output, output
    assert "IOD validation complete" in output, output
    assert not [line for line in output.splitlines() if line.startswith("Error")], output
    # pixelmed's 2022 TID 1501 has no row for qualitative evaluations, so the critical-cell flags are
    # "not in template" warnings; nothing else may warn.
    warnings = [line for line in output.splitlines() if line.startswith("Warning")]
    assert all("Content Item not in template" in w and "CODE (" in w for w in warnings), output
