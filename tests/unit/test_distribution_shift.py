"""Distribution-shift builders (commlab.data.shifts): rotations, rotated fractions, class subsampling."""

import pytest
import torch

from commlab.data.shifts import class_subsample, rotate, rotate_fraction


def _images(n=6, side=8, seed=0):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def test_quarter_turns_match_rot90_and_zero_is_identity():
    x = _images()
    assert torch.allclose(rotate(x, 90.0), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(rotate(x, 180.0), torch.rot90(x, 2, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(rotate(x, 0.0), x, atol=1e-6)
    per_image = rotate(x, torch.tensor([0.0, 90.0, 180.0, 270.0, 0.0, 90.0]))
    assert torch.allclose(per_image[1], torch.rot90(x[1], 1, dims=(1, 2)), atol=1e-5)
    assert torch.allclose(per_image[4], x[4], atol=1e-6)


def test_small_rotation_keeps_the_centre_mass_and_moves_pixels():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    assert rotate(x, 30.0)[0, 0, 4, 4].item() == pytest.approx(1.0, abs=1e-6)  # the centre is the fixed point
    x[0, 0, 4, 4], x[0, 0, 4, 7] = 0.0, 1.0
    assert rotate(x, 30.0)[0, 0, 4, 7] < 0.5


def test_rotate_fraction_rotates_exactly_that_many_and_is_seeded():
    x = _images(n=10)
    out, mask = rotate_fraction(x, 0.3, 90.0, generator=torch.Generator().manual_seed(1))
    assert int(mask.sum()) == 3
    assert torch.equal(out[~mask], x[~mask])
    assert torch.allclose(out[mask], torch.rot90(x[mask], 1, dims=(2, 3)), atol=1e-5)
    again, mask2 = rotate_fraction(x, 0.3, 90.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mask, mask2) and torch.equal(out, again)
    assert torch.equal(rotate_fraction(x, 0.0, 90.0, generator=torch.Generator())[0], x)


def test_class_subsample_keeps_the_asked_share_per_class():
    labels = torch.arange(10).repeat_interleave(20)
    kept = class_subsample(labels, {8: 0.25, 9: 0.5}, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[kept], minlength=10)
    assert counts.tolist() == [20] * 8 + [5, 10]
    assert torch.equal(kept, kept.sort().values)
    same = class_subsample(labels, {8: 0.25, 9: 0.5}, generator=torch.Generator().manual_seed(0))
    other = class_subsample(labels, {8: 0.25, 9: 0.5}, generator=torch.Generator().manual_seed(1))
    assert torch.equal(kept, same) and not torch.equal(kept, other)
    assert len(class_subsample(labels, {3: 0.0}, generator=torch.Generator())) == 180


def test_bad_input_raises():
    x = _images()
    with pytest.raises(ValueError, match="images"):
        rotate(x[:, 0], 10.0)
    with pytest.raises(ValueError, match="degrees"):
        rotate(x, torch.zeros(3))
    with pytest.raises(ValueError, match="degrees"):
        rotate(x, float("nan"))
    with pytest.raises(ValueError, match="fraction"):
        rotate_fraction(x, 1.5, 10.0, generator=torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        rotate_fraction(x, 0.5, 10.0, generator=None)
    labels = torch.arange(4)
    with pytest.raises(ValueError, match="labels"):
        class_subsample(labels.float(), {1: 0.5}, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"keep\[1\]"):
        class_subsample(labels, {1: 2.0}, generator=torch.Generator())
    with pytest.raises(TypeError, match="keep"):
        class_subsample(labels, [0.5], generator=torch.Generator())
