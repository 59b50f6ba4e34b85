"""ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) for small images, built offline and cached.

The 15 ImageNet-C corruption types at severities 1-5, for uint8 images of shape (N, H, W), (N, 1, H, W) or
(N, 3, H, W) (square, H >= 8), meant for Fashion-MNIST (28 x 28 greyscale):

    noise    gaussian_noise, shot_noise, impulse_noise
    blur     defocus_blur, glass_blur, motion_blur, zoom_blur
    weather  snow, frost, fog, brightness
    digital  contrast, elastic_transform, pixelate, jpeg_compression

Each type follows the operation and severity ladder of the ImageNet-C reference code (`make_imagenet_c.py`),
reimplemented with torch/numpy/PIL only (no scipy, OpenCV, scikit-image or ImageMagick).

Scaling to small images
-----------------------
ImageNet-C was defined on 224 x 224 images. Every spatial length is scaled by s = H / 224 (1/8 at 28 px), so a
corruption covers the same fraction of the image as in ImageNet-C. Lengths that become sub-pixel are not rounded
away: blur kernels are built as ImageNet-C's continuous kernel scaled by s and integrated over pixel areas (each
tap is the kernel convolved with the pixel-overlap "tent" tri(u) tri(v)), which is what nearest-upsampling by 1/s,
applying the 224-px kernel and area-downsampling back would give. A defocus disk of radius 0.375 px thus still
spreads ~30 % of a pixel to its neighbours instead of collapsing to the identity.

    corruption         parameter (ImageNet-C name)          at 224 px (sev 1..5)                at 28 px (sev 1..5)
    defocus_blur       disk radius                          3, 4, 6, 8, 10                      0.375, 0.5, 0.75, 1, 1.25
                       anti-alias blur sigma                0.1, 0.5, 0.5, 0.5, 0.5             0.0125, 0.0625, ...
    glass_blur         gaussian sigma                       0.7, 0.9, 1, 1.1, 1.5               0.0875, 0.1125, 0.125, 0.1375, 0.1875
                       max pixel displacement delta         1, 2, 2, 3, 4                       0.125, 0.25, 0.25, 0.375, 0.5 (*)
                       iterations                           2, 1, 3, 2, 2                       2, 1, 3, 2, 2
    motion_blur        kernel radius (trail = 2 radius)     10, 15, 15, 15, 20                  1.25, 1.875, 1.875, 1.875, 2.5
                       sigma                                3, 5, 8, 12, 15                     0.375, 0.625, 1, 1.5, 1.875
    zoom_blur          zoom factors 1, 1+d, ... < stop      stop 1.11/1.16/1.21/1.26/1.31,      unchanged (scale-free)
                       (numpy.arange(1, stop, d))           d .01/.01/.02/.02/.03
    snow               flake size (noise zoom)              3, 2, 4, 4.5, 2.5                   0.375, 0.25, 0.5, 0.5625, 0.3125 (**)
                       streak radius, sigma                 (10,4) (12,4) (12,8) (12,8) (12,12) (1.25,.5) (1.5,.5) (1.5,1) (1.5,1) (1.5,1.5)
    frost              texture crop                         224 px crop of a frost photo        28 px crop of a procedural texture (***)
    fog                plasma map size (crop)               256 (224)                           32 (28); same wibble decays
    elastic_transform  affine jitter (c[2])                 24.4, 48.8, 4.88, 4.88, 4.88        3.05, 6.1, 0.61, 0.61, 0.61 (++)
                       displacement-field sigma (c[1])      170.8, 19.52, 2.44, 2.44, 2.44      21.35, 2.44, 0.305, 0.305, 0.305
                       field gain alpha (c[0])              488, 488, 12.2, 17.08, 29.28        7.63, 7.71, 0.292, 0.409, 0.701
                       -> RMS field displacement (px)       1.26, 4.72, 0.83, 1.17, 2.00        0.158, 0.590, 0.104, 0.146, 0.250
    pixelate           resolution factor (relative)         0.6, 0.5, 0.4, 0.3, 0.25            unchanged: 16, 14, 11, 8, 7 px (+)
    jpeg_compression   quality                              25, 18, 15, 10, 7                   unchanged (PIL encoder)
    noise types, brightness, contrast: per-pixel, no spatial parameter, ladders unchanged.

(*) glass_blur: ImageNet-C draws an integer offset d in [-delta, delta - 1] per pixel; here d is drawn the same
    way, scaled by s and stochastically rounded (floor(d s + u), u ~ U[0, 1)), which keeps the expected offset
    d s. As in ImageNet-C, whose tuple "swap" of RGB pixel views actually copies, each visited pixel is
    replaced by its displaced neighbour (visiting pixels bottom-right to top-left).
(**) snow: the thresholded flake layer is rendered at ImageNet-C's own resolution (224 x 224 for a 28-px image),
    area-averaged down, then streaked with the scaled motion blur; flakes smaller than a pixel therefore make
    dimmer, more numerous specks rather than vanishing. (Rendering any coarser changes how much of the bilinearly
    upsampled noise clears the threshold: at 112 px, severity 2 came out 50 % stronger than severity 3.)
(+) pixelate: int(H c) blocks as in ImageNet-C, but both resizes weigh pixels by their exact overlap instead of
    PIL's BOX filter, which snaps each pixel wholly into one block: a half-pixel misregistration that is 8x larger
    relative to a 28-px image than to a 224-px one, and made 16 blocks (severity 1) look worse than 14 (severity 2).
(++) elastic_transform: the affine part scales with s. ImageNet-C's displacement field is alpha times Gaussian-smoothed per-pixel white noise, whose
    amplitude depends on the pixel grid, so alpha is not simply scaled: it is calibrated so that the RMS
    displacement, as a fraction of the image side, equals ImageNet-C's (the two rows above).
(***) frost: ImageNet-C blends in crops of six photographs of frost that ship with its code (only the first five
    are ever drawn). No such asset is used here: frost is a PROCEDURAL SUBSTITUTE, five fixed ice-crystal
    textures (seeded random dendrites with 60-degree side branches, a soft glow and a plasma-fractal haze, drawn
    at 224-px scale on 512 x 512 and area-downsampled by s), cropped at a random place per image and blended with
    ImageNet-C's weights. For RGB images the texture is tinted pale blue. Frost numbers are therefore comparable
    in spirit, not in detail, with ImageNet-C's.

Other deliberate differences: floats are rounded to the nearest integer (ImageNet-C truncates, <= 1 grey level);
glass_blur does not quantise to uint8 between its two blurs; zoom_blur zooms about the exact image centre (ImageNet-C
crops ceil(H / z) pixels, zooms with scipy and trims, whose integer sizes shift and quantise the zoom by up to a
pixel: negligible at 224 px, not at 28); motion blur is a one-sided half-Gaussian trail like ImageMagick's
-motion-blur, with edge-replicated borders, at an angle drawn from ImageNet-C's range (snow streaks likewise);
brightness is exact (for RGB the HSV value is raised at fixed hue and saturation, which scales the RGB vector).

Severity ladders that are not monotone
--------------------------------------
Mean absolute difference (MAD) from the clean image grows with severity for every type except at three steps,
all built into ImageNet-C's own ladders (measured on the first 2,000 Fashion-MNIST test images):
- elastic_transform: severities 1-2 are large smooth warps (affine jitter 11 % and 22 % of the side), 3-5 a small
  affine (2 %) plus high-frequency jitter; ImageNet-C's own AlexNet error is 52.6, 70.1, 55.7, 64.1, 80.6 %.
  At 28 px the jitter is sub-pixel (RMS 0.10-0.25 px), so 3-5 are mild: MAD 33.5, 52.9, 11.1, 11.6, 13.0.
- frost, 3 -> 4: only the image weight drops (0.70 -> 0.65) under the same frost weight 0.7; where frost outshines
  the image that brings the result closer to the clean pixel, so the MAD is flat (53.2, 53.2; AlexNet error rises
  only 88.8 -> 89.9 %).
- fog, 3 -> 4: same amount (2.5), only the wibble decay drops (1.7 -> 1.5), so the fog gets rougher, not thicker:
  MAD 72.4 -> 72.8, within sampling noise of a 64-image batch.

Determinism
-----------
Every random number for image i comes from its own numpy Generator seeded with sha256 of
(seed, corruption, severity, start_index + i); no global RNG state is read. All batched arithmetic is elementwise
(convolutions are explicit sequences of shifted multiply-adds, resampling gathers four neighbours; pixelate is one
fixed-size matrix product per image), so an image's output is bit-identical however the batch is split:
corrupt(x[:100]) and corrupt(x[100:], start_index=100) concatenate to corrupt(x). (Identical on one machine and
library stack; another CPU or BLAS may differ in the last float bit and so, rarely, by one grey level.)

Building and caching
--------------------
corrupted_test_set() builds all 75 sets (about 9 s per 1,000 28-px images on 2 busy CPU cores, so ~1.5 min for
Fashion-MNIST's 10,000) and keeps each in its own file, `<name>-s<severity>-seed<seed>-<fingerprint>-v<version>.pt`
(7.8 MB per set of 10,000), written atomically. torch runs single-threaded inside corrupt() (see _one_thread).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import io
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 224  # ImageNet-C's image side; spatial parameters below are in its pixels
CACHE_VERSION = 1  # bump when any corruption's output changes, so old cache files are not reused
_CHUNK = 1024  # images per internal batch (outputs do not depend on it)

# Severity ladders of the ImageNet-C reference code, in its 224-px units.
_GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT_NOISE = (60, 25, 12, 5, 3)
_IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)
_DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, anti-alias sigma
_GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max displacement, iterations
_MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma
_ZOOM = (  # np.arange(1, stop, step), as in ImageNet-C
    tuple(np.arange(1, 1.11, 0.01)),
    tuple(np.arange(1, 1.16, 0.01)),
    tuple(np.arange(1, 1.21, 0.02)),
    tuple(np.arange(1, 1.26, 0.02)),
    tuple(np.arange(1, 1.31, 0.03)),
)
_SNOW = (  # noise mean, noise std, flake zoom, threshold, streak radius, streak sigma, image blend
    (0.1, 0.3, 3.0, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
_FROST = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # image weight, frost weight
_FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # amount, wibble decay
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_ELASTIC = (  # alpha, sigma, affine jitter; ImageNet-C writes them as multiples of 244 (sic)
    (244 * 2, 244 * 0.7, 244 * 0.1),
    (244 * 2, 244 * 0.08, 244 * 0.2),
    (244 * 0.05, 244 * 0.01, 244 * 0.02),
    (244 * 0.07, 244 * 0.01, 244 * 0.02),
    (244 * 0.12, 244 * 0.01, 244 * 0.02),
)
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
_JPEG_QUALITY = (25, 18, 15, 10, 7)

_SNOW_RENDER_SIDE = 224  # the flake layer is drawn at ImageNet-C's own resolution, then area-averaged down
_FROST_BANK_SIDE = 512  # procedural frost textures, in 224-px units
_FROST_BANK_COUNT = 5
_FROST_TINT = (0.88, 0.95, 1.0)  # RGB tint of the frost texture (greyscale images use it untinted)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_corruption(corruption: object) -> str:
    if isinstance(corruption, str) and corruption in CORRUPTIONS:
        return corruption
    close = difflib.get_close_matches(str(corruption), CORRUPTIONS, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown corruption {corruption!r}.{hint} Valid names: {', '.join(CORRUPTIONS)}")


def _check_severity(severity: object) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be an integer from 1 to 5 (ImageNet-C's levels), got {severity!r}")
    return int(severity)


def _as_nchw(images: object) -> Tensor:
    """The images as a contiguous CPU (N, C, H, W) uint8 tensor, or a ValueError/TypeError saying what to change."""
    if not isinstance(images, Tensor):
        raise TypeError(
            f"images must be a torch.Tensor of uint8 pixels, got {type(images).__name__}; wrap arrays with torch.from_numpy"
        )
    if images.dtype != torch.uint8:
        raise TypeError(
            f"images must be uint8 with values 0..255, got dtype {images.dtype}; pass uint8 images "
            "(for floats in [0, 1]: (x * 255).round().to(torch.uint8))"
        )
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.ndim != 4:
        raise ValueError(
            f"images must have shape (N, H, W) or (N, C, H, W), got {images.ndim} dims {tuple(images.shape)}; "
            "for a single image pass image[None]"
        )
    _, channels, height, width = images.shape
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 (greyscale) or 3 (RGB) channels in dim 1, got shape {tuple(images.shape)}")
    if height != width or height < 8:
        raise ValueError(f"images must be square and at least 8 x 8 pixels, got {height} x {width}; crop or resize them first")
    return images.detach().cpu().contiguous()


# --------------------------------------------------------------------------------------------
# Seeds, borders, filters and resampling (all batch-split invariant)
# --------------------------------------------------------------------------------------------


def _stable_seed(*parts: object) -> int:
    """A 128-bit seed from sha256 of the parts (never Python's per-process salted hash())."""
    text = "lookupvit.corruptions|" + "|".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "little")


