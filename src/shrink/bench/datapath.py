"""Section 3 of the benchmark: images/s of the pipeline's training loop over prepared tensors against the
course's PIL-per-item loader (``MyDataset``) over the same images, same model and batch size.

The course's side needs its own small loop (a DataLoader of PIL items) and a Food-11 folder written from
the prepared tensors; both exist only to be measured here.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..batches import epoch_batches
from ..config import TrainParams
from ..data import Split, food11_label, load_meta, load_split, normalizer
from ..models import StudentNet
from ..runtime import interleaved
from ..train import cross_entropy, make_optimizer, train_one_epoch
from .targets import ratio


def write_food11_folder(images: torch.Tensor, labels: torch.Tensor, root: str | Path, val: int = 0) -> list[Path]:
    """Write uint8 (N, 3, S, S) images as a Food-11 folder: ``training/<label>_<i>.jpg``.

    The first ``val`` images are also written to ``validation/`` (``prepare`` wants that folder).
    Returns the training files, in the order of ``images``.

    Args:
        images: uint8 images (N, 3, S, S).
        labels: int labels (N,).
        root: the folder to create (``training/`` and ``validation/`` inside).
        val: how many images to write to ``validation/`` as well.
    """
    from PIL import Image

    root = Path(root)
    files = []
    for split, count in (("training", len(labels)), ("validation", min(val, len(labels)))):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            arr = images[i].permute(1, 2, 0).contiguous().numpy()
            path = folder / f"{int(labels[i])}_{i}.jpg"
            Image.fromarray(arr, "RGB").save(path, quality=95)
            if split == "training":
                files.append(path)
    return files


class SeedStyleDataset(torch.utils.data.Dataset):
    """The course's ``MyDataset``: glob ``*.jpg`` of a Food-11 folder, a PIL image and a transform per item.

    ``preload=True`` is what the course does: every image is opened and decoded at init and kept as a
    PIL image, so an item costs the transforms only. ``preload=False`` opens and decodes the file per item.
    """

    def __init__(self, folder: str | Path, transform: Callable, preload: bool = True) -> None:
        from PIL import Image

        self.files = sorted(Path(folder).glob("*.jpg"))
        self.labels = [food11_label(f) for f in self.files]  # prepare's reading of the same names
        self.transform = transform
        self.images = None
        if preload:
            self.images = []
            for f in self.files:
                with Image.open(f) as img:
                    img.load()
                    self.images.append(img.copy())

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        if self.images is not None:
            image = self.images[i]
        else:
            with Image.open(self.files[i]) as img:
                image = img.convert("RGB")
        return self.transform(image), self.labels[i]


def seed_transform(image_size: int, padding: int, mean: Sequence[float], std: Sequence[float]):
    """The course's training transforms: random crop with padding, random flip, to tensor, normalise."""
    import torchvision.transforms as T

    return T.Compose([T.RandomCrop(image_size, padding=padding), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean, std)])


def timed_loops(split: Split, meta: dict[str, Any], cfg: TrainParams, preloaded: SeedStyleDataset,
                lazy: SeedStyleDataset, seed: int) -> dict[str, Callable[[], None]]:
    """One pass of each loop the section times, by name: the pipeline's ``train_one_epoch`` and the course's
    loop over each of its datasets (same StudentNet, AdamW, batch size), and the data halves alone."""
    norm, gen = normalizer(meta), torch.Generator().manual_seed(seed)

    def new_model():
        torch.manual_seed(seed)
        model = StudentNet(num_classes=len(meta["classes"]))
        return model, make_optimizer(model, cfg)

    pipe_model, pipe_opt = new_model()

    def run_pipeline():
        train_one_epoch(pipe_model, split, norm, pipe_opt, cfg, gen, loss_fn=cross_entropy(), desc="pipeline loop")

    def seed_runner(ds):
        model, opt = new_model()
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=0,
                                             generator=torch.Generator().manual_seed(seed))

        def run():
            model.train()
            for x, y in loader:  # the course's run_epoch, on the CPU
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return run

    def pipeline_data_only():  # train_one_epoch's data half itself: batch order, augmentation, normalisation
        for _ in epoch_batches(split, norm, cfg, gen):
            pass

    def seed_data_only():
        for _ in torch.utils.data.DataLoader(preloaded, batch_size=cfg.batch_size, shuffle=True, num_workers=0):
            pass

    return {"pipeline": run_pipeline, "seed": seed_runner(preloaded), "seed_open": seed_runner(lazy),
            "pipeline_data": pipeline_data_only, "seed_data": seed_data_only}


