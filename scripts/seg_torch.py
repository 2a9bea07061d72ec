"""Train the compact segmentation UNet on a lent GPU, in PyTorch, and hand the weights to Keras.

Why PyTorch: the GPU machines this project is sometimes lent carry PyTorch but no TensorFlow, and
nothing can be installed there beyond a few wheels. The network here is a layer-for-layer replica of
`ai.architectures.seg.compact_unet` (same convolutions, batch norms with Keras' epsilon and momentum,
half-pixel bilinear upsampling, the same concatenation order) and the loss is
`ai.training.losses.segmentation_loss`; `to-keras` copies the trained arrays into the Keras model,
which is what ships and runs. `check` proves the two give the same maps on the same weights. With
`--arch star` the same body carries the star-convex cell head of `compact_star` and learns
`ai.training.losses.star_loss` on `ai.star` targets from each cell's whole outline (the shipped network).

The training data is rendered on the GPU machine's CPUs by the virtual Metafer itself (the same FOV
positions, JPEG quality, working scale and targets as `marrowlink make-dataset seg` + `ai.data.load_seg`),
while the GPU already trains on the slides that are ready; the loader is rebuilt as more arrive.
Validation seeds are never trained on, so `ai.training.seg.reselect_thresholds` can choose thresholds
on them afterwards.

    python3 scripts/seg_torch.py train --arch star --out OUT --seeds 1000:1450 --val-seeds 1270:1300 --minutes 8
    python3 scripts/seg_torch.py forward --weights OUT --input x.npy --output y.npy      # torch side
    python scripts/seg_torch.py check --weights OUT --input x.npy --torch-output y.npy  # Keras side
    python scripts/seg_torch.py to-keras --weights OUT --out ai/weights/seg
    python scripts/seg_torch.py from-keras --model ai/weights/seg --out INIT   # then train --init INIT

Research use only, not for clinical diagnosis.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCALE = 0.25  # working scale of the shipped model (card: training.scale)
JPEG_QUALITY = 90  # as make-dataset writes FOVs
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # Keras BatchNormalization(epsilon=1e-3, momentum=0.99)
PART_BYTES = 12 * 2**20  # weight files come back from the GPU machine in parts of at most 16 MiB


def parse_seeds(text: str) -> list[int]:
    """`A:B` (B exclusive), several joined by commas."""
    seeds: list[int] = []
    for part in text.split(","):
        a, b = part.split(":")
        seeds += range(int(a), int(b))
    return seeds


# --- data -------------------------------------------------------------------------------------


def render_seed(seed: int, star: bool = False) -> list[tuple[np.ndarray, object, int]]:
    """One slide's dataset FOVs at working scale: (image uint8 RGB, targets, seed), as `make-dataset seg`
    writes them and `ai.data` reads them: uint8 (h, w, 3) foreground, centre and contact channels, or
    with `star` the (centre map, poles) of `ai.data.star_example`."""
    from acquisition.datasets import _jpeg, fov_positions, profile_for, simulate_slide
    from ai.data import seg_example, star_example

    slide = simulate_slide(seed, profile_for(seed, None))
    out: list[tuple[np.ndarray, object, int]] = []
    for pos in fov_positions(slide, 4, explore=0.3):
        fov = slide.render_fov(pos.x_um, pos.y_um)
        image = _jpeg(fov.image, JPEG_QUALITY)
        if star:
            small, centre, poles = star_example(image, fov.outline_layers(), SCALE)
            out.append((small, (centre, poles), seed))
        else:
            small, target = seg_example(image, fov.instance_mask, SCALE, contacts=True)
            out.append((small, target, seed))
    return out


def pack(args: argparse.Namespace) -> None:
    """A `make-dataset seg` folder at working scale, small enough to travel (JPEG + 16-bit id PNG)."""
    import cv2

    from ai.data import read_ids, read_rgb, to_working_scale

    src, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(parse_seeds(args.seeds))
    files = sorted(f.name for f in (src / "images").glob("*.png") if int(f.name.split("_")[0]) in wanted)
    for name in files:
        small, ids = to_working_scale(read_rgb(src / "images" / name), read_ids(src / "masks" / name), SCALE)
        if ids.max() > 65535:
            raise ValueError(f"{name}: too many instances for a 16-bit id image")
        stem = name.removesuffix(".png")
        cv2.imwrite(str(out / f"{stem}.jpg"), small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        cv2.imwrite(str(out / f"{stem}.ids.png"), ids.astype(np.uint16))
    print(f"packed {len(files)} FOVs into {out}")


def _read_one(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """A packed FOV (already at working scale) with its three target channels."""
    import cv2

    from ai.data import seg_example

    image = np.ascontiguousarray(cv2.imread(str(path))[..., ::-1])
    ids = cv2.imread(str(path.with_suffix(".ids.png")), cv2.IMREAD_UNCHANGED).astype(np.int32)
    _, target = seg_example(image, ids, 1.0, contacts=True)
    return image, target, int(path.name.split("_")[0])


def read_packed(folder: Path, pool) -> list[tuple[np.ndarray, np.ndarray, int]]:
    return pool.map(_read_one, sorted(folder.glob("*.jpg")))


def _crops_dataset(items, crop: int, base_seed: int, hard: float):
    import torch

    from ai.augment import segmentation_crop, star_crop

    class Crops(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            rng = np.random.default_rng([base_seed, info.id if info else 0, int(time.time() * 1e6) % 2**31])
            while True:
                image, target, _ = items[int(rng.integers(len(items)))]
                if isinstance(target, tuple):
                    yield star_crop(rng, image, *target, crop, True)
                else:
                    yield segmentation_crop(rng, image, target, crop, True, hard)

    return Crops()


# --- network ----------------------------------------------------------------------------------


def compact_unet_torch(width: int, depth: int = 4, outputs: int = 2):
    """Layer-for-layer the Keras `compact_unet` (2 outputs) or `compact_star` (1 + rays); modules are
    created in the Keras layers' order. Returns logits (star: channel 0 a logit, the rays as they are)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def block(cin: int, f: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, f, 3, padding=1, bias=False), nn.BatchNorm2d(f, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Conv2d(f, f, 3, padding=1, bias=False), nn.BatchNorm2d(f, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )  # fmt: skip

    class CompactUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [width * 2**i for i in range(depth + 1)]
            self.down = nn.ModuleList([block(3 if i == 0 else chans[i - 1], chans[i]) for i in range(depth)])
            self.mid = block(chans[depth - 1], chans[depth])
            self.up = nn.ModuleList([block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))])
            self.head = nn.Conv2d(width, outputs, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # uint8-range NCHW in, logits out
            x = x / 255.0
            skips = []
            for b in self.down:
                x = b(x)
                skips.append(x)
                x = F.max_pool2d(x, 2)
            x = self.mid(x)
            for b, skip in zip(self.up, reversed(skips), strict=True):
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                x = b(torch.cat([x, skip], dim=1))
            return self.head(x)

    return CompactUNet()


def keras_order_arrays(model) -> list[np.ndarray]:
    """The torch parameters as Keras' Conv2D / BatchNormalization weights, in layer creation order."""
    from torch import nn

    arrays = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            arrays.append(m.weight.detach().float().cpu().numpy().transpose(2, 3, 1, 0))  # OIHW -> HWIO
            if m.bias is not None:
                arrays.append(m.bias.detach().float().cpu().numpy())
        elif isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean, m.running_var):
                arrays.append(t.detach().float().cpu().numpy())
    return arrays