def _generators(seed: int, corruption: str, severity: int, start: int, count: int) -> list[np.random.Generator]:
    return [np.random.Generator(np.random.PCG64(_stable_seed(seed, corruption, severity, start + i))) for i in range(count)]


def _border_index(index: Tensor, size: int, mode: str) -> Tensor:
    """Map integer positions outside 0..size-1 back inside: 'edge' (aaa|abcd), 'symmetric' (ba|abcd, scipy's
    'reflect'), 'reflect' (cb|abcd, OpenCV's default BORDER_REFLECT_101)."""
    if mode == "edge" or size == 1:
        return index.clamp(0, size - 1)
    if mode == "symmetric":
        index = index.remainder(2 * size)
        return torch.where(index >= size, 2 * size - 1 - index, index)
    if mode == "reflect":
        index = index.remainder(2 * size - 2)
        return torch.where(index >= size, 2 * size - 2 - index, index)
    raise ValueError(f"unknown border mode {mode!r}")


def _pad(x: Tensor, rows: int, cols: int, mode: str) -> Tensor:
    height, width = x.shape[-2:]
    row_index = _border_index(torch.arange(-rows, height + rows), height, mode)
    col_index = _border_index(torch.arange(-cols, width + cols), width, mode)
    return x.index_select(-2, row_index).index_select(-1, col_index)


