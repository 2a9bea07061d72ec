"""May-Grünwald-Giemsa colours, per-slide stain variation, and the camera model.

Objects are painted as optical density (OD, Beer–Lambert: I = I0 · 10^-OD per RGB channel), so
overlapping cells, red cells and granules darken each other the way dye layers do on glass. Each
named colour is the transmission of one unit of that structure (an RGB triple as seen on a
well-stained smear), turned into OD once per slide after the slide's stain variation is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

#: Transmission colours (RGB 0..255) of one unit of each structure on a typical MGG smear.
#: Eosin-dominated (pink/orange) entries follow the eosin gain, azure-dominated ones the azure gain.
BASE_COLOURS: dict[str, tuple[tuple[int, int, int], str]] = {
    "plasma": ((242, 238, 244), "azure"),  # background proteins: faint blue-grey
    "rbc": ((236, 178, 172), "eosin"),  # salmon-pink haemoglobin
    "nucleus": ((150, 105, 175), "azure"),  # euchromatin: violet
    "chromatin": ((120, 85, 160), "azure"),  # heterochromatin clumps added on top of "nucleus"
    "nucleolus": ((200, 195, 225), "azure"),  # pale blue, replaces chromatin
    "cyto_blue": ((150, 170, 220), "azure"),  # basophilic (ribosome-rich) cytoplasm
    "cyto_grey": ((198, 200, 218), "azure"),  # monocyte ground-glass grey-blue
    "cyto_sky": ((185, 205, 232), "azure"),  # lymphocyte sky blue
    "cyto_lilac": ((232, 214, 226), "eosin"),  # neutrophil pink-lilac
    "cyto_pink": ((236, 200, 200), "eosin"),  # orthochromatic erythroblast / megakaryocyte
    "gran_azur": ((165, 80, 135), "azure"),  # azurophilic (primary) granules: red-purple
    "gran_fine": ((205, 165, 195), "eosin"),  # neutrophil (secondary) granules: fine lilac dust
    "gran_eos": ((236, 128, 78), "eosin"),  # eosinophil granules: orange-red
    "gran_baso": ((70, 45, 105), "azure"),  # basophil granules: purple-black
    "gran_abe": ((105, 60, 125), "azure"),  # inv(16) dark violet pro-eosinophilic granules
    "auer": ((170, 60, 120), "azure"),  # Auer rods: red-purple needles
    "platelet": ((175, 125, 195), "azure"),  # platelet granulomere
    "platelet_halo": ((215, 205, 230), "azure"),  # platelet hyalomere
    "precipitate": ((95, 75, 140), "azure"),  # stain precipitate: blue-violet crystals
    "debris": ((150, 140, 130), "eosin"),  # dust, fibres: grey-brown
    "bubble": ((120, 120, 125), "eosin"),  # refractile rim of an air bubble
    "vacuole": ((255, 255, 255), "eosin"),  # clears cytoplasm (negative OD applied by the painter)
    "smudge": ((175, 140, 195), "azure"),  # smeared chromatin of a ruptured cell
}


#: Display gamma of the camera's tone curve; colours above are as displayed, so they are linearised first.
GAMMA = 2.2


def rgb_to_od(rgb: tuple[int, int, int] | np.ndarray) -> np.ndarray:
    """Optical density of a displayed transmission colour (RGB 0..255), linearised by `GAMMA`."""
    arr = np.clip(np.asarray(rgb, np.float64), 1.0, 255.0)
    return (-GAMMA * np.log10(arr / 255.0)).astype(np.float32)


@dataclass(frozen=True)
class SlideStain:
    """One slide's staining and illumination: the same for its overview and all its FOVs."""

    colours: dict[str, np.ndarray]
    lamp: np.ndarray  # I0 per channel (0..1), a slightly warm or cool white
    eosin_gain: float
    azure_gain: float
    camera_mix: np.ndarray = field(repr=False)  # 3x3 colour response of the camera

    def od(self, name: str) -> np.ndarray:
        return self.colours[name]


def random_stain(rng: np.random.Generator) -> SlideStain:
    """Stain batch, staining time and buffer pH vary: some slides stain bluer, some pinker, some pale."""
    eosin = float(rng.uniform(0.75, 1.3))
    azure = float(rng.uniform(0.75, 1.3))
    overall = float(rng.uniform(0.85, 1.15))
    colours: dict[str, np.ndarray] = {}
    for name, (rgb, dye) in BASE_COLOURS.items():
        od = rgb_to_od(rgb)
        # Small per-colour hue jitter: a pH shift moves azure towards blue or purple.
        od = od * (1.0 + rng.normal(0.0, 0.04, 3)).astype(np.float32)
        colours[name] = (od * overall * (eosin if dye == "eosin" else azure)).astype(np.float32)
    # White balance differs between microscopes and cameras: warm halogen, cool LED, grey exposures.
    lamp = np.array([1.0, 0.99, 0.97]) * rng.uniform(0.88, 1.0) + rng.normal(0.0, 0.025, 3)
    mix = np.eye(3) + rng.normal(0.0, 0.025, (3, 3))
    mix /= mix.sum(axis=1, keepdims=True)
    return SlideStain(colours, np.clip(lamp, 0.78, 1.0).astype(np.float32), eosin, azure, mix.astype(np.float32))


def vignette(shape: tuple[int, int], strength: float, centre: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """Radial fall-off of the illumination (Köhler is never perfect); 1.0 at the centre."""
    h, w = shape
    y = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - centre[1])[:, None]
    x = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - centre[0])[None, :]
    r2 = x * x + y * y
    return (1.0 - strength * r2 / 0.5).astype(np.float32)


def expose(
    od: np.ndarray,
    stain: SlideStain,
    rng: np.random.Generator,
    *,
    blur_sigma_px: float,
    illumination: np.ndarray | None,
    full_well: float = 2500.0,
    read_noise: float = 2.0,
    gamma: float = 1.0 / GAMMA,
) -> np.ndarray:
    """OD image → 8-bit RGB as a camera sees it: Beer–Lambert, lens blur, shot + read noise, gamma.

    Blur is applied to intensity (incoherent imaging), not to OD. `full_well` sets the shot noise:
    photons per pixel at full white.
    """
    intensity = np.exp(od * np.float32(-np.log(10.0)))
    intensity *= stain.lamp[None, None, :]
    if illumination is not None:
        intensity *= illumination[:, :, None]
    if blur_sigma_px > 0.3:
        intensity = cv2.GaussianBlur(intensity, (0, 0), blur_sigma_px)
    intensity = cv2.transform(intensity, stain.camera_mix)
    # Shot noise ~ sqrt(signal) approximated as Gaussian; read noise constant.
    sigma = np.sqrt(np.maximum(intensity, 0.0) * np.float32(full_well) + np.float32(read_noise**2))
    sigma *= np.float32(1.0 / full_well)
    intensity += rng.standard_normal(intensity.shape, dtype=np.float32) * sigma
    # Camera tone curve: a gentle gamma with the white point a little below saturation.
    np.clip(intensity * np.float32(1.0 / 0.97), 0.0, 1.0, out=intensity)
    out = cv2.pow(intensity, gamma) * np.float32(255.0)
    return (out + 0.5).astype(np.uint8)