def load_torch_arrays(model, arrays: list[np.ndarray]) -> None:
    import torch
    from torch import nn

    it = iter(arrays)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.from_numpy(next(it).transpose(3, 2, 0, 1).copy()))
                if m.bias is not None:
                    m.bias.copy_(torch.from_numpy(next(it)))
            elif isinstance(m, nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean, m.running_var):
                    t.copy_(torch.from_numpy(next(it)))


def save_arrays(folder: Path, arrays: list[np.ndarray], meta: dict) -> None:
    """Write the arrays in parts small enough to come back from the GPU machine, then the metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for i, a in enumerate(arrays):
        if size + a.nbytes > PART_BYTES and parts[-1]:
            parts.append({})
            size = 0
        parts[-1][f"a{i:04d}"] = a
        size += a.nbytes
    for k, part in enumerate(parts):
        tmp = folder / f"weights_{k}.tmp.npz"
        np.savez(tmp, **part)
        os.replace(tmp, folder / f"weights_{k}.npz")
    (folder / "meta.json").write_text(json.dumps({**meta, "parts": len(parts), "arrays": len(arrays)}, indent=1))


def load_arrays(folder: Path) -> tuple[list[np.ndarray], dict]:
    if not (folder / "meta.json").exists():
        raise SystemExit(f"{folder}: no meta.json; give the `best` folder that `train` writes")
    meta = json.loads((folder / "meta.json").read_text())
    found: dict[str, np.ndarray] = {}
    for k in range(meta["parts"]):
        with np.load(folder / f"weights_{k}.npz") as z:
            found.update({name: z[name] for name in z.files})
    return [found[f"a{i:04d}"] for i in range(meta["arrays"])], meta


# --- loss -------------------------------------------------------------------------------------


def tversky(t, q, a: float):
    """1 - Tversky index, false negatives weighted `a` (`ai.training.losses.tversky`)."""
    tp = (t * q).sum()
    fn = (t * (1 - q)).sum()
    fp = ((1 - t) * q).sum()
    return 1 - (tp + 1) / (tp + a * fn + (1 - a) * fp + 1)


def segmentation_loss(logits, y):
    """`ai.training.losses.segmentation_loss` in torch (BCE from logits: the same value, stabler)."""
    import torch
    from torch.nn import functional as F

    from ai.training.losses import RECALL_WEIGHT, RIM_WEIGHT

    logits = logits.float()
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    fg_t, c_t = y[:, 0], y[:, 1]
    fg = tversky(fg_t, p[:, 0], RECALL_WEIGHT / (1 + RECALL_WEIGHT)) + bce[:, 0].mean()
    weights = 1.0 + RIM_WEIGHT * ((fg_t > 0.5) & (c_t < 0.3)).float()
    centre = tversky(c_t, p[:, 1], 0.5) + (weights * bce[:, 1]).sum() / weights.sum()
    return fg + 2.0 * centre


def star_loss(logits, y):
    """`ai.training.losses.star_loss` in torch (BCE from the centre logit)."""
    from torch.nn import functional as F

    from ai.training.losses import RAY_WEIGHT

    logits = logits.float()
    c_t, weight = y[:, 0], y[:, 1]
    centre = F.binary_cross_entropy_with_logits(logits[:, 0], c_t)
    ray_error = (logits[:, 1:] - y[:, 2:]).abs().mean(dim=1)
    return centre + RAY_WEIGHT * (weight * ray_error).sum() / (weight.sum() + 1e-6)


# --- train ------------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> None:
    import multiprocessing as mp

    import cv2
    import torch

    from ai.augment import segmentation_crop, star_crop
    from ai.star import RAYS

    cv2.setNumThreads(0)  # no OpenCV thread pool to inherit half-locked into forked workers
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    log = open(out / "log.txt", "a")  # noqa: SIM115 - one log for the whole run

    def say(msg: str) -> None:
        line = f"[{time.time() - t0:7.1f}s] {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    val_seeds = parse_seeds(args.val_seeds)
    train_seeds = [s for s in parse_seeds(args.seeds) if s not in set(val_seeds)]
    order = val_seeds + train_seeds  # validation first: it is needed from the first check on
    train_items: list = []
    val_items: list = []

    def arrived(result) -> None:
        (val_items if result and result[0][2] in set(val_seeds) else train_items).extend(result)

    pool = mp.get_context("fork").Pool(args.gen_procs)
    if args.data:  # packed FOVs that travelled with the repository; the other seeds are rendered
        packed = set(order)
        for item in read_packed(Path(args.data), pool):
            if item[2] in packed:
                arrived([item])
        have = {item[2] for item in train_items + val_items}
        order = [s for s in order if s not in have]
        say(f"packed: {len(val_items)} validation, {len(train_items)} training FOVs; {len(order)} seeds to render")
    star = args.arch == "star"
    pending = [pool.apply_async(render_seed, (s, star), callback=arrived) for s in order]
    pool.close()

    def short() -> bool:
        return len(val_items) < 4 * len(val_seeds) or len(train_items) < 4 * args.min_train_seeds

    while pending and not all(p.ready() for p in pending) and short():
        time.sleep(0.5)
        if any(p.ready() and not p.successful() for p in pending):
            next(p for p in pending if p.ready() and not p.successful()).get()  # raises the worker's error
    say(f"first data: {len(val_items)} validation, {len(train_items)} training FOVs")

    rng = np.random.default_rng(7)
    val_x, val_y = [], []
    for image, target, _ in val_items:
        for _ in range(2):
            if star:
                x, y = star_crop(rng, image, *target, args.crop, False)
            else:
                x, y = segmentation_crop(rng, image, target, args.crop, False)
                y = y.astype(np.float32) / 255.0
            val_x.append(x)
            val_y.append(y)
    vx = torch.from_numpy(np.stack(val_x)).permute(0, 3, 1, 2).float()
    vy = torch.from_numpy(np.stack(val_y)).permute(0, 3, 1, 2).float()
    loss_fn = star_loss if star else segmentation_loss

    model = compact_unet_torch(args.width, args.depth, 1 + RAYS if star else 2)
    if star:  # rays start near a typical cell radius (about 20 px at working scale), not at e^0 = 1 px
        with torch.no_grad():
            model.head.bias[1:].fill_(3.0)
    if args.init:
        arrays, meta = load_arrays(Path(args.init))
        if (meta["width"], meta["depth"]) != (args.width, args.depth):
            raise SystemExit(f"--init {args.init} is width {meta['width']}, depth {meta['depth']}")
        load_torch_arrays(model, arrays)
    model = model.to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    budget = args.minutes * 60.0 - (time.time() - t0)
    start = time.time()

    def lr_at(frac: float, step: int) -> float:
        warm = min(1.0, (step + 1) / args.warmup)
        return args.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    def loader(n_items: int):
        workers = args.workers if all(p.ready() for p in pending) else max(2, args.workers - args.gen_procs)
        ds = _crops_dataset(list(train_items[:n_items]), args.crop, args.seed + n_items, args.hard)
        return workers, iter(torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=workers,
                                                         pin_memory=True, prefetch_factor=4))  # fmt: skip

    def validate() -> float:
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=dev.type == "cuda"):
            for i in range(0, len(vx), 64):
                x = vx[i : i + 64].to(dev).contiguous(memory_format=torch.channels_last)
                y = vy[i : i + 64].to(dev)
                total += float(loss_fn(model(x), y)) * len(x)
                n += len(x)
        model.train()
        return total / n

    n_items = len(train_items)
    workers, batches = loader(n_items)
    say(f"training on {n_items} FOVs with {workers} loader workers, {budget:.0f} s budget")
    history: dict[str, list[float]] = {"step": [], "loss": [], "val_loss": [], "seconds": [], "train_fovs": []}
    best, step, since, loss_sum = float("inf"), 0, 0, torch.zeros((), device=dev)

    def checkpoint(frac: float) -> None:
        nonlocal best, since, loss_sum
        v = validate()
        history["step"].append(step)
        history["loss"].append(float(loss_sum) / max(since, 1))
        history["val_loss"].append(v)
        history["seconds"].append(time.time() - t0)
        history["train_fovs"].append(n_items)
        since, loss_sum = 0, torch.zeros((), device=dev)
        mark = ""
        if v < best:
            best, mark = v, " *"
            meta = {"arch": args.arch, "rays": RAYS if star else None,
                    "width": args.width, "depth": args.depth, "step": step, "val_loss": v,
                    "train_seeds": args.seeds, "val_seeds": args.val_seeds, "batch": args.batch,
                    "crop": args.crop, "lr": args.lr, "history": history, "init": args.init,
                    "hard": args.hard, "data": args.data, "val_every": args.val_every,
                    "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}  # fmt: skip
            save_arrays(out / "best", keras_order_arrays(model), meta)
        say(f"step {step} lr {lr_at(frac, step):.2e} loss {history['loss'][-1]:.4f} val {v:.4f}{mark}")

    while True:
        frac = (time.time() - start) / budget
        if frac >= 1.0:
            if since:  # steps since the last check
                checkpoint(1.0)
            break
        done = all(p.ready() for p in pending)
        if len(train_items) > n_items and (step % args.reload_every == 0 or done):
            del batches
            n_items = len(train_items)
            workers, batches = loader(n_items)
            say(f"step {step}: loader rebuilt on {n_items} FOVs, {workers} workers")
        x, y = next(batches)
        x = x.to(dev, non_blocking=True).permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
        y = y.to(dev, non_blocking=True).permute(0, 3, 1, 2).float()
        if not star:
            y = y / 255.0
        for g in opt.param_groups:
            g["lr"] = lr_at(frac, step)
        with torch.autocast("cuda", torch.bfloat16, enabled=dev.type == "cuda"):
            logits = model(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
        since += 1
        step += 1
        if step % args.val_every == 0:
            checkpoint(frac)
    (out / "history.json").write_text(json.dumps(history))
    say(f"done: {step} steps, best val_loss {best:.4f}, {len(train_items)} training FOVs")
    pool.terminate()


# --- checks and conversion (here, beside TensorFlow) -------------------------------------------


def forward(args: argparse.Namespace) -> None:
    import torch

    arrays, meta = load_arrays(Path(args.weights))
    star = meta.get("arch") == "star"
    model = compact_unet_torch(meta["width"], meta["depth"], 1 + meta["rays"] if star else 2)
    load_torch_arrays(model, arrays)
    model.eval()
    x = torch.from_numpy(np.load(args.input)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        y = model(x)
        y = torch.cat([torch.sigmoid(y[:, :1]), y[:, 1:]], 1) if star else torch.sigmoid(y)
        y = y.permute(0, 2, 3, 1).numpy()
    np.save(args.output, y)


def array_layers(model) -> list:
    """The Keras layers that hold the replica's arrays (convolutions and batch norms), in the order the
    torch modules were created and the arrays are stored."""
    import tf_keras as keras

    kinds = keras.layers.Conv2D | keras.layers.BatchNormalization
    return [layer for layer in model.layers if isinstance(layer, kinds)]


def keras_model(folder: Path):
    """The Keras compact UNet with the torch arrays loaded."""
    import tf_keras as keras

    from ai.architectures import build

    arrays, meta = load_arrays(folder)
    keras.backend.clear_session()
    if meta.get("arch") == "star":
        model = build("seg", "compact_star", width=meta["width"], depth=meta["depth"], rays=meta["rays"])
    else:
        model = build("seg", "compact", width=meta["width"], depth=meta["depth"])
    layers = array_layers(model)
    want = sum(len(layer.weights) for layer in layers)
    if want != len(arrays):
        raise ValueError(f"{folder}: {len(arrays)} arrays for a model of {want}")
    it = iter(arrays)
    for layer in layers:
        layer.set_weights([next(it) for _ in layer.weights])
    return model, meta


def from_keras(args: argparse.Namespace) -> None:
    """Arrays of a shipped Keras model folder, for `train --init` (a fine-tune of the shipped network)."""
    from ai.models import load_model

    model, card = load_model(Path(args.model), "seg")
    if card.arch not in ("compact", "compact_star"):
        raise SystemExit(f"{args.model}: a {card.arch} network; only compact and compact_star have a torch replica")
    arrays = [w for layer in array_layers(model) for w in layer.get_weights()]
    star = card.arch == "compact_star"
    params = card.arch_params
    meta = {"arch": "star" if star else "unet", "rays": params.get("rays") if star else None,
            "width": params.get("width", 32), "depth": params.get("depth", 4), "from_keras": str(args.model),
            "weights_sha256": card.weights_sha256}  # fmt: skip
    save_arrays(Path(args.out), arrays, meta)
    print(f"wrote {len(arrays)} arrays to {args.out}")


def check(args: argparse.Namespace) -> None:
    model, _ = keras_model(Path(args.weights))
    x = np.load(args.input).astype(np.float32)
    ours = model.predict(x, verbose=0)
    theirs = np.load(args.torch_output)
    diff = float(np.abs(ours - theirs).max())
    print(json.dumps({"max_abs_diff": diff, "shape": list(ours.shape)}))
    if diff > 1e-3:
        raise SystemExit(f"Keras and torch disagree by {diff}")


def to_keras(args: argparse.Namespace) -> None:
    """Write a model folder (weights, card, training curve) from torch arrays; thresholds are chosen
    afterwards on the validation seeds (`ai.training.seg.reselect_thresholds`)."""
    from ai.models import ModelCard, save_model
    from ai.plots import training_curve

    model, meta = keras_model(Path(args.weights))
    base = ModelCard.load(Path(args.card_from))
    kept = ("profiles", "generator_version", "augmentation", "source_pixel_size_um", "scale", "loss")
    whole = Path(args.weights).parent / "history.json"  # the whole run; meta holds it up to the best step
    history = json.loads(whole.read_text()) if whole.exists() else meta["history"]
    training = {k: base.training[k] for k in kept if k in base.training}
    every = meta.get("val_every", 250)  # runs before 2026-11-26 validated every 250 steps and did not say
    training.update({
        "framework": "PyTorch replica of compact_unet (scripts/seg_torch.py), arrays copied into Keras",
        "device": meta.get("device"),
        "data_dir": f"rendered during training by the virtual Metafer: seeds {meta['train_seeds']} without "
                    f"{meta['val_seeds']}, 4 FOVs each at make-dataset seg's positions (30 % random), JPEG q90, "
                    "1/4 scale",
        "seeds": meta["train_seeds"], "validation_seeds": meta["val_seeds"],
        "validation": f"2 fixed unaugmented crops per FOV of the validation seeds, every {every} steps",
        "best_step": meta["step"], "steps_run": history["step"][-1],
        "batch_size": meta["batch"], "input_size": meta["crop"],
        "learning_rate": f"{meta['lr']} (Adam), cosine decay over the time budget after a linear warm-up",
        "best_val_loss": meta["val_loss"],
        "weights_init": meta.get("init") or "random (PyTorch default initialisation)",
        "hard_crop_share": meta.get("hard", 0.0),
    })  # fmt: skip
    star = meta.get("arch") == "star"
    arch, params = ("compact_star", {"width": meta["width"], "rays": meta["rays"]}) if star else (
        "compact", {"width": meta["width"]})  # fmt: skip
    thresholds = {"centre": 0.5, "seed_distance_um": 1.0, "nms_iou": 0.5, "min_area_um2": 12.0, "tile": 512}
    if star:
        training["loss"] = "centre: BCE against the soft ramp; rays: L1 of log lengths on pole discs"
        training["framework"] = training["framework"].replace("compact_unet", "compact_star")
        if not meta.get("init"):
            training["weights_init"] += "; ray-length biases at 3, e^3 = 20 px"
    card = ModelCard(kind="seg", arch=arch, classes=base.classes, input_size=meta["crop"],
                     pixel_size_um=base.pixel_size_um, arch_params=params,
                     thresholds=thresholds if star else dict(base.thresholds), training=training)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(history))
    curve = {"loss": history["loss"], "val_loss": history["val_loss"]}
    training_curve(curve, out / "training_curve.png", title=f"seg/{arch} width {meta['width']}, per {every} steps")
    save_model(model, card, out)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--seeds", default="1000:1400")
    t.add_argument("--val-seeds", default="1270:1300")
    t.add_argument(
        "--arch",
        choices=("unet", "star"),
        default="unet",
        help="unet: foreground + centre maps (compact); star: star-convex cells (compact_star)",
    )
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--depth", type=int, default=4)
    t.add_argument("--minutes", type=float, default=7.0)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--crop", type=int, default=256)
    t.add_argument("--lr", type=float, default=1.5e-3)
    t.add_argument("--warmup", type=int, default=300)
    t.add_argument("--gen-procs", type=int, default=10)
    t.add_argument("--workers", type=int, default=14)
    t.add_argument("--min-train-seeds", type=int, default=20)
    t.add_argument("--reload-every", type=int, default=500)
    t.add_argument("--val-every", type=int, default=250)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cuda")
    t.add_argument("--data", help="packed FOVs (pack) instead of rendering them here")
    t.add_argument("--init", help="start from these arrays (a fine-tune)")
    t.add_argument("--hard", type=float, default=0.0, help="share of crops centred on cell contacts")
    required = {
        "pack": ("data", "out", "seeds"),
        "forward": ("weights", "input", "output"),
        "check": ("weights", "input", "torch-output"),
        "to-keras": ("weights", "out"),
        "from-keras": ("model", "out"),
    }
    for name, options in required.items():
        sp = sub.add_parser(name)
        for option in options:
            sp.add_argument(f"--{option}", required=True)
        if name == "to-keras":
            sp.add_argument("--card-from", default="ai/weights/seg")
    args = p.parse_args()
    commands = {"train": train, "forward": forward, "check": check, "to-keras": to_keras, "from-keras": from_keras}
    commands["pack"] = pack
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
