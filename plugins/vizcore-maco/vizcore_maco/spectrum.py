"""The natural-image statistics MACO needs: a mean Fourier magnitude spectrum and the colour covariance.

Computed from scikit-image's bundled sample photos (`skimage.data`, shipped inside the scikit-image wheel: no
download) and stored in `spectrum.npz` next to this file. Regenerate it with `python -m vizcore_maco.spectrum`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 256  #: side of the square crops the spectrum is measured on
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")  #: colour photos in skimage.data
GRAY_PHOTOS = ("camera",)  #: grey photos added to the luminance spectrum
LUMA = np.array([0.299, 0.587, 0.114])
PATH = Path(__file__).with_name("spectrum.npz")


@dataclass(frozen=True)
class Statistics:
    """Log-magnitude spectra (4, SIZE, SIZE//2+1): 3 whitened colour channels then grey, rows fftshift-ed
    (row SIZE//2 is frequency 0), measured with norm="ortho"; the colour mean and covariance square root;
    the grey mean and standard deviation. Pixel values are in 0..1."""

    log_magnitude: np.ndarray
    color_mean: np.ndarray
    color_sqrt: np.ndarray
    gray_mean: float
    gray_std: float


def _photos() -> list[np.ndarray]:
    """The colour sample photos as float arrays (H, W, 3) in 0..1."""
    import skimage.data

    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)
        out.append(np.asarray(img, dtype=np.float64)[..., :3] / 255.0)
    return out


def _crops(img: np.ndarray, size: int) -> list[np.ndarray]:
    """Square crops (whole short side, and halves at five places), each resized to size x size: no randomness."""
    from PIL import Image

    h, w = img.shape[:2]
    crops = []
    for frac, places in ((1.0, ((0.5, 0.5),)), (0.5, ((0.25, 0.25), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25),
                                                         (0.75, 0.75)))):
        side = int(min(h, w) * frac)
        for fy, fx in places:
            y = int(round((h - side) * fy))
            x = int(round((w - side) * fx))
            patch = img[y:y + side, x:x + side]
            chans = [np.asarray(Image.fromarray(patch[..., c].astype(np.float32))
                                .resize((size, size), Image.BICUBIC)) for c in range(patch.shape[-1])]
            crops.append(np.stack(chans, -1).astype(np.float64))
    return crops


def _mean_log_magnitude(crops: list[np.ndarray]) -> np.ndarray:
    """log of the mean |rfft2| over crops, per channel, rows fftshift-ed: (C, S, S//2+1).

    Each crop is Hann-windowed (RMS-preserving) first: a crop's borders are not periodic, and without the window
    their jump adds a cross of energy along both frequency axes that shows as streaks in MACO's images.
    """
    h = np.hanning(crops[0].shape[0])
    window = np.outer(h, h) / np.sqrt(np.mean(np.outer(h, h) ** 2))
    mags = [np.abs(np.fft.rfft2(np.moveaxis(c - c.mean((0, 1)), -1, 0) * window + np.moveaxis(c.mean((0, 1)), -1,
                                0)[:, None, None], norm="ortho")) for c in crops]
    mean = np.mean(mags, axis=0)
    return np.log(np.fft.fftshift(mean, axes=-2) + 1e-8)


def compute(size: int = SIZE) -> Statistics:
    """Measure the statistics from scikit-image's sample photos (needs scikit-image and pillow)."""
    photos = _photos()
    pixels = np.concatenate([p.reshape(-1, 3) for p in photos])
    mean = pixels.mean(0)
    cov = np.cov(pixels, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    sqrt = evecs @ np.diag(np.sqrt(evals)) @ evecs.T
    whiten = evecs @ np.diag(1.0 / np.sqrt(evals)) @ evecs.T
    crops = [c for p in photos for c in _crops(p, size)]
    white = [(c - mean) @ whiten.T for c in crops]
    import skimage.data

    grays = [c @ LUMA for c in crops] + [
        c[..., 0] for name in GRAY_PHOTOS
        for c in _crops(np.asarray(getattr(skimage.data, name)(), dtype=np.float64)[..., None] / 255.0, size)]
    gray_pixels = np.concatenate([g.ravel() for g in grays])
    log_mag = np.concatenate([_mean_log_magnitude(white), _mean_log_magnitude([g[..., None] for g in grays])])
    return Statistics(log_mag.astype(np.float32), mean.astype(np.float32), sqrt.astype(np.float32),
                      float(gray_pixels.mean()), float(gray_pixels.std()))


def save(stats: Statistics, path: Path = PATH) -> None:
    """Store the statistics (spectra as float16: about 0.3 MB)."""
    np.savez_compressed(path, log_magnitude=stats.log_magnitude.astype(np.float16), color_mean=stats.color_mean,
                        color_sqrt=stats.color_sqrt, gray=np.array([stats.gray_mean, stats.gray_std], np.float32),
                        photos=np.array(PHOTOS + GRAY_PHOTOS))


@functools.lru_cache(maxsize=1)
def load(path: Path = PATH) -> Statistics:
    """The shipped statistics."""
    with np.load(path) as f:
        return Statistics(f["log_magnitude"].astype(np.float32), f["color_mean"], f["color_sqrt"],
                          float(f["gray"][0]), float(f["gray"][1]))


if __name__ == "__main__":
    save(compute())
    print(f"wrote {PATH} ({PATH.stat().st_size} bytes)")
