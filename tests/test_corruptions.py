import io
from itertools import pairwise

import numpy as np
import pytest
import torch
from PIL import Image

from lookupvit.evaluation import corruptions
from lookupvit.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corrupted_test_set

RANDOM = {
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
}


def synthetic_garments(count: int) -> torch.Tensor:
    """Fallback when Fashion-MNIST is not installed: shaded, textured rectangles on black, (N, 1, 28, 28) uint8."""
    generator = torch.Generator().manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    images = []
    for _ in range(count):
        centre = 14 + torch.randint(-3, 4, (2,), generator=generator)
        half = torch.randint(5, 11, (2,), generator=generator)
        body = ((rows - centre[0]).abs() < half[0]) & ((cols - centre[1]).abs() < half[1])
        shade = 90 + 140 * torch.rand((), generator=generator) + 25 * torch.sin(cols / 1.5) * torch.cos(rows / 2.5)
        images.append(torch.where(body, shade, torch.zeros(())))
    return torch.stack(images).clamp(0, 255).round().to(torch.uint8)[:, None]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """64 real Fashion-MNIST test images (1 x 28 x 28) where installed, else synthetic ones."""
    try:
        from lookupvit.data import load_fashion_mnist

        return load_fashion_mnist("test").images[:64].clone()
    except (FileNotFoundError, ValueError):
        return synthetic_garments(64)


@pytest.fixture(scope="module")
def corrupted(images) -> dict[tuple[str, int], torch.Tensor]:
    before = images.clone()
    out = {(name, severity): corrupt(images, name, severity) for name in CORRUPTIONS for severity in SEVERITIES}
    assert torch.equal(images, before), "corrupt() modified its input"
    return out


