import pytest
import torch

from vizcore.params import FFTImage, PixelImage
from vizcore.regularizers import l1, l2, tv
from vizcore.transforms import Affine, Blur, Jitter, Pad, standard


@pytest.mark.parametrize("cls", [FFTImage, PixelImage])
@pytest.mark.parametrize("shape", [(2, 3, 32, 48), (2, 1, 17, 17), (2, 5, 16, 16), (2, 2, 64)])
def test_params_give_valid_images_of_any_channels_and_rank(cls, shape):
    torch.manual_seed(0)
    p = cls(shape)
    x = p()
    assert x.shape == shape
    assert 0.0 <= float(x.detach().min()) and float(x.detach().max()) <= 1.0
    x.sum().backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in p.parameters())


def test_every_unit_starts_from_the_same_seeded_image():
    torch.manual_seed(3)
    a = FFTImage((4, 3, 16, 16), units=4)()
    torch.manual_seed(3)
    b = FFTImage((1, 3, 16, 16), units=1)()
    for i in range(4):
        assert torch.allclose(a[i], b[0])


def test_fft_images_are_smoother_than_pixel_images_at_equal_noise():
    def roughness(img):
        return float((img[..., 1:] - img[..., :-1]).abs().mean())

    torch.manual_seed(0)
    f = FFTImage((1, 3, 64, 64), decorrelate=False)
    p = PixelImage((1, 3, 64, 64), decorrelate=False)
    with torch.no_grad():
        f.spectrum.data.normal_()
        p.pixels.data.normal_()
        assert roughness(f()) < 0.75 * roughness(p())


def test_transforms_are_differentiable_and_keep_rank():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 40, requires_grad=True)
    y = x
    for t in standard(40) + [Blur(1.0)]:
        y = t(y)
    assert y.dim() == 4 and y.shape[:2] == (2, 3)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    s = torch.rand(2, 2, 50)
    for t in [Pad(3), Jitter(4), Affine(scales=[1.2]), Blur(1.0)]:
        assert t(s).dim() == 3


@pytest.mark.parametrize("shape", [(224, 224), (60, 160), (32, 32)])
def test_standard_transforms_give_the_network_the_pictures_size(shape):
    """Lucid's pad, jitter, zoom and rotation, resampled to the picture's own size (the network's work per step
    is that of the picture, not of Lucid's 1.09x), with the whole padded view still in it: a bright picture keeps
    its mean within the grey border's share."""
    g = torch.Generator().manual_seed(0)
    x = torch.ones(2, 3, *shape)
    for _ in range(5):
        y = x
        for t in standard(max(shape), generator=g):
            y = t(y)
        assert y.shape == x.shape
        assert 0.75 < float(y.mean()) < 1.0  # mostly the picture, some of the grey pad (0.5) at the edges


def test_jitter_and_pad_sizes():
    x = torch.rand(1, 3, 20, 20)
    assert Pad(4)(x).shape[-2:] == (28, 28)
    assert Jitter(6)(x).shape[-2:] == (14, 14)


def test_regularizers_penalize_what_they_name():
    grey = torch.full((1, 3, 8, 8), 0.5)
    noisy = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for reg in (l1(1.0), l2(1.0), tv(1.0)):
        assert float(reg(grey)) == pytest.approx(0.0)
        assert float(reg(noisy)) > 0
