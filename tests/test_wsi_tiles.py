"""The encode path's parts against plain references: tiling, encapsulation, specimen module, bench harness.

The fast paths (FOV jobs on threads, pieces of shared tiles composited later, Pixel Data joined in one
go, the Specimen module built without highdicom) must give the bytes the obvious implementations give.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from acquisition.wsi import SlideContext, modules
from acquisition.wsi.encode import encapsulate_frames
from acquisition.wsi.tiles import BACKGROUND, PlacedFov, encode_tile, pyramid, tile_full, tile_sparse

TILE = 64


def _reference_sparse(fovs: list[tuple[int, int, np.ndarray]], columns: int, rows: int) -> dict[tuple[int, int], bytes]:
    """Paint the whole matrix (later FOVs first, so the earliest wins), encode every tile a FOV touches."""
    canvas = np.full((rows, columns, 3), BACKGROUND, np.uint8)
    touched = set()
    for column, row, pixels in reversed(fovs):
        height, width = pixels.shape[:2]
        c0, r0, c1, r1 = max(column, 0), max(row, 0), min(column + width, columns), min(row + height, rows)
        if c1 <= c0 or r1 <= r0:
            continue
        canvas[r0:r1, c0:c1] = pixels[r0 - row : r1 - row, c0 - column : c1 - column]
        touched |= {
            (tr, tc) for tr in range(r0 // TILE, (r1 - 1) // TILE + 1) for tc in range(c0 // TILE, (c1 - 1) // TILE + 1)
        }
    padded = np.full((-(-rows // TILE) * TILE, -(-columns // TILE) * TILE, 3), BACKGROUND, np.uint8)
    padded[:rows, :columns] = canvas
    return {
        (tr, tc): encode_tile(padded[tr * TILE : (tr + 1) * TILE, tc * TILE : (tc + 1) * TILE]) for tr, tc in touched
    }


def test_tile_sparse_matches_painting_the_whole_matrix() -> None:
    rng = np.random.default_rng(3)
    columns, rows = 700, 450
    # Overlapping neighbours, one at a tile-aligned offset, one hanging over each matrix edge, one
    # entirely outside (dropped), one inside another, one alone.
    placements = [(30, 17, 200, 150), (150, 90, 200, 150), (128, 256, 128, 64), (-40, 300, 120, 200)]
    placements += [(620, -20, 150, 100), (900, 10, 50, 50), (170, 100, 20, 20), (450, 330, 64, 64)]
    fovs = [(c, r, rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for c, r, w, h in placements]
    placed = [PlacedFov(c, r, p.shape[1], p.shape[0], lambda p=p: p) for c, r, p in fovs]
    tiles = tile_sparse(placed, TILE, columns, rows)
    expected = _reference_sparse(fovs, columns, rows)
    assert [(t.tile_row, t.tile_column) for t in tiles] == sorted(expected)
    assert {(t.tile_row, t.tile_column): t.jpeg for t in tiles} == expected


def test_tile_sparse_reports_a_bad_fov() -> None:
    good = np.zeros((100, 100, 3), np.uint8)
    placed = [PlacedFov(0, 0, 100, 100, lambda: good), PlacedFov(200, 0, 100, 100, lambda: good[:50])]
    with pytest.raises(ValueError, match="FOV image is 100x50, expected 100x100"):
        tile_sparse(placed, TILE, 400, 200)

    def unreadable() -> np.ndarray:
        raise OSError("no such file")

    with pytest.raises(OSError, match="no such file"):
        tile_sparse([PlacedFov(0, 0, 100, 100, unreadable)] * 20, TILE, 400, 200)


def test_tile_full_pads_edges_with_background() -> None:
    image = np.random.default_rng(5).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    frames = tile_full(image, TILE)
    assert len(frames) == 3 * 4
    last = imagecodecs.jpeg8_decode(frames[-1])
    assert last.shape == (TILE, TILE, 3)
    assert np.abs(last[30:, 20:].astype(int) - BACKGROUND).max() <= 2  # 150 = 2*64 + 22, 200 = 3*64 + 8
    assert [len(level) for level in pyramid(image, TILE)] == [150, 75, 37]


@pytest.mark.parametrize("sizes", [[], [4], [5, 8, 3, 1001], [6] * 300])
def test_encapsulate_frames_is_pydicoms_encapsulation(sizes: list[int]) -> None:
    frames = [bytes([index % 251]) * size for index, size in enumerate(sizes)]
    assert encapsulate_frames(frames) == encapsulate(frames)


def _serialised(ds: Dataset) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def test_specimen_module_is_what_highdicom_builds() -> None:
    import highdicom as hd
    from pydicom.sr.coding import Code

    context = SlideContext(container_identifier="BM-42", uid_root="1.2.826.0.1.3680043.8.498.")
    ours = Dataset()
    modules.specimen(ours, context)

    def code(c: modules.Code) -> Code:
        return Code(c.value, c.scheme_designator, c.meaning)

    steps = [
        hd.SpecimenPreparationStep(
            specimen_id="BM-42", processing_procedure=hd.SpecimenCollection(procedure=code(modules.ASPIRATION))
        ),
        hd.SpecimenPreparationStep(
            specimen_id="BM-42", processing_procedure=hd.SpecimenStaining(substances=[code(modules.MGG_STAIN)])
        ),
    ]
    description = hd.SpecimenDescription(
        specimen_id="BM-42",
        specimen_uid=context.specimen_uid,
        specimen_preparation_steps=steps,
        primary_anatomic_structures=[code(modules.BONE_MARROW)],
        specimen_type=code(modules.SMEAR_SAMPLE),
        specimen_short_description="Bone marrow aspirate smear, MGG",
    )
    theirs = Dataset()
    theirs.SpecimenDescriptionSequence = [description]
    mine = Dataset()
    mine.SpecimenDescriptionSequence = ours.SpecimenDescriptionSequence
    assert _serialised(mine) == _serialised(theirs)


def test_importing_the_encode_path_loads_no_highdicom_cv2_or_database() -> None:
    script = (
        "import sys\n"
        "from acquisition.metafer import read_metafer_export\n"
        "from acquisition.wsi.manifest import encode_manifest\n"
        "heavy = ('highdicom', 'cv2', 'sqlalchemy', 'integration', 'tensorflow')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_bench_measures_the_child_alone(tmp_path: Path) -> None:
    from integration.bench import wsi as bench

    jpeg = tmp_path / "a.jpg"
    jpeg.write_bytes(imagecodecs.jpeg8_encode(np.zeros((37, 53, 3), np.uint8)))
    assert bench.jpeg_shape(jpeg) == (37, 53, 3)
    measured = bench._run([sys.executable, "-c", "print('to /dev/null')"])
    assert measured["seconds"] > 0 and measured["cpu_seconds"] > 0
    # The child's peak is its own, not this (much larger) test process's high-water mark.
    assert measured["peak_rss_mb"] < 60
    with pytest.raises(RuntimeError, match=r"failed \(3\)"):
        bench._run([sys.executable, "-c", "raise SystemExit(3)"])
    summary = bench._summary(
        [
            {"seconds": 3, "cpu_seconds": 2, "peak_rss_mb": 9},
            {"seconds": 1, "cpu_seconds": 1, "peak_rss_mb": 7},
            {"seconds": 2, "cpu_seconds": 4, "peak_rss_mb": 8},
        ]
    )
    assert summary == {"seconds": 2, "cpu_seconds": 2, "peak_rss_mb": 9, "runs_seconds": [3, 1, 2]}


def _sampling_factors(jpeg: bytes) -> list[int]:
    """Each component's horizontal/vertical sampling byte from the baseline SOF0 header."""
    sof = jpeg.index(b"\xff\xc0")
    components = jpeg[sof + 9]
    return [jpeg[sof + 11 + 3 * k] for k in range(components)]


