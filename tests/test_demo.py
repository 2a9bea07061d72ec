"""`marrowlink demo`: order over MLLP, virtual scan, import, analysis, ORU to the LIS — one command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

MARROWLINK = str(Path(sys.executable).parent / "marrowlink")


def test_demo_runs_the_whole_workflow(tmp_path: Path, tiny_models) -> None:
    env = {**os.environ, "MARROWLINK_MODELS_DIR": str(tiny_models["root"])}
    env.pop("MARROWLINK_CONFIG", None)
    out = subprocess.run(
        [MARROWLINK, "demo", "--data", str(tmp_path / "data"), "--fovs", "2", "--no-serve",
         "--http-port", str(free_port()), "--dicom-port", str(free_port()), "--mllp-port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "answer: AA" in log  # the order was accepted over MLLP
    # the scan goes through the watch folder and the pipeline; each stage is told, those logged while the job
    # thread starts TensorFlow (which silences descriptor 2 for a moment) included
    assert "the scanner drops scan-" in log and "3/5 imported as DICOM WSI" in log and "4/5 analysing" in log
    assert "5/5" in log and "ORU^R01 (P) queued" in log
    assert "LIS stand-in received ORU R01, result preliminary" in log
    assert "the LIS acknowledged the ORU" in log
    assert "research use only" in log
    assert "/review  (log in as demo-path / " in log  # where a person goes next, with the password
    # The workflow's steps, not library chatter: no highdicom INFO lines, no TensorFlow start-up lines.
    assert " INFO highdicom" not in log
    assert "oneDNN" not in log and "cuInit" not in log and "cuda drivers" not in log