def _correlate(x: Tensor, kernel: np.ndarray | Tensor, mode: str) -> Tensor:
    """out[..., i, j] = sum_ab kernel[a, b] x[..., i + a - r, j + b - r] with `mode` borders.

    `kernel` is one (k, k) array for all images or a (N, k, k) tensor, one per image. The sum is a fixed sequence of
    elementwise multiplies and adds, so an image's result never depends on the rest of the batch."""
    size = kernel.shape[-1]
    radius = size // 2
    height, width = x.shape[-2:]
    padded = _pad(x, radius, radius, mode)
    out = torch.zeros_like(x)
    per_image = kernel.ndim == 3
    if per_image:
        kernel = kernel.to(x.dtype).view(-1, 1, size, size)
    for a in range(size):
        for b in range(size):
            if per_image:
                weight = kernel[:, :, a : a + 1, b : b + 1]
                if not bool(weight.any()):  # skipping a zero tap adds exactly +0, so this cannot change any image
                    continue
            else:
                weight = float(kernel[a, b])
                if weight == 0.0:
                    continue
            out += padded[..., a : a + height, b : b + width] * weight
    return out


def _correlate_separable(x: Tensor, taps: Sequence[float], mode: str) -> Tensor:
    """The same symmetric 1-D taps along rows, then along columns."""
    radius = len(taps) // 2
    height, width = x.shape[-2:]
    padded = _pad(x, radius, 0, mode)
    rows = torch.zeros_like(x)
    for a, weight in enumerate(taps):
        if weight != 0.0:
            rows += padded[..., a : a + height, :] * float(weight)
    padded = _pad(rows, 0, radius, mode)
    out = torch.zeros_like(x)
    for b, weight in enumerate(taps):
        if weight != 0.0:
            out += padded[..., :, b : b + width] * float(weight)
    return out


