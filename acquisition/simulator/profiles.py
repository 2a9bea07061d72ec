"""Case profiles: relative frequencies of the 23 cell classes per kind of marrow.

One table, one row per class, one column per profile, so a reader sees a whole differential at a
glance and a lab can edit it (or pass its own mapping to `simulate_slide(class_weights=...)`).
Numbers are percentages of nucleated cells in the simulated smear, loosely following adult marrow
reference ranges and textbook pictures of each disease; they need not sum to 100 (they are
normalised). `balanced` gives every class the same weight and exists for classifier training sets.
"""

from __future__ import annotations

from types import MappingProxyType

from acquisition.catalogue import CLASS_CODES

PROFILE_NAMES: tuple[str, ...] = ("normal", "aml", "apl", "hcl", "lymphoma", "metastasis", "myeloma", "inv16")

# fmt: off
_TABLE: dict[str, tuple[float, ...]] = {
    #        normal  aml   apl   hcl  lymph  meta  myel  inv16
    "BLA": (1.5,   45.0,  4.0,  1.0,  1.0,  1.0,  1.0, 30.0),
    "APL": (0.0,    0.0, 45.0,  0.0,  0.0,  0.0,  0.0,  0.0),
    "HAC": (0.0,    0.0,  0.0, 35.0,  0.0,  0.0,  0.0,  0.0),
    "LYM": (0.0,    0.0,  0.0,  0.0, 35.0,  0.0,  0.0,  0.0),
    "TUM": (0.0,    0.0,  0.0,  0.0,  0.0, 22.0,  0.0,  0.0),
    "ABE": (0.0,    0.0,  0.0,  0.0,  0.0,  0.0,  0.0, 12.0),
    "APC": (0.0,    0.0,  0.0,  0.0,  0.0,  0.0, 30.0,  0.0),
    "PMO": (4.0,    2.0,  3.0,  3.0,  3.0,  3.5,  3.0,  2.0),
    "MYB": (11.0,   3.0,  3.0,  8.0,  8.0,  9.0,  8.0,  3.0),
    "MMZ": (10.0,   3.0,  2.0,  7.0,  7.0,  8.0,  7.0,  3.0),
    "NGB": (10.0,   3.0,  2.0,  7.0,  7.0,  8.0,  7.0,  3.0),
    "NGS": (12.0,   5.0,  3.0,  8.0,  8.0, 10.0,  8.0,  5.0),
    "EOS": (2.5,    1.0,  0.5,  1.5,  2.0,  2.0,  2.0,  6.0),
    "BAS": (0.5,    0.3,  0.2,  0.3,  0.3,  0.3,  0.3,  0.5),
    "MON": (2.0,    4.0,  1.0,  0.3,  1.5,  2.0,  1.5, 12.0),
    "LYT": (12.0,   6.0,  4.0, 10.0, 12.0,  8.0,  8.0,  5.0),
    "PLM": (1.5,    1.0,  1.0,  1.0,  1.5,  1.5, 10.0,  1.0),
    "PEB": (1.5,    1.0,  1.0,  1.5,  1.5,  1.5,  1.5,  1.0),
    "EBO": (22.0,   8.0,  5.0, 14.0, 14.0, 15.0, 12.0,  8.0),
    "MKC": (0.4,    0.2,  0.2,  0.3,  0.3,  0.3,  0.3,  0.2),
    "MAC": (0.8,    0.8,  0.5,  0.5,  0.8,  1.5,  0.8,  0.8),
    "KSC": (2.0,    4.0,  4.0,  2.0,  4.0,  2.5,  2.0,  3.0),
    "NIF": (2.0,    3.0,  3.0,  2.0,  2.0,  3.0,  2.0,  3.0),
}
# fmt: on

#: Profile → class code → relative frequency (read-only; copy it to change it).
PROFILES: MappingProxyType[str, MappingProxyType[str, float]] = MappingProxyType(
    {
        **{
            name: MappingProxyType({code: _TABLE[code][i] for code in CLASS_CODES})
            for i, name in enumerate(PROFILE_NAMES)
        },
        "balanced": MappingProxyType(dict.fromkeys(CLASS_CODES, 1.0)),
    }
)

#: Fraction of nucleated cells of each class that come in cohesive clusters (tumour cells stick).
CLUSTER_FRACTION: dict[str, float] = {"TUM": 0.8, "APC": 0.15, "PLM": 0.1, "EBO": 0.25, "MAC": 0.0}

#: Nucleated cells per 10 000 µm² at unit smear density (a FOV is about 22 800 µm²).
CELLULARITY: dict[str, float] = {
    "normal": 22.0,
    "aml": 30.0,
    "apl": 30.0,
    "hcl": 14.0,
    "lymphoma": 24.0,
    "metastasis": 22.0,
    "myeloma": 24.0,
    "inv16": 30.0,
    "balanced": 18.0,
}


def class_weights(profile: str) -> dict[str, float]:
    """Normalised class frequencies of a profile; a clear error names the known profiles."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    table = PROFILES[profile]
    total = sum(table.values())
    return {code: table[code] / total for code in CLASS_CODES}
