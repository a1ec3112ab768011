"""Turn an uploaded picture of a digit into an MNIST-style 28x28 input, the way MNIST was made:
grayscale, white digit on black, fitted into 20x20 keeping the aspect ratio, then placed in 28x28
so that its centre of mass is at the centre. `decode_upload` is the upload endpoint's codec: a file's
bytes in, one (1, 1, 28, 28) float32 request out, or a 4xx naming what is wrong with the file."""

from __future__ import annotations

import io
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.specs import MNIST_IMAGE_SIZE
from service.errors import Kind, Refused, invalid

Invert = Literal["auto", "yes", "no"]
INVERT_CHOICES: tuple[str, ...] = get_args(Invert)
DIGIT_BOX = 20  # MNIST digits were size-normalized into a 20x20 box
MNIST_CENTRE = MNIST_IMAGE_SIZE // 2  # mean centre of mass of MNIST test digits: (13.99, 14.01)
INK_THRESHOLD = 0.1  # intensity above which a pixel counts as part of the digit


class BlankImageError(ValueError):
    pass


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Float intensities in [0, 1]; transparent areas become white (paper)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(ImageOps.exif_transpose(image).convert("L"), dtype=np.float32) / 255.0


def is_dark_on_light(gray: np.ndarray) -> bool:
    """A bright border means dark ink on light paper (MNIST is light ink on black)."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 0.5


def to_mnist(image: Image.Image, invert: Invert = "auto") -> np.ndarray:
    """(28, 28) float32 in [0, 1]. `invert`: auto-detect dark-on-light drawings, or force it."""
    gray = to_grayscale(image)
    if invert == "yes" or (invert == "auto" and is_dark_on_light(gray)):
        gray = 1.0 - gray
    rows, cols = np.nonzero(gray > INK_THRESHOLD)
    if rows.size == 0:
        raise BlankImageError("the image contains no digit (no pixel brighter than the background)")
    digit = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = digit.shape
    scale = DIGIT_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = Image.fromarray((digit * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    small = np.asarray(resized, dtype=np.float32) / 255.0
    # paste so that the centre of mass lands on pixel (14, 14), where MNIST digits have it
    total = small.sum()
    cy = (small.sum(1) @ np.arange(small.shape[0])) / total
    cx = (small.sum(0) @ np.arange(small.shape[1])) / total
    top = int(round(MNIST_CENTRE - cy))
    left = int(round(MNIST_CENTRE - cx))
    top = min(max(top, 0), MNIST_IMAGE_SIZE - small.shape[0])
    left = min(max(left, 0), MNIST_IMAGE_SIZE - small.shape[1])
    canvas = np.zeros((MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE), dtype=np.float32)
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.clip(canvas, 0.0, 1.0)


def decode_upload(data: bytes, invert: str, max_bytes: int, max_pixels: int) -> np.ndarray:
    """An uploaded image file -> (1, 1, 28, 28) float32; Refused (TOO_LARGE 413, INVALID 400) otherwise.
    The pixel count is checked from the file's header, before anything is decoded (decompression
    bombs: a 25 Mpx PNG can be a 25 KB file)."""
    if invert not in INVERT_CHOICES:
        raise invalid(f"invert is {invert!r}; it must be one of {', '.join(INVERT_CHOICES)}")
    if len(data) > max_bytes:
        raise Refused(Kind.TOO_LARGE, f"image file is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise Refused(Kind.TOO_LARGE, f"image is {w}x{h} pixels; the limit is {max_pixels} pixels")
            img.load()
            x = to_mnist(img, invert)
    except UnidentifiedImageError:
        raise invalid(
            "image: not an image file Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)"
        ) from None
    except BlankImageError as exc:
        raise invalid(f"image: {exc}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise invalid(f"image: could not be decoded ({exc})") from None
    return x[None, None]
