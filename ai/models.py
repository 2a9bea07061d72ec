"""Model cards and the model registry: load a model folder, verify it, keep it loaded.

A model folder holds `model.json` (the card) and the weights file it names. Only weights are stored;
the network is rebuilt from the card's `arch` and `arch_params`, so a weights file that does not fit
the card (wrong shape) or that changed since training (sha256) is refused with an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ai.runtime import start_tensorflow

INTENDED_USE = "Research use only, not for clinical diagnosis."
CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.h5"
DEFAULT_ROOT = Path(__file__).parent / "weights"
KINDS = ("aoi", "seg", "cls")


class ModelError(RuntimeError):
    """A model folder that cannot be used; the message names the file and what to do."""


@dataclass
class ModelCard:
    """What a trained model is, what it was trained on, how well it did and how to run it."""

    kind: str
    arch: str
    classes: list[str]
    input_size: int
    pixel_size_um: float
    arch_params: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_file: str = WEIGHTS_FILE
    weights_sha256: str = ""
    n_parameters: int = 0
    intended_use: str = INTENDED_USE
    versions: dict[str, str] = field(default_factory=dict)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CARD_FILE
        path.write_text(json.dumps(asdict(self), indent=2, default=_json_default) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> ModelCard:
        path = Path(folder) / CARD_FILE
        if not path.exists():
            raise ModelError(f"{path}: no model card; train one with `marrowlink train` or pass another --model")
        try:
            data = json.loads(path.read_text())
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{path}: unreadable model card ({exc})") from exc


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_model_dir(kind: str) -> Path:
    """The shipped model of a kind, `ai/weights/<kind>/`; a clear error when none is shipped."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
    folder = DEFAULT_ROOT / kind
    if not (folder / CARD_FILE).exists():
        raise ModelError(
            f"no default {kind} model in {folder}: train one with "
            f"`marrowlink train {kind} --data DIR --out {folder}` (or pass --model DIR)"
        )
    return folder


def build_from_card(card: ModelCard):
    from ai.architectures import build

    return build(card.kind, card.arch, **card.arch_params)


def load_model(folder: Path | str | None, kind: str | None = None):
    """Rebuild, verify and load a model folder; returns (keras model, card). Cached per folder + sha."""
    folder = Path(folder) if folder is not None else default_model_dir(kind or "")
    card = ModelCard.load(folder)
    if kind is not None and card.kind != kind:
        raise ModelError(f"{folder / CARD_FILE}: a {card.kind} model, but a {kind} model is needed")
    weights = folder / card.weights_file
    if not weights.exists():
        raise ModelError(f"{weights}: weights file named by the model card is missing")
    actual = sha256_file(weights)
    if card.weights_sha256 and actual != card.weights_sha256:
        raise ModelError(
            f"{weights}: sha256 {actual[:16]}… does not match the model card's {card.weights_sha256[:16]}… "
            "(corrupt or replaced weights; retrain or restore the file)"
        )
    key = (str(folder.resolve()), actual)
    start_tensorflow()
    with _LOCK:
        if key not in _CACHE:
            model = build_from_card(card)
            try:
                model.load_weights(str(weights))
            except Exception as exc:  # h5py/keras raise many types for corrupt or mismatched files
                raise ModelError(
                    f"{weights}: cannot load these weights into a {card.kind}/{card.arch} network "
                    f"(corrupt file or wrong shape for the model card): {type(exc).__name__}: {exc}"
                ) from exc
            _CACHE[key] = model
        return _CACHE[key], card


_CACHE: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def save_model(model, card: ModelCard, folder: Path | str) -> Path:
    """Write the weights and the card (with the weights' sha256 and parameter count) into `folder`."""
    import numpy as np
    import tensorflow as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / card.weights_file
    model.save_weights(str(weights))
    card.weights_sha256 = sha256_file(weights)
    card.n_parameters = int(sum(np.prod(w.shape) for w in model.weights))
    card.versions = {"tensorflow": tf.__version__, **card.versions}
    return card.save(folder)
