"""`marrowlink serve` with DIMSE over TLS configured through settings, dcmtk as the client."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import dcmtk
from tests.servers import marrowlink_server


def test_serve_speaks_tls_when_configured(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    env = {"MARROWLINK_DICOM_TLS_CERT": str(cert), "MARROWLINK_DICOM_TLS_KEY": str(key)}
    with marrowlink_server(data, env=env) as server:
        peer = ["-aec", server.ae_title, "127.0.0.1", str(server.dicom_port)]
        secure = subprocess.run(
            [dcmtk("echoscu"), "-v", "+tla", "+cf", str(cert), *peer], capture_output=True, text=True
        )
        assert "Received Echo Response (Success)" in secure.stderr, secure.stderr
        plain = subprocess.run([dcmtk("echoscu"), "-to", "5", *peer], capture_output=True, text=True)
        assert plain.returncode != 0  # a plain-TCP association is not accepted on a TLS port
