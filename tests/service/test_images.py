import numpy as np
import pytest
from PIL import Image

from service.images import BlankImageError, is_dark_on_light, to_mnist


def _png_like(arr: np.ndarray) -> Image.Image:
    return Image.fromarray((arr * 255).round().astype(np.uint8), mode="L")


def test_mnist_digit_survives_the_upload_preprocessing(mnist):
    # MNIST digits are already 20x20-fitted and mass-centred: the pipeline must nearly reproduce them
    for i in range(20):
        original = mnist.test.x[i, 0]
        got = to_mnist(_png_like(original))
        assert got.shape == (28, 28) and got.dtype == np.float32
        assert np.corrcoef(got.ravel(), original.ravel())[0, 1] > 0.9


def test_dark_on_light_rgb_drawing_is_inverted_and_rescaled(mnist):
    original = mnist.test.x[0, 0]
    big = _png_like(1.0 - original).resize((280, 280), Image.Resampling.BILINEAR).convert("RGB")
    assert is_dark_on_light(np.asarray(big.convert("L")) / 255.0)
    got = to_mnist(big, "auto")
    assert np.corrcoef(got.ravel(), original.ravel())[0, 1] > 0.9
    # forcing "no" keeps the (wrong) polarity: the result no longer resembles the digit
    assert np.corrcoef(to_mnist(big, "no").ravel(), original.ravel())[0, 1] < 0.5


def test_blank_image_is_rejected():
    with pytest.raises(BlankImageError):
        to_mnist(Image.new("L", (50, 50), 0))
    with pytest.raises(BlankImageError):
        to_mnist(Image.new("RGB", (50, 50), (255, 255, 255)))