def _tent(offsets: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(len(offsets), len(points)) overlap weights max(0, 1 - |j - t|) of unit pixels at offset j and a point at t."""
    return np.clip(1.0 - np.abs(offsets[:, None] - points[None, :]), 0.0, None)


def _trim(kernel: np.ndarray) -> np.ndarray:
    """Drop all-zero outer rings (or end taps) of a centred kernel."""
    while kernel.shape[0] > 1 and not kernel[[0, -1]].any() and (kernel.ndim == 1 or not kernel[:, [0, -1]].any()):
        kernel = kernel[1:-1, 1:-1] if kernel.ndim == 2 else kernel[1:-1]
    return kernel


@functools.cache
def _gaussian_taps(sigma: float, truncate: float) -> tuple[float, ...]:
    """1-D taps of a Gaussian of std `sigma` px (cut at truncate * sigma), integrated over pixel areas."""
    if sigma <= 0:
        return (1.0,)
    step = min(1 / 64, sigma / 16)
    half = math.ceil(truncate * sigma / step)
    points = np.arange(-half, half + 1) * step
    density = np.exp(-0.5 * (points / sigma) ** 2)
    radius = math.ceil(truncate * sigma) + 1
    taps = _tent(np.arange(-radius, radius + 1, dtype=np.float64), points) @ density
    return tuple(_trim(taps / taps.sum()))


@functools.cache
def _disk_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    """ImageNet-C's defocus kernel (a disk of `radius` px blurred by a small Gaussian), integrated over pixel areas."""
    step = 1 / 32
    extent = radius + 3 * alias_sigma + 2 * step
    half = math.ceil(extent / step)
    points = np.arange(-half, half + 1) * step
    density = (points[:, None] ** 2 + points[None, :] ** 2 <= radius**2).astype(np.float64)
    if alias_sigma > 0:
        spread = math.ceil(3 * alias_sigma / step)
        gauss = np.exp(-0.5 * (np.arange(-spread, spread + 1) * step / alias_sigma) ** 2)
        density = np.apply_along_axis(np.convolve, 0, density, gauss, "same")
        density = np.apply_along_axis(np.convolve, 1, density, gauss, "same")
    reach = math.ceil(extent) + 1
    tent = _tent(np.arange(-reach, reach + 1, dtype=np.float64), points)
    kernel = tent @ density @ tent.T
    return _trim(kernel / kernel.sum())


def _motion_kernels(angles: Sequence[float], radius: float, sigma: float, dtype: torch.dtype) -> Tensor:
    """(N, k, k) one-sided motion-blur kernels like ImageMagick's -motion-blur: a half-Gaussian trail of std `sigma`
    and length 2 * radius px from the pixel along `angles` (degrees, 0 = +x, counter-clockwise), over pixel areas."""
    length = 2 * radius
    count = max(8, math.ceil(8 * length))
    t = (np.arange(count) + 0.5) * (length / count)
    weights = np.exp(-0.5 * (t / sigma) ** 2)
    weights /= weights.sum()
    reach = math.ceil(length) + 1
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    cos = torch.tensor([math.cos(math.radians(angle)) for angle in angles], dtype=torch.float64)
    sin = torch.tensor([math.sin(math.radians(angle)) for angle in angles], dtype=torch.float64)
    kernels = torch.zeros(len(angles), 2 * reach + 1, 2 * reach + 1, dtype=torch.float64)
    for point, weight in zip(t, weights):
        row = (1.0 - (offsets[None, :] + sin[:, None] * float(point)).abs()).clamp(min=0.0)  # row offset -t sin
        col = (1.0 - (offsets[None, :] - cos[:, None] * float(point)).abs()).clamp(min=0.0)  # column offset t cos
        kernels += (row[:, :, None] * float(weight)) * col[:, None, :]
    return kernels.to(dtype)


def _bilinear(x: Tensor, rows: Tensor, cols: Tensor, mode: str) -> Tensor:
    """Sample x (N, C, H, W) at float positions rows/cols ((N or 1), H', W') with bilinear weights and `mode` borders."""
    batch, channels, height, width = x.shape
    row0, col0 = rows.floor(), cols.floor()
    frac_row = (rows - row0).to(x.dtype).unsqueeze(1)
    frac_col = (cols - col0).to(x.dtype).unsqueeze(1)
    row0, col0 = row0.long(), col0.long()
    flat = x.reshape(batch, channels, height * width)
    out_shape = (batch, channels, *rows.shape[1:])

    def take(r: Tensor, c: Tensor) -> Tensor:
        index = (_border_index(r, height, mode) * width + _border_index(c, width, mode)).reshape(r.shape[0], 1, -1)
        return flat.gather(2, index.expand(batch, channels, -1)).reshape(out_shape)

    top = take(row0, col0) * (1 - frac_col) + take(row0, col0 + 1) * frac_col
    bottom = take(row0 + 1, col0) * (1 - frac_col) + take(row0 + 1, col0 + 1) * frac_col
    return top * (1 - frac_row) + bottom * frac_row


def _plasma(uniforms: Tensor, mapsize: int, decay: float) -> Tensor:
    """Diamond-square height maps in [0, 1], as ImageNet-C's plasma_fractal, one per row of `uniforms` (N, count)
    of U(-1, 1) numbers (count = _plasma_count(mapsize))."""
    batch = uniforms.shape[0]
    heights = torch.zeros(batch, mapsize, mapsize, dtype=torch.float64)
    used = 0

    def noisy_mean(total: Tensor, amplitude: float) -> Tensor:
        nonlocal used
        size = total[0].numel()
        noise = uniforms[:, used : used + size].reshape(total.shape)
        used += size
        return total / 4 + amplitude * noise

    step, wibble = mapsize, 100.0
    while step >= 2:
        half = step // 2
        amplitude = wibble * wibble
        corners = heights[:, 0::step, 0::step]
        total = corners + corners.roll(-1, dims=1)
        total = total + total.roll(-1, dims=2)
        heights[:, half::step, half::step] = noisy_mean(total, amplitude)
        centres = heights[:, half::step, half::step]
        corners = heights[:, 0::step, 0::step]
        total = (centres + centres.roll(1, dims=1)) + (corners + corners.roll(-1, dims=2))
        heights[:, 0::step, half::step] = noisy_mean(total, amplitude)
        total = (centres + centres.roll(1, dims=2)) + (corners + corners.roll(-1, dims=1))
        heights[:, half::step, 0::step] = noisy_mean(total, amplitude)
        step //= 2
        wibble /= decay
    heights = heights - heights.amin(dim=(1, 2), keepdim=True)
    return heights / heights.amax(dim=(1, 2), keepdim=True)


def _plasma_count(mapsize: int) -> int:
    count, step = 0, mapsize
    while step >= 2:
        count += 3 * (mapsize // step) ** 2
        step //= 2
    return count


def _resize_area(image: np.ndarray, side: int) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))[None, None]
    return torch.nn.functional.interpolate(tensor, size=(side, side), mode="area")[0, 0].numpy()


def _uniform_stack(rngs: Sequence[np.random.Generator], low: float, high: float, shape: tuple[int, ...]) -> Tensor:
    return torch.from_numpy(np.stack([g.uniform(low, high, shape) for g in rngs]))


# --------------------------------------------------------------------------------------------
# The corruptions: (uint8 (N, C, H, W), severity, per-image generators) -> uint8 (N, C, H, W)
# --------------------------------------------------------------------------------------------