# Metrics in numpy: small torch ops crawl when a busy machine's cores make OpenMP threads wait on each other.
def pixels(images: torch.Tensor) -> np.ndarray:
    return images.numpy().astype(np.float64).reshape(len(images), -1)


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def test_the_fifteen_imagenet_c_types_in_their_order():
    assert CORRUPTIONS == (
        "gaussian_noise", "shot_noise", "impulse_noise",
        "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness",
        "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    )  # fmt: skip
    assert SEVERITIES == (1, 2, 3, 4, 5)


def test_every_corruption_returns_uint8_of_the_same_shape_and_changes_every_image(images, corrupted):
    for (name, severity), out in corrupted.items():
        assert out.dtype == torch.uint8 and out.shape == images.shape, (name, severity)
        changed = (pixels(out) != pixels(images)).any(axis=1)
        assert changed.all(), f"{name} severity {severity} left {int((~changed).sum())} images unchanged"
    # float results are clipped to 0..255, not wrapped: heavy noise saturates both ends
    noisy = corrupted[("gaussian_noise", 5)]
    assert noisy.min() == 0 and noisy.max() == 255


# ImageNet-C ladder steps s -> s + 1 that do not add difference from the clean image (see the module docstring);
# each is checked for what the step does change in the tests that follow.
NOT_MORE_DIFFERENT = {("elastic_transform", 2), ("elastic_transform", 3), ("frost", 3), ("fog", 3)}


def test_more_severity_means_a_larger_difference_from_the_clean_image(images, corrupted):
    for name in CORRUPTIONS:
        diffs = [mad(corrupted[(name, severity)], images) for severity in SEVERITIES]
        for severity in SEVERITIES[:-1]:
            if (name, severity) not in NOT_MORE_DIFFERENT:
                assert diffs[severity] > diffs[severity - 1], f"{name}: mean |difference| by severity {diffs}"


def test_elastic_transform_has_imagenet_c_two_regimes(images, corrupted):
    diffs = [mad(corrupted[("elastic_transform", severity)], images) for severity in SEVERITIES]
    assert diffs[0] < diffs[1]  # large smooth warps, growing
    assert max(diffs[2:]) < diffs[0]  # then a small affine plus pixel-scale jitter
    assert diffs[4] > max(diffs[2], diffs[3])
    # 3 -> 4 -> 5 only raises the jitter's gain, which at 28 px is swamped by the random affine in a 64-image
    # average; with the same random draws it must displace more at each step
    run = corruptions._REGISTRY["elastic_transform"]
    with corruptions._one_thread():
        paired = [mad(run(images, s, corruptions._generators(0, "paired", 0, 0, len(images))), images) for s in (3, 4, 5)]
    assert paired[0] < paired[1] < paired[2], paired


def regression_slope(out: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean over images of the least-squares slope of corrupted on clean pixel values."""
    y, x = pixels(out), pixels(clean)
    x, y = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    return float(((x * y).sum(1) / (x * x).sum(1)).mean())


def test_frost_keeps_less_of_the_clean_image_at_each_severity(images, corrupted):
    slopes = [regression_slope(corrupted[("frost", severity)], images) for severity in SEVERITIES]
    assert all(a > b for a, b in pairwise(slopes)), slopes  # image weights 1, .8, .7, .65, .6


def test_fog_gets_rougher_at_each_severity(images, corrupted):
    def roughness(out):
        diff = (pixels(out) - pixels(images)).reshape(len(images), 28, 28)
        return float(np.abs(np.diff(diff, axis=1)).mean() + np.abs(np.diff(diff, axis=2)).mean())

    values = [roughness(corrupted[("fog", severity)]) for severity in SEVERITIES]
    assert all(a < b for a, b in pairwise(values)), values  # severity 3 -> 4: same amount, lower wibble decay


def test_brightness_raises_the_mean_and_contrast_lowers_the_spread(images, corrupted):
    means = [pixels(images).mean()] + [pixels(corrupted[("brightness", s)]).mean() for s in SEVERITIES]
    assert all(a < b for a, b in pairwise(means)), means
    spreads = [pixels(images).std(1).mean()] + [pixels(corrupted[("contrast", s)]).std(1).mean() for s in SEVERITIES]
    assert all(a > b for a, b in pairwise(spreads)), spreads
    # contrast keeps each image's mean brightness (up to rounding)
    assert np.abs(pixels(corrupted[("contrast", 5)]).mean(1) - pixels(images).mean(1)).max() < 1


def test_same_inputs_give_the_same_output_however_the_batch_is_split(images, monkeypatch):
    x = images[:12]
    monkeypatch.setattr(corruptions, "_CHUNK", 5)  # the internal batching must not matter either
    np.random.seed(1)
    torch.manual_seed(1)
    numpy_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    for name in CORRUPTIONS:
        full = corrupt(x, name, 4, seed=3)
        assert torch.equal(full, corrupt(x, name, 4, seed=3)), name
        parts = torch.cat([corrupt(x[:7], name, 4, seed=3), corrupt(x[7:], name, 4, seed=3, start_index=7)])
        assert torch.equal(full, parts), name
        assert torch.equal(full[8:9], corrupt(x[8:9], name, 4, seed=3, start_index=8)), name
        assert torch.equal(full[:, 0], corrupt(x[:, 0], name, 4, seed=3)), name  # (N, H, W) input, same pixels
        if name in RANDOM:
            assert not torch.equal(full, corrupt(x, name, 4, seed=4)), f"{name} ignores the seed"
            assert not torch.equal(full[8:9], corrupt(x[8:9], name, 4, seed=3)), f"{name} ignores the image index"
    # no global random state was read or advanced
    assert np.array_equal(np.random.get_state()[1], numpy_state) and torch.equal(torch.get_rng_state(), torch_state)
    twins = x[:1].expand(4, -1, -1, -1)
    noisy = corrupt(twins, "gaussian_noise", 3)
    assert not torch.equal(noisy[0], noisy[1]), "identical images at different indices must get different noise"


def test_jpeg_compression_is_pils_encoder_at_imagenet_c_qualities(images):
    image = images[5:6]
    for severity, quality in zip(SEVERITIES, (25, 18, 15, 10, 7)):
        buffer = io.BytesIO()
        Image.fromarray(image[0, 0].numpy()).save(buffer, "JPEG", quality=quality)
        expected = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buffer.getvalue()))).copy())
        assert torch.equal(corrupt(image, "jpeg_compression", severity)[0, 0], expected), severity


def test_rgb_images_are_supported():
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=generator)
    for name in CORRUPTIONS:
        out = corrupt(rgb, name, 5)
        assert out.shape == rgb.shape and out.dtype == torch.uint8 and not torch.equal(out, rgb), name
    grey = rgb[:, :1]
    # a grey RGB image is brightened exactly like the greyscale one
    as_rgb = corrupt(grey.expand(-1, 3, -1, -1), "brightness", 2)
    assert (as_rgb.int() - corrupt(grey, "brightness", 2).int()).abs().max() <= 1


def count_builds(monkeypatch) -> list[tuple[str, int]]:
    built = []
    real = corruptions.corrupt
    monkeypatch.setattr(
        corruptions,
        "corrupt",
        lambda images, name, severity, **kw: built.append((name, severity)) or real(images, name, severity, **kw),
    )
    return built


def test_the_cache_is_built_once_and_then_loaded(tmp_path, images, monkeypatch):
    x = images[:8]
    names, severities = ("gaussian_noise", "pixelate"), (1, 5)
    built = count_builds(monkeypatch)
    first = corrupted_test_set(x, tmp_path, corruptions=names, severities=severities, progress=False)
    assert sorted(built) == sorted((n, s) for n in names for s in severities)
    fingerprint = corruptions.images_fingerprint(x)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert len(files) == 4 and all(fingerprint in name and name.endswith(".pt") for name in files), files
    for (name, severity), out in first.items():
        assert torch.equal(out, corrupt(x, name, severity))

    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt a cached set")

    monkeypatch.setattr(corruptions, "corrupt", refuse)
    second = corrupted_test_set(x, tmp_path, corruptions=names, severities=severities, progress=False)
    assert second.keys() == first.keys() and all(torch.equal(second[key], first[key]) for key in first)


def test_truncated_mismatched_or_foreign_cache_files_are_rebuilt(tmp_path, images, monkeypatch):
    x = images[:8]
    names, severities = ("shot_noise",), (1, 2, 3)
    clean = corrupted_test_set(x, tmp_path, corruptions=names, severities=severities, progress=False)
    fingerprint = corruptions.images_fingerprint(x)
    path = {s: corruptions._cache_path(tmp_path, "shot_noise", s, 0, fingerprint) for s in severities}
    path[1].write_bytes(path[1].read_bytes()[:200])  # a killed writer or a full disk
    payload = torch.load(path[2], weights_only=True)
    torch.save({**payload, "images": payload["images"][:4]}, path[2])  # right name, wrong shape
    torch.save({**payload, "severity": 2}, path[3])  # another set's content under this name
    built = count_builds(monkeypatch)
    with pytest.warns(UserWarning) as caught:
        again = corrupted_test_set(x, tmp_path, corruptions=names, severities=severities, progress=False)
    messages = " | ".join(str(w.message) for w in caught)
    assert "unreadable" in messages and "expected torch.uint8 (8, 1, 28, 28)" in messages and "built for" in messages
    assert sorted(built) == [("shot_noise", 1), ("shot_noise", 2), ("shot_noise", 3)]
    assert all(torch.equal(again[key], clean[key]) for key in clean)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    built.clear()
    corrupted_test_set(x, tmp_path, corruptions=names, severities=severities, progress=False)
    assert built == []  # the rebuilt files are good


def test_a_cache_built_from_other_images_is_never_reused(tmp_path, images, monkeypatch):
    x = images[:8]
    first = corrupted_test_set(x, tmp_path, corruptions=("contrast",), severities=(2,), progress=False)
    other = x.clone()
    other[0, 0, 14, 14] ^= 128  # one pixel, one bit
    built = count_builds(monkeypatch)
    second = corrupted_test_set(other, tmp_path, corruptions=("contrast",), severities=(2,), progress=False)
    assert built == [("contrast", 2)]
    assert torch.equal(second[("contrast", 2)], corrupt(other, "contrast", 2))
    assert not torch.equal(second[("contrast", 2)], first[("contrast", 2)])
    assert len(list(tmp_path.glob("contrast-s2-*.pt"))) == 2
    # a different seed is a different set too
    corrupted_test_set(x, tmp_path, seed=1, corruptions=("contrast",), severities=(2,), progress=False)
    assert built == [("contrast", 2), ("contrast", 2)]


def test_progress_bar_counts_the_sets(tmp_path, images, capsys):
    corrupted_test_set(images[:2], tmp_path, corruptions=("brightness",), severities=(1, 2, 3), progress=True)
    assert "3/3" in capsys.readouterr().err


@pytest.mark.parametrize(
    "call,error,message",
    [
        (
            lambda x: corrupt(x, "gausian_noise", 1),
            ValueError,
            r"unknown corruption 'gausian_noise'\. Did you mean 'gaussian_noise'\?",
        ),
        (lambda x: corrupt(x, "blur", 1), ValueError, "Valid names: gaussian_noise, shot_noise"),
        (lambda x: corrupt(x, "fog", 0), ValueError, "severity must be an integer from 1 to 5"),
        (lambda x: corrupt(x, "fog", 6), ValueError, "severity must be an integer from 1 to 5"),
        (lambda x: corrupt(x, "fog", 2.0), ValueError, "severity must be an integer from 1 to 5"),
        (lambda x: corrupt(x, "fog", True), ValueError, "severity must be an integer from 1 to 5"),
        (
            lambda x: corrupt(x.float() / 255, "fog", 1),
            TypeError,
            r"uint8 with values 0\.\.255, got dtype torch.float32; pass uint8",
        ),
        (lambda x: corrupt(x[0, 0], "fog", 1), ValueError, r"shape \(N, H, W\) or \(N, C, H, W\), got 2 dims"),
        (lambda x: corrupt(x[:, :, None], "fog", 1), ValueError, "got 5 dims"),
        (lambda x: corrupt(x.expand(-1, 2, -1, -1), "fog", 1), ValueError, "1 \\(greyscale\\) or 3 \\(RGB\\) channels"),
        (lambda x: corrupt(x[..., :20], "fog", 1), ValueError, "must be square"),
        (lambda x: corrupt(x.numpy(), "fog", 1), TypeError, "must be a torch.Tensor"),
        (lambda x: corrupt(x, "fog", 1, start_index=-1), ValueError, "start_index must be a non-negative int"),
    ],
)
def test_bad_input_gets_a_clear_error(images, call, error, message):
    with pytest.raises(error, match=message):
        call(images[:2])


def test_bad_arguments_fail_before_anything_is_built(tmp_path, images):
    with pytest.raises(ValueError, match="Did you mean 'frost'"):
        corrupted_test_set(images[:2], tmp_path / "cache", corruptions=("gaussian_noise", "forst"), progress=False)
    with pytest.raises(ValueError, match="severity"):
        corrupted_test_set(images[:2], tmp_path / "cache", severities=(1, 7), progress=False)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_corruption_grid_figure(tmp_path, images):
    pytest.importorskip("matplotlib")
    path = tmp_path / "grid.png"
    corruptions.plot_corruption_grid(images[0], path)
    with Image.open(path) as figure:
        width, height = figure.size
    assert height > 2 * width  # 15 rows of 6 panels


def test_motion_blur_trails_run_near_horizontal_and_snow_streaks_near_vertical():
    dot = torch.zeros(32, 1, 28, 28, dtype=torch.uint8)
    dot[:, :, 13:15, 13:15] = 255
    rows, cols = np.mgrid[0:28, 0:28]

    def spread(out: torch.Tensor) -> tuple[float, float]:
        weights = pixels(out).reshape(-1, 28, 28)
        weights = weights / weights.sum(axis=(1, 2), keepdims=True)
        mean_r, mean_c = (weights * rows).sum(axis=(1, 2)), (weights * cols).sum(axis=(1, 2))
        var_r = (weights * (rows - mean_r[:, None, None]) ** 2).sum(axis=(1, 2))
        var_c = (weights * (cols - mean_c[:, None, None]) ** 2).sum(axis=(1, 2))
        return float(var_r.mean()), float(var_c.mean())

    along_rows, along_cols = spread(corrupt(dot, "motion_blur", 5))  # angles within 45 degrees of horizontal
    assert along_cols > 1.5 * along_rows
    snow = pixels(corrupt(torch.zeros_like(dot), "snow", 5)).reshape(-1, 28, 28)  # streaks within 45 deg of vertical
    assert np.abs(np.diff(snow, axis=2)).mean() > 1.2 * np.abs(np.diff(snow, axis=1)).mean()
