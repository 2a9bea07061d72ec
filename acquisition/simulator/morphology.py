"""Class recipes: what each of the 23 classes looks like under MGG, as a random `CellPlan`.

Every recipe draws its numbers from ranges, and ranges of neighbouring classes overlap on purpose
(size, N:C ratio, cytoplasm blue), so a classifier must use the combination of cues a
morphologist uses: chromatin pattern, nucleoli, nuclear shape, granules, hof, projections.
`docs/simulator.md` lists the distinguishing cues per class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from acquisition.simulator.cells import CellPlan, Granules

Recipe = Callable[[np.random.Generator], CellPlan]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def blast(rng: np.random.Generator) -> CellPlan:
    """Fine, even chromatin, 1–3 nucleoli, high N:C, scant blue cytoplasm, rarely a few granules."""
    granules = [Granules("gran_azur", _u(rng, 0.5, 2.5), (0.15, 0.3))] if rng.random() < 0.3 else []
    return CellPlan(
        radius_um=_u(rng, 6.0, 9.5),
        elongation=_u(rng, 0.85, 1.05),
        cytoplasm={"cyto_blue": _u(rng, 0.55, 0.9)},
        nucleus_shape="round",
        nucleus_rel=_u(rng, 0.72, 0.86),
        nucleus_offset=_u(rng, 0.0, 0.4),
        nucleus_elongation=_u(rng, 0.85, 1.0),
        chromatin="fine",
        nucleus_amount=_u(rng, 1.0, 1.2),
        nucleoli=int(rng.choice([0, 1, 2, 3], p=[0.15, 0.35, 0.35, 0.15])),
        nucleolus_um=_u(rng, 1.0, 1.8),
        granules=granules,
        cleft=_u(rng, 0.15, 0.3) if rng.random() < 0.1 else 0.0,
    )


def apl_cell(rng: np.random.Generator) -> CellPlan:
    """Abnormal promyelocyte: bilobed/reniform nucleus, dense azurophilic granules, Auer rods, faggots."""
    faggot = bool(rng.random() < 0.25)
    return CellPlan(
        radius_um=_u(rng, 7.5, 11.0),
        cytoplasm={"cyto_blue": _u(rng, 0.35, 0.6), "cyto_lilac": 0.5},
        nucleus_shape=str(rng.choice(["bilobed", "kidney", "round"], p=[0.45, 0.35, 0.2])),
        lobes=2,
        nucleus_rel=_u(rng, 0.55, 0.7),
        nucleus_offset=_u(rng, 0.1, 0.4),
        chromatin="fine",
        nucleus_amount=0.9,
        nucleoli=int(rng.integers(0, 2)),
        granules=[Granules("gran_azur", _u(rng, 60, 120), (0.15, 0.3), 1.0, over_nucleus=True)],
        auer_rods=int(rng.choice([0, 1, 2, 3], p=[0.2, 0.4, 0.25, 0.15])),
        faggot=faggot,
    )


def hairy_cell(rng: np.random.Generator) -> CellPlan:
    """Oval/bean nucleus with spongy chromatin, ample pale grey-blue cytoplasm, hairy projections."""
    return CellPlan(
        radius_um=_u(rng, 6.0, 8.5),
        elongation=_u(rng, 0.85, 1.1),
        roughness=0.08,
        cytoplasm={"cyto_grey": _u(rng, 0.6, 0.9), "cyto_sky": 0.2},
        nucleus_shape=str(rng.choice(["oval", "kidney"], p=[0.6, 0.4])),
        nucleus_rel=_u(rng, 0.5, 0.62),
        nucleus_elongation=_u(rng, 0.75, 0.95),
        nucleus_offset=_u(rng, 0.0, 0.5),
        chromatin="lacy",
        nucleus_amount=0.95,
        hairy=int(rng.integers(25, 55)),
    )


def lymphoma_cell(rng: np.random.Generator) -> CellPlan:
    """Medium-large, cleaved/notched nucleus, coarse chromatin, scant blue cytoplasm, sometimes a nucleolus."""
    return CellPlan(
        radius_um=_u(rng, 5.5, 8.5),
        roughness=0.06,
        cytoplasm={"cyto_blue": _u(rng, 0.5, 0.85)},
        nucleus_shape=str(rng.choice(["round", "kidney"], p=[0.75, 0.25])),
        nucleus_rel=_u(rng, 0.76, 0.88),
        nucleus_roughness=0.09,
        nucleus_offset=_u(rng, 0.0, 0.4),
        chromatin="coarse",
        nucleus_amount=1.05,
        cleft=_u(rng, 0.35, 0.7) if rng.random() < 0.8 else 0.0,
        nucleoli=int(rng.random() < 0.35),
    )


def tumour_cell(rng: np.random.Generator) -> CellPlan:
    """Large pleomorphic non-haematopoietic cell: irregular nucleus, big nucleoli, deep blue, vacuoles."""
    return CellPlan(
        radius_um=_u(rng, 9.0, 15.0),
        elongation=_u(rng, 0.7, 1.1),
        roughness=0.12,
        cytoplasm={"cyto_blue": _u(rng, 0.6, 1.0)},
        cyto_texture=0.2,
        nucleus_shape=str(rng.choice(["oval", "folded", "binucleate"], p=[0.55, 0.3, 0.15])),
        nucleus_rel=_u(rng, 0.6, 0.78),
        nucleus_elongation=_u(rng, 0.7, 1.0),
        nucleus_roughness=0.14,
        nucleus_offset=_u(rng, 0.0, 0.5),
        chromatin="coarse",
        nucleus_amount=_u(rng, 0.9, 1.15),
        nucleoli=int(rng.integers(1, 4)),
        nucleolus_um=_u(rng, 1.8, 3.0),
        vacuoles=int(rng.integers(0, 10)),
        vacuole_um=(0.4, 1.0),
    )


def eosinophil(rng: np.random.Generator) -> CellPlan:
    """Bilobed nucleus, cytoplasm packed with large orange-red granules."""
    return CellPlan(
        radius_um=_u(rng, 6.0, 8.0),
        cytoplasm={"cyto_pink": 0.4, "cyto_lilac": 0.3},
        nucleus_shape=str(rng.choice(["bilobed", "band"], p=[0.8, 0.2])),
        lobes=2,
        nucleus_rel=_u(rng, 0.48, 0.6),
        nucleus_offset=_u(rng, 0.0, 0.3),
        chromatin="clumped",
        granules=[Granules("gran_eos", _u(rng, 110, 160), (0.25, 0.38), 0.9)],
    )


def abnormal_eosinophil(rng: np.random.Generator) -> CellPlan:
    """inv(16) eosinophil: often less segmented, orange granules mixed with large dark violet ones."""
    plan = eosinophil(rng)
    plan.nucleus_shape = str(rng.choice(["round", "kidney", "bilobed"], p=[0.35, 0.35, 0.3]))
    plan.chromatin = "coarse"
    plan.radius_um *= _u(rng, 1.0, 1.2)
    plan.granules = [
        Granules("gran_eos", _u(rng, 50, 90), (0.25, 0.38), 0.9),
        Granules("gran_abe", _u(rng, 20, 45), (0.35, 0.6), 1.1, over_nucleus=bool(rng.random() < 0.5)),
    ]
    return plan


def atypical_plasma_cell(rng: np.random.Generator) -> CellPlan:
    """Myeloma cell: larger, sometimes binucleate, finer chromatin with a nucleolus, big hof, vacuoles."""
    return CellPlan(
        radius_um=_u(rng, 7.5, 12.0),
        elongation=_u(rng, 0.75, 0.95),
        roughness=0.06,
        cytoplasm={"cyto_blue": _u(rng, 0.85, 1.25)},
        nucleus_shape="binucleate" if rng.random() < 0.3 else "round",
        nucleus_rel=_u(rng, 0.45, 0.6),
        nucleus_offset=_u(rng, 0.45, 0.8),
        chromatin="coarse",
        nucleoli=int(rng.integers(1, 3)),
        nucleolus_um=_u(rng, 1.2, 2.2),
        hof=_u(rng, 0.55, 0.85),
        vacuoles=int(rng.choice([0, 3, 8], p=[0.6, 0.25, 0.15])),
        vacuole_um=(0.6, 1.4),
    )


def promyelocyte(rng: np.random.Generator) -> CellPlan:
    """Large, eccentric round nucleus, nucleolus often visible, blue cytoplasm with coarse azurophilic granules."""
    return CellPlan(
        radius_um=_u(rng, 7.5, 10.5),
        cytoplasm={"cyto_blue": _u(rng, 0.5, 0.8)},
        nucleus_shape="round",
        nucleus_rel=_u(rng, 0.55, 0.7),
        nucleus_offset=_u(rng, 0.3, 0.6),
        chromatin="coarse",
        nucleus_amount=0.9,
        nucleoli=int(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2])),
        granules=[Granules("gran_azur", _u(rng, 35, 70), (0.14, 0.28), 1.0, over_nucleus=bool(rng.random() < 0.5))],
        hof=_u(rng, 0.2, 0.45),
    )


def myelocyte(rng: np.random.Generator) -> CellPlan:
    """Round/oval eccentric nucleus, condensing chromatin, no nucleolus, lilac cytoplasm, Golgi zone."""
    return CellPlan(
        radius_um=_u(rng, 6.0, 8.5),
        cytoplasm={"cyto_lilac": _u(rng, 0.7, 1.0), "cyto_blue": _u(rng, 0.0, 0.25)},
        nucleus_shape=str(rng.choice(["round", "oval"])),
        nucleus_rel=_u(rng, 0.52, 0.65),
        nucleus_elongation=_u(rng, 0.8, 1.0),
        nucleus_offset=_u(rng, 0.3, 0.6),
        chromatin="coarse",
        fine_granularity=_u(rng, 0.25, 0.5),
        granules=[Granules("gran_azur", _u(rng, 0, 4), (0.15, 0.25))],
        hof=_u(rng, 0.1, 0.3),
    )


def metamyelocyte(rng: np.random.Generator) -> CellPlan:
    """Kidney-shaped nucleus (indent < half its width), clumping chromatin, lilac granular cytoplasm."""
    plan = myelocyte(rng)
    plan.radius_um = _u(rng, 5.5, 7.5)
    plan.nucleus_shape = "kidney"
    plan.cleft = _u(rng, 0.3, 0.55)
    plan.nucleus_offset = _u(rng, 0.1, 0.4)
    plan.chromatin = str(rng.choice(["coarse", "clumped"]))
    plan.cytoplasm = {"cyto_lilac": _u(rng, 0.75, 1.0)}
    plan.hof = 0.0
    return plan


def band(rng: np.random.Generator) -> CellPlan:
    """Band neutrophil: sausage-shaped nucleus of even width, no constrictions to a filament."""
    plan = metamyelocyte(rng)
    plan.nucleus_shape = "band"
    plan.nucleus_rel = _u(rng, 0.5, 0.62)
    plan.chromatin = "clumped"
    plan.nucleus_offset = 0.0
    return plan


def segmented(rng: np.random.Generator) -> CellPlan:
    """Segmented neutrophil: 2–5 dense lobes joined by thin filaments, pale lilac granular cytoplasm."""
    plan = band(rng)
    plan.nucleus_shape = "segmented"
    plan.lobes = int(rng.choice([2, 3, 4, 5], p=[0.15, 0.45, 0.3, 0.1]))
    plan.nucleus_rel = _u(rng, 0.5, 0.62)
    return plan


def basophil(rng: np.random.Generator) -> CellPlan:
    """Lobed nucleus hidden under large purple-black granules, pale lilac cytoplasm."""
    return CellPlan(
        radius_um=_u(rng, 5.5, 7.0),
        cytoplasm={"cyto_lilac": 0.6},
        nucleus_shape=str(rng.choice(["bilobed", "kidney"])),
        lobes=2,
        nucleus_rel=_u(rng, 0.5, 0.6),
        chromatin="clumped",
        nucleus_amount=0.8,
        granules=[Granules("gran_baso", _u(rng, 35, 70), (0.25, 0.5), 1.0, over_nucleus=True)],
    )


def monocyte(rng: np.random.Generator) -> CellPlan:
    """Folded/kidney nucleus with lacy chromatin, abundant grey-blue cytoplasm, vacuoles, azurophilic dust."""
    return CellPlan(
        radius_um=_u(rng, 7.0, 10.0),
        elongation=_u(rng, 0.8, 1.05),
        roughness=0.08,
        cytoplasm={"cyto_grey": _u(rng, 0.75, 1.05)},
        cyto_texture=0.15,
        nucleus_shape=str(rng.choice(["folded", "kidney"], p=[0.6, 0.4])),
        nucleus_rel=_u(rng, 0.55, 0.7),
        nucleus_offset=_u(rng, 0.0, 0.4),
        chromatin="lacy",
        nucleus_amount=0.9,
        vacuoles=int(rng.choice([0, 3, 8], p=[0.4, 0.35, 0.25])),
        vacuole_um=(0.3, 0.8),
        granules=[Granules("gran_azur", _u(rng, 3, 12), (0.12, 0.2), 0.7)],
    )


def lymphocyte(rng: np.random.Generator) -> CellPlan:
    """Small round dense nucleus with clumped chromatin, thin rim of sky-blue cytoplasm."""
    return CellPlan(
        radius_um=_u(rng, 3.8, 5.5),
        cytoplasm={"cyto_sky": _u(rng, 0.6, 1.0)},
        nucleus_shape="round",
        nucleus_rel=_u(rng, 0.8, 0.92),
        nucleus_offset=_u(rng, 0.0, 0.4),
        nucleus_elongation=_u(rng, 0.85, 1.0),
        chromatin="clumped",
        nucleus_amount=_u(rng, 1.0, 1.15),
        cleft=_u(rng, 0.1, 0.25) if rng.random() < 0.15 else 0.0,
        granules=[Granules("gran_azur", 3.0, (0.15, 0.25))] if rng.random() < 0.2 else [],
    )


def plasma_cell(rng: np.random.Generator) -> CellPlan:
    """Eccentric round nucleus with clock-face chromatin, deep blue cytoplasm, perinuclear hof."""
    return CellPlan(
        radius_um=_u(rng, 5.0, 7.5),
        elongation=_u(rng, 0.7, 0.9),
        cytoplasm={"cyto_blue": _u(rng, 0.85, 1.2)},
        nucleus_shape="round",
        nucleus_rel=_u(rng, 0.45, 0.58),
        nucleus_offset=_u(rng, 0.6, 0.9),
        chromatin="clockface",
        nucleus_amount=1.0,
        hof=_u(rng, 0.35, 0.7),
    )


def proerythroblast(rng: np.random.Generator) -> CellPlan:
    """Large round cell, round nucleus with fine-granular chromatin and nucleoli, deep blue cytoplasm, blebs."""
    return CellPlan(
        radius_um=_u(rng, 7.0, 10.0),
        roughness=0.07,
        cytoplasm={"cyto_blue": _u(rng, 1.0, 1.35)},
        nucleus_shape="round",
        nucleus_rel=_u(rng, 0.68, 0.8),
        nucleus_offset=_u(rng, 0.0, 0.25),
        chromatin=str(rng.choice(["fine", "coarse"], p=[0.6, 0.4])),
        nucleus_amount=_u(rng, 0.95, 1.1),
        nucleoli=int(rng.choice([0, 1, 2], p=[0.3, 0.4, 0.3])),
        nucleolus_um=_u(rng, 1.0, 1.6),
        hof=0.25,
    )


def erythroblast(rng: np.random.Generator) -> CellPlan:
    """Basophilic to orthochromatic normoblast: small round dense nucleus, blue-grey to pink cytoplasm."""
    maturity = _u(rng, 0.0, 1.0)
    return CellPlan(
        radius_um=_u(rng, 4.0, 6.5) - 1.0 * maturity,
        cytoplasm={"cyto_blue": 0.9 * (1 - maturity), "cyto_pink": 1.1 * maturity, "cyto_grey": 0.3},
        nucleus_shape="round",
        nucleus_rel=_u(rng, 0.5, 0.7) - 0.1 * maturity,
        nucleus_offset=_u(rng, 0.0, 0.35),
        chromatin="pyknotic" if maturity > 0.55 else "clumped",
        nucleus_amount=_u(rng, 1.0, 1.2),
    )


def megakaryocyte(rng: np.random.Generator) -> CellPlan:
    """Very large cell with a multilobed nucleus, pink-lilac granular cytoplasm, budding platelets."""
    return CellPlan(
        radius_um=_u(rng, 18.0, 30.0),
        elongation=_u(rng, 0.8, 1.0),
        roughness=0.08,
        cytoplasm={"cyto_lilac": 0.9, "cyto_pink": 0.3},
        nucleus_shape="multilobed",
        lobes=int(rng.integers(5, 12)),
        nucleus_rel=_u(rng, 0.45, 0.6),
        chromatin="coarse",
        fine_granularity=0.6,
        granules=[Granules("gran_azur", 10.0, (0.1, 0.18), 0.6)],
        platelet_budding=True,
    )


def macrophage(rng: np.random.Generator) -> CellPlan:
    """Large irregular cell, small oval eccentric nucleus, foamy vacuolated cytoplasm with inclusions."""
    return CellPlan(
        radius_um=_u(rng, 11.0, 18.0),
        elongation=_u(rng, 0.7, 1.0),
        roughness=0.14,
        cytoplasm={"cyto_grey": _u(rng, 0.6, 0.9), "cyto_lilac": 0.3},
        cyto_texture=0.25,
        nucleus_shape="oval",
        nucleus_rel=_u(rng, 0.22, 0.32),
        nucleus_elongation=0.7,
        nucleus_offset=_u(rng, 0.3, 0.7),
        chromatin="lacy",
        vacuoles=int(rng.integers(25, 70)),
        vacuole_um=(0.4, 1.5),
        inclusions=int(rng.integers(2, 14)),
    )


def smudge_cell(rng: np.random.Generator) -> CellPlan:
    """Ruptured cell: smeared streaky chromatin, no cytoplasm."""
    return CellPlan(
        radius_um=_u(rng, 5.0, 10.0),
        elongation=_u(rng, 1.0, 1.6),
        roughness=0.2,
        cytoplasm={},
        nucleus_shape="oval",
        nucleus_rel=1.0,
        nucleus_elongation=_u(rng, 0.6, 1.0),
        nucleus_roughness=0.2,
        smudge=True,
    )


def not_identifiable(rng: np.random.Generator) -> CellPlan:
    """Degenerated cell: a common class washed out, ragged, vacuolated, with pyknotic or broken nucleus."""
    base = RECIPES[str(rng.choice(["NGS", "MYB", "LYT", "EBO", "MON", "BLA"]))](rng)
    base.fade = _u(rng, 0.45, 0.75)
    base.roughness = 0.18
    base.vacuoles += int(rng.integers(3, 15))
    base.granules = []
    base.hairy = 0
    base.nucleoli = 0
    if rng.random() < 0.5:
        base.nucleus_shape, base.chromatin = "fragments", "pyknotic"
    else:
        base.chromatin = "pyknotic"
    return base


RECIPES: dict[str, Recipe] = {
    "BLA": blast, "APL": apl_cell, "HAC": hairy_cell, "LYM": lymphoma_cell, "TUM": tumour_cell,
    "ABE": abnormal_eosinophil, "APC": atypical_plasma_cell, "PMO": promyelocyte, "MYB": myelocyte,
    "MMZ": metamyelocyte, "NGB": band, "NGS": segmented, "EOS": eosinophil, "BAS": basophil,
    "MON": monocyte, "LYT": lymphocyte, "PLM": plasma_cell, "PEB": proerythroblast, "EBO": erythroblast,
    "MKC": megakaryocyte, "MAC": macrophage, "KSC": smudge_cell, "NIF": not_identifiable,
}  # fmt: skip
