"""The quantization-format registry (``shrink.formats``): every registered format saves, loads through the one
loader and predicts what its fp32 checkpoint predicts; dvc.yaml writes exactly its files; and a new format is
one entry (the per-architecture agreement of every format is tests/test_registry.py's)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from matplotlib.colors import is_color_like
from matplotlib.markers import MarkerStyle

from shrink import charts, formats
from shrink.config import ParamsError, validate
from shrink.formats import Format, get_format, list_formats, register_format, save_all, tie_order
from shrink.io import save_torch
from shrink.models import StudentNet
from shrink.quantize import artifact_meta
from shrink.runtime import load_runtime

from conftest import ROOT

SIZE = 16


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(checkpoint, the bytes save_all reported, the prefix) of a small StudentNet with non-trivial BatchNorm."""
    torch.manual_seed(0)
    model = StudentNet(num_classes=3, widths=[8, 16, 16, 16, 16, 16, 16, 32]).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    ckpt = {"model": "studentnet", "model_kwargs": {"widths": list(model.widths)}, "num_classes": 3,
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}, "params": {},
            "data": {"classes": ["a", "b", "c"], "mean": [0.5] * 3, "std": [0.25] * 3, "image_size": SIZE}}
    calib = torch.randn(32, 3, SIZE, SIZE, generator=g)
    prefix = tmp_path_factory.mktemp("formats") / "m"
    return ckpt, save_all(ckpt, calib, prefix), prefix


@pytest.mark.parametrize("name", list_formats())
def test_every_format_saves_loads_and_predicts_like_fp32(saved, name):
    ckpt, sizes, prefix = saved
    fmt = get_format(name)
    path = Path(f"{prefix}.{fmt.suffix}")
    assert fmt.name == name and fmt.suffix.endswith((".pt", ".onnx"))  # load_runtime reads these two containers
    assert sizes[f"{name}_bytes"] == path.stat().st_size > 0
    run = load_runtime(path, threads=1)
    assert run.kind == name and run.label == fmt.label and run.meta == artifact_meta(ckpt)
    x = torch.randn(64, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    fp32 = StudentNet(num_classes=3, widths=ckpt["model_kwargs"]["widths"]).eval()
    fp32.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        ref = fp32(x)
    out = run(x)
    assert ((out - ref).norm() / ref.norm()).item() <= 0.1, name  # a wrong scale gives errors of order 1
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9, name
    # what reports and charts show of it
    assert fmt.label and fmt.description and charts.kind_style(name) == (fmt.marker, fmt.colour)
    MarkerStyle(fmt.marker)  # a marker matplotlib knows
    assert is_color_like(fmt.colour)


def test_save_all_writes_one_file_per_format_in_registry_order(saved):
    _, sizes, prefix = saved
    assert list(sizes) == [f"{n}_bytes" for n in list_formats()]
    written = sorted(p.name for p in prefix.parent.iterdir())
    assert written == sorted(f"m.{get_format(n).suffix}" for n in list_formats())
    assert tie_order() == list_formats()[::-1]


def test_dvc_yaml_quantize_stages_write_exactly_the_registry_files():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    quantize, rounds = stages["quantize"], stages["quantize-round"]["do"]
    assert {k: v for k, v in quantize.items() if k != "matrix"} == rounds  # one body for both groups
    files = [o for o in rounds["outs"] if isinstance(o, str)]
    assert files == [f"models/quantized/${{key}}.{get_format(n).suffix}" for n in list_formats()]


@pytest.fixture
def half():
    """A format registered for one test (fp16 weights under another name), removed again afterwards."""
    def save(ckpt, calib, path):
        sd = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
        save_torch({**ckpt, "format": "shrink-half", "state_dict": sd}, path)
        return path.stat().st_size

    fmt = register_format(Format("half", "half.pt", save, get_format("fp16").load, "PyTorch eager fp32 (half)",
                                 "P", "tab:olive", "fp16 weights under a test's name"))
    yield fmt
    formats._FORMATS.remove("half")


def test_a_new_format_is_one_entry(half, saved, tmp_path):
    """Registered, a format is allowed in params, written by the quantize stage's save_all, read back by the
    one loader with its own kind and label, drawn in its style, and first in the ship rule's tie order."""
    ckpt, _, _ = saved
    assert validate({"evaluate": {"ship": "half"}}).evaluate.ship == "half"
    sizes = save_all(ckpt, torch.randn(8, 3, SIZE, SIZE), tmp_path / "m")
    assert list(sizes)[-1] == "half_bytes" and (tmp_path / "m.half.pt").stat().st_size == sizes["half_bytes"]
    run = load_runtime(tmp_path / "m.half.pt")
    assert (run.kind, run.label) == ("half", "PyTorch eager fp32 (half)")
    assert charts.kind_style("half") == ("P", "tab:olive") and tie_order()[0] == "half"


def test_registry_refuses_clashes_and_names_what_it_knows(half):
    with pytest.raises(ValueError, match="already registered"):
        register_format(half)
    with pytest.raises(ValueError, match="suffix 'half.pt'"):
        register_format(Format("half2", "half.pt", half.save, half.load, "x", "o", "k", "x"))
    with pytest.raises(ValueError, match="fp32"):
        register_format(Format("fp32", "fp32.pt", half.save, half.load, "x", "o", "k", "x"))
    with pytest.raises(KeyError, match=r"unknown quantization format 'int4' \(known: fp16, uint8, int8, int8w, half\)"):
        get_format("int4")
    with pytest.raises(ParamsError, match="evaluate.ship: must be one of auto, fp16, uint8, int8, int8w, half, got"):
        validate({"evaluate": {"ship": "int4"}})