def result_rows(ips: dict[str, float]) -> list[dict[str, Any]]:
    """The section's table: images/s of each loop and how much faster the pipeline's counterpart is."""
    return [
        {"loader": "pipeline: train_one_epoch over prepared uint8 tensors (batched tensor augmentation)",
         "images_per_s": ips["pipeline"], "pipeline_speedup": 1.0},
        {"loader": "course MyDataset, images preloaded as PIL at init (its behaviour): per-item transforms",
         "images_per_s": ips["seed"], "pipeline_speedup": ratio(ips["pipeline"], ips["seed"])},
        {"loader": "course MyDataset variant that opens and decodes the JPEG per item",
         "images_per_s": ips["seed_open"], "pipeline_speedup": ratio(ips["pipeline"], ips["seed_open"])},
        {"loader": "data only (no model): pipeline batches, augment + normalise",
         "images_per_s": ips["pipeline_data"], "pipeline_speedup": 1.0},
        {"loader": "data only (no model): course DataLoader over preloaded PIL images",
         "images_per_s": ips["seed_data"], "pipeline_speedup": ratio(ips["pipeline_data"], ips["seed_data"])},
    ]


def data_path(project: Path, work: Path, n_images: int, batch_size: int, repeats: int, threads: int,
              seed: int = 0) -> dict[str, Any]:
    """Images/s of ``train_one_epoch`` over prepared tensors vs the course's PIL loader, same images and model.

    Args:
        project: the project whose ``data/prepared`` is read.
        work: a scratch folder (the Food-11 JPEGs go to ``work/food-11``).
        n_images: images per pass (the train split is cycled when smaller).
        batch_size: both loaders' batch size.
        repeats: timed passes of each loop (medians reported).
        threads: torch intra-op threads.
        seed: model initialisation and batch order.
    """
    torch.set_num_threads(threads)
    prepared = project / "data/prepared"
    meta = load_meta(prepared)
    train = load_split(prepared, "train")
    idx = torch.arange(n_images) % len(train.labels)  # cycle when the split is smaller than n_images
    split = Split(train.images[idx].clone(), train.labels[idx].clone())
    folder = work / "food-11"
    if folder.exists():
        shutil.rmtree(folder)
    print(f"  writing {n_images} prepared train images as {folder}/training/<label>_<i>.jpg", flush=True)
    write_food11_folder(split.images, split.labels, folder)
    # the same augmentation on both sides (the course's), whatever params.yaml says; NCHW like the course's loop
    cfg = TrainParams(epochs=1, batch_size=batch_size, optimizer="adamw", lr=1e-3, weight_decay=5e-4, crop_padding=2,
                      flip=True, channels_last=False)
    transform = seed_transform(int(meta["image_size"]), cfg.crop_padding, meta["mean"], meta["std"])
    t0 = time.perf_counter()
    preloaded = SeedStyleDataset(folder / "training", transform, preload=True)
    preload_s = time.perf_counter() - t0
    lazy = SeedStyleDataset(folder / "training", transform, preload=False)
    assert len(preloaded) == n_images
    paths = timed_loops(split, meta, cfg, preloaded, lazy, seed)
    # one untimed pass of each first (allocator, oneDNN primitives, page cache): with 2 repeats (--quick) a
    # cold first pass would be half of the median
    timing = interleaved(paths, repeats, threads=threads, warmup=1)
    ips = {k: n_images / (timing.median_ms(k) / 1e3) for k in paths}
    rows = result_rows(ips)
    for r in rows:
        faster = "—" if r["pipeline_speedup"] is None else f"{r['pipeline_speedup']:.2f}x"
        print(f"  {r['images_per_s']:8.0f} img/s  {faster}  {r['loader']}", flush=True)
    return {
        "images": n_images, "batch_size": batch_size, "repeats": repeats, "threads": threads,
        "image_size": int(meta["image_size"]), "rows": rows,
        # the seed-style loader "opens and transforms a PIL image per item": the per-item-open variant
        "ratio": ratio(ips["pipeline"], ips["seed_open"]),
        "preloaded_ratio": ratio(ips["pipeline"], ips["seed"]),
        "data_only_ratio": ratio(ips["pipeline_data"], ips["seed_data"]),
        "seed_preload_seconds": round(preload_s, 3),
        "note": (f"Both sides do the same augmentation: random crop with padding {cfg.crop_padding} and a random "
                 f"flip, whatever params.yaml says. The course's loader (RandomCrop, RandomHorizontalFlip, ToTensor, "
                 f"Normalize; DataLoader num_workers=0) decodes every JPEG once at init "
                 f"({preload_s:.2f} s here); the target compares whole training loops (data, "
                 f"forward, backward, AdamW step) against the variant that opens, decodes and transforms each "
                 f"image per item, as the seed-style loader of the benchmark's brief does. The data-only rows leave the "
                 f"model out: they show how much of the loop is data."),
    }
