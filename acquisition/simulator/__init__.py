"""The virtual Metafer: a deterministic generator of MGG bone-marrow smears and their 10x/40x images."""

from acquisition.simulator import optics
from acquisition.simulator.fov import AmodalMask, CellRecord, DistractorRecord, Fov
from acquisition.simulator.overview import GridTile, Overview
from acquisition.simulator.profiles import PROFILE_NAMES, PROFILES
from acquisition.simulator.scanner import VIRTUAL_STAGE_ORIGIN_UM, write_metafer_export
from acquisition.simulator.virtual import GENERATOR_VERSION, VirtualSlide, simulate_slide

__all__ = [
    "GENERATOR_VERSION",
    "PROFILES",
    "PROFILE_NAMES",
    "VIRTUAL_STAGE_ORIGIN_UM",
    "AmodalMask",
    "CellRecord",
    "DistractorRecord",
    "Fov",
    "GridTile",
    "Overview",
    "VirtualSlide",
    "optics",
    "simulate_slide",
    "write_metafer_export",
]
