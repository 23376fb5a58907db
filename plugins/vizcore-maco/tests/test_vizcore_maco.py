"""vizcore-maco: the phase is the only parameter, the magnitude stays the natural-image spectrum."""

from __future__ import annotations

import numpy as np
import pytest

vizcore_maco = pytest.importorskip("vizcore_maco")

import torch  # noqa: E402
from vizcore_maco import MacoImage, magnitude, spectrum  # noqa: E402

from vizcore.errors import OptionError  # noqa: E402
from vizcore.plugins import Manager, Settings  # noqa: E402


def test_forward_gives_images_in_range_and_only_the_phase_trains():
    torch.manual_seed(0)
    p = MacoImage((2, 3, 40, 56))
    x = p().detach()
    assert x.shape == (2, 3, 40, 56)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert [n for n, _ in p.named_parameters()] == ["phase"]
    assert float(x.std()) > 0.05  # a textured image, not a flat grey


def test_magnitude_is_fixed_while_the_phase_is_optimized():
    torch.manual_seed(0)
    p = MacoImage((1, 3, 32, 32))
    target = torch.zeros(1, 3, 32, 32)
    target[:, 0, :, :16] = 1.0  # make the left half red
    opt = torch.optim.Adam(p.parameters(), lr=0.1)
    before = float((p().detach() * target).mean())
    for _ in range(30):
        opt.zero_grad()
        (-(p() * target).mean()).backward()
        opt.step()
    assert float((p().detach() * target).mean()) > before + 0.02  # the objective rose through the phase alone
    mag = torch.fft.rfft2(p.spatial().detach(), norm="ortho").abs()[0]
    inner = slice(1, 32 // 2)  # columns 0 and W/2 are folded by the real inverse FFT
    torch.testing.assert_close(mag[..., inner], p.magnitude[..., inner], rtol=1e-3, atol=1e-4)


def test_units_start_alike_so_batched_equals_one_at_a_time():
    torch.manual_seed(3)
    batched = MacoImage((4, 3, 16, 16), units=2)()
    torch.manual_seed(3)
    alone = MacoImage((2, 3, 16, 16), units=1)()
    torch.testing.assert_close(batched[:2], alone)
    torch.testing.assert_close(batched[2:], alone)


@pytest.mark.parametrize("channels", [1, 4])
def test_other_channel_counts_use_the_grey_spectrum(channels):
    x = MacoImage((1, channels, 24, 24))()
    assert x.shape == (1, channels, 24, 24)


def test_1d_inputs_are_refused_with_a_hint():
    with pytest.raises(OptionError, match="2-D"):
        MacoImage((1, 3, 100))


def test_spectrum_falls_like_natural_images_and_sampling_at_the_stored_size_is_exact():
    stats = spectrum.load()
    s = stats.log_magnitude.shape[-2]
    mag = magnitude((s, s), 3).numpy()
    stored = np.exp(np.fft.ifftshift(stats.log_magnitude[:3], axes=-2))
    np.testing.assert_allclose(mag[:, 1:, 1:], stored[:, 1:, 1:], rtol=1e-4)
    # natural images: amplitude ~ 1/f (slope about -1 on log-log between 2 and 64 cycles per image)
    k = np.array([2, 4, 8, 16, 32, 64])
    slope = np.polyfit(np.log(k), np.log(mag[:, 0, k].mean(0)), 1)[0]
    assert -1.4 < slope < -0.7
    small = magnitude((48, 48), 3)
    assert small.shape == (3, 48, 25) and bool(torch.isfinite(small).all())


def test_shipped_spectrum_matches_the_sample_photos():
    pytest.importorskip("skimage")
    fresh = spectrum.compute()
    shipped = spectrum.load()
    np.testing.assert_allclose(fresh.log_magnitude, shipped.log_magnitude, atol=2e-2)
    np.testing.assert_allclose(fresh.color_sqrt, shipped.color_sqrt, atol=1e-5)


def test_registered_through_the_public_hook():
    manager = Manager(Settings(autoload=False))
    manager.register(vizcore_maco, "vizcore-maco")
    assert manager.get("params", "maco") is MacoImage
