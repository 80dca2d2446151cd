"""The model registry and the course-exact StudentNet."""
import pytest
import torch

from shrink.models import MODELS, StudentNet, build_model, count_params, student_widths

# The course's StudentNet(base=16, width_mult=1) state_dict: (key, shape), in order.
# A course checkpoint (student_custom_small.bin) uses exactly these names and shapes.
_BLOCKS = [(16, 32), (32, 64), (64, 128), (128, 256), (256, 256), (256, 256), (256, 256)]
COURSE_KEYS = [
    ("cnn.0.0.weight", (16, 3, 3, 3)), ("cnn.0.0.bias", (16,)),
    ("cnn.0.1.weight", (16,)), ("cnn.0.1.bias", (16,)), ("cnn.0.1.running_mean", (16,)),
    ("cnn.0.1.running_var", (16,)), ("cnn.0.1.num_batches_tracked", ()),
]
for _i, (_cin, _cout) in enumerate(_BLOCKS, start=1):
    COURSE_KEYS += [
        (f"cnn.{_i}.0.weight", (_cin, 1, 3, 3)), (f"cnn.{_i}.0.bias", (_cin,)),
        (f"cnn.{_i}.1.weight", (_cin,)), (f"cnn.{_i}.1.bias", (_cin,)),
        (f"cnn.{_i}.1.running_mean", (_cin,)), (f"cnn.{_i}.1.running_var", (_cin,)),
        (f"cnn.{_i}.1.num_batches_tracked", ()),
        (f"cnn.{_i}.3.weight", (_cout, _cin, 1, 1)), (f"cnn.{_i}.3.bias", (_cout,)),
    ]
COURSE_KEYS += [("fc.0.weight", (11, 256)), ("fc.0.bias", (11,))]


def test_student_state_dict_matches_course_exactly():
    sd = StudentNet().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == COURSE_KEYS
    assert count_params(StudentNet()) == 256_779


def test_course_checkpoint_loads_strictly(tmp_path):
    # a state_dict written the way the course saved student_custom_small.bin
    course = {k: torch.randn(s) if s else torch.tensor(0) for k, s in COURSE_KEYS}
    torch.save(course, tmp_path / "student_custom_small.bin")
    model = StudentNet()
    model.load_state_dict(torch.load(tmp_path / "student_custom_small.bin", weights_only=True), strict=True)
    assert torch.equal(model.fc[0].weight, course["fc.0.weight"])


def test_width_mult_scales_blocks_3_to_6_like_the_course():
    assert student_widths(16, 0.95) == [16, 32, 64, 121, 243, 243, 243, 256]
    assert StudentNet(width_mult=0.95).widths == StudentNet(widths=[16, 32, 64, 121, 243, 243, 243, 256]).widths


def test_explicit_widths_build_matching_shapes():
    w = [16, 32, 64, 100, 200, 150, 120, 256]
    m = StudentNet(widths=w, num_classes=10)
    sd = m.state_dict()
    assert sd["cnn.4.0.weight"].shape == (100, 1, 3, 3)
    assert sd["cnn.4.3.weight"].shape == (200, 100, 1, 1)
    assert sd["cnn.6.3.weight"].shape == (120, 150, 1, 1)
    assert sd["fc.0.weight"].shape == (10, 256)
    with pytest.raises(ValueError, match="8 positive widths"):
        StudentNet(widths=[16, 32])


@pytest.mark.parametrize("name", [*sorted(MODELS), "resnet18"])
@pytest.mark.parametrize("size", [28, 64])
def test_registry_forward_backward_shapes(name, size):
    model = build_model(name, num_classes=7)
    x = torch.randn(4, 3, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_model_is_clear():
    with pytest.raises(KeyError, match="unknown model"):
        build_model("vgg", 10)