CorruptionFn = Callable[[Tensor, int, Sequence[np.random.Generator]], Tensor]
_REGISTRY: dict[str, CorruptionFn] = {}


def _on_floats(name: str) -> Callable[[Callable[[Tensor, int, Sequence[np.random.Generator]], Tensor]], CorruptionFn]:
    """Register a corruption written on float32 images in [0, 1]; its output is clipped and rounded to uint8."""

    def register(fn: Callable[[Tensor, int, Sequence[np.random.Generator]], Tensor]) -> CorruptionFn:
        def on_uint8(images: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
            out = fn(images.to(torch.float32) / 255, severity, rngs)
            return torch.floor(out.clamp(0, 1) * 255 + 0.5).to(torch.uint8)

        _REGISTRY[name] = on_uint8
        return fn

    return register


def _on_pil(name: str) -> Callable[[Callable[[object, int], object]], Callable[[object, int], object]]:
    """Register a deterministic corruption of one PIL image (mode L or RGB), applied image by image."""

    def register(fn: Callable[[object, int], object]) -> Callable[[object, int], object]:
        def on_uint8(images: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
            from PIL import Image

            out = torch.empty_like(images)
            for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
                pil = Image.fromarray(np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image))
                result = np.asarray(fn(pil, severity), dtype=np.uint8).reshape(image.shape)
                out[i] = torch.from_numpy(result.copy()).permute(2, 0, 1)
            return out

        _REGISTRY[name] = on_uint8
        return fn

    return register


@_on_floats("gaussian_noise")
def _gaussian_noise(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    std = _GAUSSIAN_NOISE[severity - 1]
    noise = torch.from_numpy(np.stack([g.normal(0.0, std, x.shape[1:]) for g in rngs]))
    return x + noise.to(x.dtype)


@_on_floats("shot_noise")
def _shot_noise(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    photons = _SHOT_NOISE[severity - 1]
    rates = x.to(torch.float64).numpy() * photons
    counts = np.stack([g.poisson(rate) for g, rate in zip(rngs, rates)])
    return torch.from_numpy(counts / photons).to(x.dtype)


@_on_floats("impulse_noise")
def _impulse_noise(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    amount = _IMPULSE_NOISE[severity - 1]  # fraction of values replaced, half by 0 (pepper), half by 1 (salt)
    draws = torch.from_numpy(np.stack([g.random((2, *x.shape[1:])) for g in rngs]))
    flipped, salt = draws[:, 0] < amount, draws[:, 1] < 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


@_on_floats("defocus_blur")
def _defocus_blur(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    radius, alias = _DEFOCUS[severity - 1]
    scale = x.shape[-1] / REFERENCE_SIZE
    return _correlate(x, _disk_kernel(radius * scale, alias * scale), "reflect")


@_on_floats("glass_blur")
def _glass_blur(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    sigma, delta, iterations = _GLASS[severity - 1]
    batch, channels, height, width = x.shape
    scale = width / REFERENCE_SIZE
    taps = _gaussian_taps(sigma * scale, 4.0)  # skimage.filters.gaussian: truncate 4, 'nearest' borders
    reach = max(1, math.ceil(delta * scale))
    span = torch.arange(height - 1 - reach, reach - 1, -1)  # visited bottom-right to top-left, sources stay inside
    positions = [(int(r), int(c)) for r in span for c in torch.arange(width - 1 - reach, reach - 1, -1)]
    draws = []
    for g in rngs:
        offsets = g.integers(-delta, delta, size=(iterations, len(positions), 2))  # ImageNet-C's randint(-d, d)
        draws.append(np.floor(offsets * scale + g.random(offsets.shape)).astype(np.int64))
    shifts = torch.from_numpy(np.stack(draws))  # (N, iterations, positions, (dy, dx))
    jumps = shifts[..., 0] * width + shifts[..., 1]
    x = _correlate_separable(x, taps, "edge")
    flat = x.reshape(batch, channels, height * width)
    rows = torch.arange(batch)
    for it in range(iterations):
        for p, (r, c) in enumerate(positions):
            target = r * width + c
            flat[:, :, target] = flat[rows, :, target + jumps[:, it, p]]
    return _correlate_separable(flat.reshape(x.shape), taps, "edge")


@_on_floats("motion_blur")
def _motion_blur(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    radius, sigma = _MOTION[severity - 1]
    scale = x.shape[-1] / REFERENCE_SIZE
    angles = [g.uniform(-45, 45) for g in rngs]
    return _correlate(x, _motion_kernels(angles, radius * scale, sigma * scale, x.dtype), "edge")


@_on_floats("zoom_blur")
def _zoom_blur(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    side = x.shape[-1]
    centre = (side - 1) / 2
    grid = torch.arange(side, dtype=torch.float64) - centre
    total = torch.zeros_like(x)
    for zoom in _ZOOM[severity - 1]:
        along = centre + grid / float(zoom)
        rows, cols = along[None, :, None].expand(1, side, side), along[None, None, :].expand(1, side, side)
        total += _bilinear(x, rows, cols, "edge")
    return (x + total) / (len(_ZOOM[severity - 1]) + 1)


@_on_floats("snow")
def _snow(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    mean, std, zoom, threshold, radius, sigma, blend = _SNOW[severity - 1]
    batch, channels, side, _ = x.shape
    scale = side / REFERENCE_SIZE
    factor = max(1, round(_SNOW_RENDER_SIDE / side))
    render = side * factor
    cell = zoom * scale * factor  # flake-noise cell, in render pixels
    cells = math.ceil(render / cell) + 2
    noise = torch.from_numpy(np.stack([g.normal(mean, std, (cells, cells)) for g in rngs])).to(x.dtype)
    # bilinear upsampling of the noise (cell centres spaced `cell` apart, centred on the image), one axis at a
    # time as row gathers (plus a transpose), thresholding, and averaging factor x factor blocks back down; in
    # groups of 32 images so the full-resolution intermediates stay small (fresh 200 MB tensors are slow)
    position = (torch.arange(render, dtype=torch.float64) + 0.5 - render / 2) / cell + cells / 2 - 0.5
    low = position.floor().long()
    frac = (position - low).to(x.dtype)[:, None]
    pooled = torch.zeros(batch, side, side, dtype=x.dtype)
    for start in range(0, batch, 32):
        layer = noise[start : start + 32]
        for _ in range(2):
            layer = layer.index_select(1, low) * (1 - frac) + layer.index_select(1, low + 1) * frac
            layer = layer.transpose(1, 2).contiguous()
        layer = torch.nn.functional.threshold(layer, threshold, 0.0).clamp_(max=1.0)  # ImageNet-C: < threshold -> 0
        blocks = layer.view(-1, render, side, factor)
        columns = blocks[..., 0].clone()
        for b in range(1, factor):
            columns += blocks[..., b]
        for a in range(factor):
            pooled[start : start + 32] += columns[:, a::factor, :]
    layer = (pooled / (factor * factor)).unsqueeze(1)
    angles = [g.uniform(-135, -45) for g in rngs]
    layer = _correlate(layer, _motion_kernels(angles, radius * scale, sigma * scale, x.dtype), "edge")
    grey = x if channels == 1 else 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = blend * x + (1 - blend) * torch.maximum(x, grey * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


@_on_floats("frost")
def _frost(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    image_weight, frost_weight = _FROST[severity - 1]
    channels, side = x.shape[1], x.shape[-1]
    bank = _frost_bank(side)
    room = bank.shape[-1] - side + 1
    crops = []
    for g in rngs:
        index, top, left = int(g.integers(len(bank))), int(g.integers(room)), int(g.integers(room))
        crops.append(bank[index, top : top + side, left : left + side])
    frost = torch.stack(crops).unsqueeze(1).to(x.dtype)
    if channels == 3:
        frost = frost * torch.tensor(_FROST_TINT, dtype=x.dtype).view(1, 3, 1, 1)
    return image_weight * x + frost_weight * frost


@_on_floats("fog")
def _fog(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    amount, decay = _FOG[severity - 1]
    side = x.shape[-1]
    span = 256 * side / REFERENCE_SIZE  # ImageNet-C's 256-px map, in these pixels
    mapsize = 2 ** math.ceil(math.log2(span - 1e-9))
    uniforms = _uniform_stack(rngs, -1.0, 1.0, (_plasma_count(mapsize),))
    plasma = _plasma(uniforms, mapsize, decay).unsqueeze(1)
    if mapsize != round(span):  # shrink so the coarsest structure keeps ImageNet-C's size relative to the image
        along = (torch.arange(round(span), dtype=torch.float64) + 0.5) * (mapsize / round(span)) - 0.5
        plasma = _bilinear(
            plasma, along[None, :, None].expand(1, -1, round(span)), along[None, None, :].expand(1, round(span), -1), "edge"
        )
    plasma = plasma[:, :, :side, :side].to(x.dtype)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + amount * plasma) * peak / (peak + amount)


@_on_floats("brightness")
def _brightness(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    shift = _BRIGHTNESS[severity - 1]
    if x.shape[1] == 1:  # HSV value of a grey pixel is the pixel
        return x + shift
    value = x.amax(dim=1, keepdim=True)  # raising V at fixed hue and saturation scales the RGB vector
    raised = (value + shift).clamp(max=1.0)
    return torch.where(value > 0, x * (raised / value.clamp(min=1e-12)), raised.expand_as(x))


@_on_floats("contrast")
def _contrast(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    factor = _CONTRAST[severity - 1]
    # exact per-image, per-channel means (integer sums), so no reduction order can depend on the batch
    sums = torch.round(x * 255).to(torch.int64).sum(dim=(2, 3), keepdim=True)
    means = (sums.to(torch.float64) / (255 * x.shape[2] * x.shape[3])).to(x.dtype)
    return (x - means) * factor + means


@functools.cache
def _field_rms_gain(taps: tuple[float, ...], side: int) -> float:
    """Mean over pixels of sum_q A[p, q]^2 for the 1-D smoothing operator A (symmetric borders): the 2-D field of
    U(-1, 1) noise smoothed by `taps` along both axes has RMS std gain / sqrt(3)."""
    radius = len(taps) // 2
    operator = np.zeros((side, side))
    sources = _border_index(torch.arange(side)[:, None] + torch.arange(-radius, radius + 1)[None, :], side, "symmetric").numpy()
    for p in range(side):
        np.add.at(operator[p], sources[p], np.asarray(taps))
    return float((operator**2).sum(axis=1).mean())


@functools.cache
def _elastic_alpha(severity: int, side: int) -> float:
    """alpha for this side, so that the RMS displacement / side equals ImageNet-C's at 224 px."""
    alpha, sigma, _ = _ELASTIC[severity - 1]
    radius = int(3.0 * sigma + 0.5)  # scipy.ndimage.gaussian_filter with truncate=3: point-sampled taps
    reference = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    reference_gain = _field_rms_gain(tuple(reference / reference.sum()), REFERENCE_SIZE)
    scale = side / REFERENCE_SIZE
    gain = _field_rms_gain(_gaussian_taps(sigma * scale, 3.0), side)
    return alpha * scale * reference_gain / gain


def elastic_rms_displacement(severity: int, side: int) -> float:
    """RMS per-axis displacement (px) of elastic_transform's smooth field at this severity and image side."""
    severity = _check_severity(severity)
    if side == REFERENCE_SIZE:
        alpha, sigma, _ = _ELASTIC[severity - 1]
        radius = int(3.0 * sigma + 0.5)
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        return alpha * _field_rms_gain(tuple(taps / taps.sum()), side) / math.sqrt(3)
    sigma = _ELASTIC[severity - 1][1] * side / REFERENCE_SIZE
    return _elastic_alpha(severity, side) * _field_rms_gain(_gaussian_taps(sigma, 3.0), side) / math.sqrt(3)


@_on_floats("elastic_transform")
def _elastic_transform(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    _, sigma, jitter = _ELASTIC[severity - 1]
    side = x.shape[-1]
    scale = side / REFERENCE_SIZE
    alpha = _elastic_alpha(severity, side)
    # random affine: three points around the centre each moved by U(-jitter, jitter); output(p) = input(A^-1 p)
    centre, reach = float(side // 2), side // 3
    before = np.array([[centre + reach, centre + reach], [centre + reach, centre - reach], [centre - reach, centre - reach]])
    inverse, fields = [], []
    for g in rngs:
        after = before + g.uniform(-jitter * scale, jitter * scale, size=(3, 2))
        inverse.append(np.linalg.solve(np.hstack([after, np.ones((3, 1))]), before))  # rows: [x, y, 1] @ m = source
        fields.append(np.stack([g.uniform(-1, 1, (side, side)), g.uniform(-1, 1, (side, side))]))  # dx, dy
    m = torch.from_numpy(np.stack(inverse))  # (N, 3, 2)
    grid = torch.arange(side, dtype=torch.float64)
    xs, ys = grid[None, None, :], grid[None, :, None]
    src_x = m[:, 0, 0, None, None] * xs + m[:, 1, 0, None, None] * ys + m[:, 2, 0, None, None]
    src_y = m[:, 0, 1, None, None] * xs + m[:, 1, 1, None, None] * ys + m[:, 2, 1, None, None]
    x = _bilinear(x, src_y, src_x, "reflect")  # cv2.warpAffine, BORDER_REFLECT_101
    noise = torch.from_numpy(np.stack(fields)).to(x.dtype)
    field = _correlate_separable(noise, _gaussian_taps(sigma * scale, 3.0), "symmetric") * alpha
    return _bilinear(x, ys + field[:, 1], xs + field[:, 0], "symmetric")  # map_coordinates(mode='reflect')


def _overlap(count_out: int, count_in: int) -> np.ndarray:
    """(count_out, count_in) fractions of each output pixel covered by each input pixel, both tiling [0, 1]."""
    edges_out, edges_in = np.linspace(0, 1, count_out + 1), np.linspace(0, 1, count_in + 1)
    overlap = np.minimum(edges_out[1:, None], edges_in[None, 1:]) - np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    overlap = np.clip(overlap, 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


@functools.cache
def _pixelate_matrix(side: int, blocks: int) -> np.ndarray:
    return _overlap(side, blocks) @ _overlap(blocks, side)


@_on_floats("pixelate")
def _pixelate(x: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    # ImageNet-C: PIL BOX resize to int(side * c) and back. Here both resizes weigh pixels by exact overlap area:
    # PIL's BOX snaps every pixel wholly into one block, a half-pixel misregistration that is 8x larger relative
    # to a 28-px image than to a 224-px one (and makes 16 blocks look worse than 14 at 28 px).
    side = x.shape[-1]
    matrix = _pixelate_matrix(side, int(side * _PIXELATE[severity - 1]))
    planes = x.to(torch.float64).reshape(-1, side, side).numpy()
    out = np.stack([matrix @ plane @ matrix.T for plane in planes])  # one fixed-size product per plane
    return torch.from_numpy(out).reshape(x.shape).to(x.dtype)


@_on_pil("jpeg_compression")
def _jpeg_compression(image, severity: int):
    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=_JPEG_QUALITY[severity - 1])
    buffer.seek(0)
    return Image.open(buffer).convert(image.mode)


# --------------------------------------------------------------------------------------------
# Procedural frost (the substitute for ImageNet-C's frost photographs)
# --------------------------------------------------------------------------------------------


def _frost_texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """One ice-crystal texture in [0, 1] (224-px units): dendrites with 60-degree side branches, glow and haze."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    stack = [
        (rng.uniform(-20, side + 20), rng.uniform(-20, side + 20), rng.uniform(0, 2 * math.pi), rng.uniform(40, 170), 0)
        for _ in range(side * side // 3500)
    ]
    while stack:
        x, y, angle, length, depth = stack.pop()
        steps = max(2, int(length / 5))
        piece = length / steps
        shade = int(255 * 0.8**depth * rng.uniform(0.55, 1.0))
        width = max(1, 3 - depth)
        for _ in range(steps):
            angle += rng.normal(0, 0.06)
            nx, ny = x + piece * math.cos(angle), y + piece * math.sin(angle)
            draw.line([(x, y), (nx, ny)], fill=shade, width=width)
            if depth < 3 and rng.random() < 0.5:
                side_sign = 1 if rng.random() < 0.5 else -1
                stack.append(
                    (nx, ny, angle + side_sign * math.pi / 3 + rng.normal(0, 0.08), length * rng.uniform(0.15, 0.4), depth + 1)
                )
            x, y = nx, ny
    crystals = torch.from_numpy(np.asarray(canvas, dtype=np.float64) / 255)[None, None]
    sharp = _correlate_separable(crystals, _gaussian_taps(0.6, 3.0), "symmetric")[0, 0].numpy()
    glow = _correlate_separable(crystals, _gaussian_taps(5.0, 3.0), "symmetric")[0, 0].numpy()
    uniforms = torch.from_numpy(rng.uniform(-1, 1, (1, _plasma_count(side))))
    haze = _plasma(uniforms, side, 2.0)[0].numpy()
    texture = 0.12 + 0.25 * haze + 0.8 * sharp + 1.6 * glow
    return np.clip(texture / np.percentile(texture, 99.5), 0, 1)


@functools.lru_cache(maxsize=1)
def _frost_bank_reference() -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(_stable_seed("frost-bank", 1)))  # fixed: the textures are an asset
    return np.stack([_frost_texture(rng, _FROST_BANK_SIDE) for _ in range(_FROST_BANK_COUNT)])


@functools.lru_cache(maxsize=8)
def _frost_bank(image_side: int) -> Tensor:
    """The frost textures area-resampled to this image size (a 28-px image gets 64 x 64 textures)."""
    side = max(image_side + 1, round(_FROST_BANK_SIDE * image_side / REFERENCE_SIZE))
    return torch.from_numpy(np.stack([_resize_area(texture, side) for texture in _frost_bank_reference()]))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _one_thread():
    """Run torch single-threaded for a while: the corruptions are long chains of small elementwise ops, which gain
    little from intra-op threads and, on a machine whose cores are busy (say with training), lose 10-100x to
    OpenMP threads waiting on each other (64 images x 75 sets: 1.5 s single-threaded, over a minute with 2 threads
    beside a training run). The previous setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def corrupt(images: Tensor, corruption: str, severity: int, seed: int = 0, start_index: int = 0) -> Tensor:
    """`images` (uint8, (N, H, W) or (N, C, H, W), C = 1 or 3) with an ImageNet-C corruption at `severity` (1-5).

    Image i uses random numbers seeded by (seed, corruption, severity, start_index + i) only, so the result is
    reproducible and independent of batching. Returns uint8 of the input's shape (on the input's device)."""
    corruption = _check_corruption(corruption)
    severity = _check_severity(severity)
    if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
        raise ValueError(f"start_index must be a non-negative int (the index of images[0] in its dataset), got {start_index!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    batch = _as_nchw(images)
    out = torch.empty_like(batch)
    fn = _REGISTRY[corruption]
    with _one_thread():
        for low in range(0, len(batch), _CHUNK):
            chunk = batch[low : low + _CHUNK]
            out[low : low + len(chunk)] = fn(
                chunk, severity, _generators(seed, corruption, severity, start_index + low, len(chunk))
            )
    return out.reshape(images.shape).to(images.device)


def images_fingerprint(images: Tensor) -> str:
    """First 16 hex digits of sha256 over the images' shape and bytes: names the cache files built from them."""
    digest = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}|".encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _cache_path(cache_dir: Path, corruption: str, severity: int, seed: int, fingerprint: str) -> Path:
    return cache_dir / f"{corruption}-s{severity}-seed{seed}-{fingerprint}-v{CACHE_VERSION}.pt"


def _load_cached(path: Path, images: Tensor, meta: dict[str, object]) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated, corrupt or not a torch file: each raises its own kind
        warnings.warn(f"cache file {path} is unreadable ({type(error).__name__}: {error}); rebuilding it", stacklevel=3)
        return None
    stored = payload.get("images") if isinstance(payload, dict) else None
    problem = None
    if not isinstance(stored, Tensor):
        problem = "has no image tensor"
    elif stored.dtype != torch.uint8 or stored.shape != images.shape:
        problem = f"holds {stored.dtype} {tuple(stored.shape)}, expected torch.uint8 {tuple(images.shape)}"
    elif any(payload.get(key) != value for key, value in meta.items()):
        found = {key: payload.get(key) for key in meta}
        problem = f"was built for {found}, expected {meta}"
    if problem:
        warnings.warn(f"cache file {path} {problem}; rebuilding it", stacklevel=3)
        return None
    return stored


def _save_atomic(path: Path, payload: dict[str, object]) -> None:
    """Write to a temporary file in the same folder, then rename: a killed build never leaves a partial cache file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def corrupted_test_set(
    images: Tensor,
    cache_dir: str | os.PathLike,
    seed: int = 0,
    corruptions: Iterable[str] = CORRUPTIONS,
    severities: Iterable[int] = SEVERITIES,
    progress: bool = True,
) -> dict[tuple[str, int], Tensor]:
    """Every (corruption, severity) version of `images`, each cached as its own file in `cache_dir`.

    A rerun loads the files that exist and builds only the missing ones; a file that is unreadable, of the wrong
    shape/dtype or built for other settings is rebuilt (with a warning). File names carry a fingerprint of the
    images, the seed and CACHE_VERSION, so a cache built from other images or another version is never reused."""
    _as_nchw(images)
    corruptions = [_check_corruption(name) for name in corruptions]
    severities = [_check_severity(severity) for severity in severities]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = images_fingerprint(images)
    jobs = [(name, severity) for name in corruptions for severity in severities]
    results: dict[tuple[str, int], Tensor] = {}
    bar = tqdm(jobs, desc="ImageNet-C corruptions", unit="set", disable=not progress)
    for name, severity in bar:
        bar.set_postfix_str(f"{name} {severity}", refresh=False)
        path = _cache_path(cache_dir, name, severity, seed, fingerprint)
        meta = {"corruption": name, "severity": severity, "seed": seed, "fingerprint": fingerprint, "version": CACHE_VERSION}
        cached = _load_cached(path, images, meta)
        if cached is None:
            cached = corrupt(images, name, severity, seed=seed)
            _save_atomic(path, {"images": cached.cpu(), **meta})
        results[(name, severity)] = cached.to(images.device)
    return results


def plot_corruption_grid(image: Tensor, path: str | os.PathLike, seed: int = 0, index: int = 0) -> None:
    """Save a grid of one image (uint8 (H, W), (1, H, W) or (3, H, W)): a row per corruption, columns clean + severities."""
    from matplotlib.figure import Figure

    batch = image[None] if image.ndim in (2, 3) else image
    _as_nchw(batch)
    fig = Figure(figsize=(1.2 * (len(SEVERITIES) + 1) + 1.4, 1.2 * len(CORRUPTIONS)))
    axes = fig.subplots(len(CORRUPTIONS), len(SEVERITIES) + 1, squeeze=False)

    def show(ax, pixels: Tensor) -> None:
        pixels = pixels.reshape(-1, *pixels.shape[-2:])
        if len(pixels) == 1:
            ax.imshow(pixels[0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(pixels.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])

    for row, name in enumerate(CORRUPTIONS):
        show(axes[row, 0], batch[0])
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        for col, severity in enumerate(SEVERITIES, start=1):
            show(axes[row, col], corrupt(batch, name, severity, seed=seed, start_index=index)[0])
    for col, title in enumerate(["clean", *(f"severity {s}" for s in SEVERITIES)]):
        axes[0, col].set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