def test_tiles_are_baseline_jpeg_with_the_scanners_4_2_0_chroma() -> None:
    """The Metafer's FOV JPEGs are 4:2:0 (as OrthancWSIDicomizer's tiles are): tiles keep that
    subsampling, which YBR_FULL_422 declares for any subsampled baseline JPEG (PS3.5 8.2.1)."""
    tile = np.random.default_rng(3).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    data = encode_tile(tile)
    assert _sampling_factors(data) == [0x22, 0x11, 0x11]
    decoded = imagecodecs.jpeg8_decode(data)
    assert decoded.shape == tile.shape


def test_bench_wsi_command_reports_every_run(tmp_path: Path) -> None:
    """`marrowlink bench wsi --repeat N` runs ours N times (taking turns with the peers) and reports the
    median with each run's time, and the size of what it wrote."""
    import json

    command = ["bench", "wsi", "--json", "--no-peers", "--fovs", "2", "--repeat", "2"]
    out = subprocess.run(
        [sys.executable, "-m", "integration.cli", *command],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result = json.loads(out.stdout)
    ours = result["marrowlink"]
    assert result["repeat"] == 2 and len(ours["runs_seconds"]) == 2
    assert ours["seconds"] > 0 and ours["output_mb"] > 0


def test_whole_tiles_of_a_baseline_jpeg_are_copied_not_re_encoded() -> None:
    """A level whose pixels are exactly a 4:2:0 baseline JPEG's takes its whole tiles from it in the DCT
    domain: decoded, they equal the source's decode away from the tile border (where chroma upsampling
    looks at the neighbouring tile), byte-for-byte nothing was re-quantised. Edge tiles are not copied."""
    from acquisition.wsi.tiles import copy_tiles, jpeg_sampling

    side = 256  # the WSI tile size

    y, x = np.mgrid[0:600, 0:700]
    smooth = np.stack([(x * 0.3) % 255, (y * 0.4) % 255, ((x + y) * 0.2) % 255], axis=-1).astype(np.uint8)
    source = imagecodecs.jpeg8_encode(smooth, level=85)
    assert jpeg_sampling(source) == (0x22, 0x11, 0x11)
    copied = copy_tiles(source, 700, 600, side)
    assert sorted(copied) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # 700x600 holds 2x2 whole 256-px tiles
    full = imagecodecs.jpeg8_decode(source)
    for (row, column), jpeg in copied.items():
        assert jpeg_sampling(jpeg) == (0x22, 0x11, 0x11)
        tile = imagecodecs.jpeg8_decode(jpeg)
        inner = full[row * side + 16 : (row + 1) * side - 16, column * side + 16 : (column + 1) * side - 16]
        assert np.array_equal(tile[16:-16, 16:-16], inner)
    # not ours to copy: 4:4:4 (frames would disagree with YBR_FULL_422), PNG, a tile grid off the MCUs
    assert copy_tiles(imagecodecs.jpeg8_encode(smooth, level=85, subsampling="444"), 700, 600, side) == {}
    assert copy_tiles(imagecodecs.png_encode(smooth), 700, 600, side) == {}
    assert copy_tiles(source, 700, 600, 200) == {}
