"""The one image and mask reading rule (`forgerytalker.image_utils`): odd pictures read the same everywhere."""

from __future__ import annotations

import io
import zlib
import struct

import numpy as np
import pytest
from PIL import Image

from forgerytalker.image_utils import (
    ImageReadError,
    ImageTooLargeError,
    forged_pixels,
    load_mask,
    load_rgb,
    open_image,
    to_rgb,
)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_16_bit_grayscale_is_scaled_by_its_range_not_saturated(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_rgb(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert (rgb[..., 0] == 255).mean() < 0.01  # saturating would turn almost every pixel white


def test_float_arrays_in_unit_range_and_uint16_arrays():
    values = np.linspace(0.0, 1.0, 100, dtype=np.float32).reshape(10, 10)
    assert np.asarray(to_rgb(values))[..., 1].max() == 255
    assert abs(float(np.asarray(to_rgb(values)).mean()) - 127.5) < 1.0
    chw = np.stack([values] * 3)  # (3, H, W) as torch users have it
    assert np.asarray(to_rgb(chw)).shape == (10, 10, 3)
    assert np.asarray(to_rgb((values * 65535).astype(np.uint16)))[0, 0, 0] == 0
    assert np.asarray(to_rgb((values * 65535).astype(np.uint16)))[-1, -1, 0] == 255


def test_transparency_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red, fully transparent except one pixel
    rgba[0, 0, 3] = 255
    rgb = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA")))
    assert tuple(rgb[0, 0]) == (200, 0, 0)
    assert tuple(rgb[1, 1]) == (255, 255, 255)
    assert tuple(np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA"), background=(0, 0, 0)))[1, 1]) == (0, 0, 0)


def test_grayscale_cmyk_and_palette_become_rgb():
    gray = Image.fromarray(np.full((5, 6), 90, dtype=np.uint8), mode="L")
    assert np.asarray(to_rgb(gray)).shape == (5, 6, 3) and np.asarray(to_rgb(gray))[0, 0, 2] == 90
    cmyk = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # pure red in CMYK
    assert tuple(np.asarray(to_rgb(cmyk))[0, 0]) == (255, 0, 0)
    palette = Image.new("RGB", (3, 3), (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert tuple(np.asarray(to_rgb(palette))[0, 0]) == (10, 20, 30)


def test_exif_orientation_is_applied(tmp_path):
    picture = np.zeros((20, 40, 3), dtype=np.uint8)
    picture[:, :5] = 255  # a white stripe on the left of a landscape picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(picture).save(path, exif=exif, quality=95)
    shown = np.asarray(load_rgb(path))
    assert shown.shape == (40, 20, 3)
    assert shown[:5].mean() > 200 and shown[-5:].mean() < 50  # the stripe is now on top
    assert np.asarray(to_rgb(Image.open(path), apply_exif_orientation=False)).shape == (20, 40, 3)


def test_empty_pictures_are_refused_with_a_message():
    with pytest.raises(ValueError, match="empty"):
        to_rgb(np.zeros((0, 0, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        to_rgb(np.zeros((2, 3, 4, 5)))


def _bomb_png(width: int, height: int) -> bytes:
    """A grayscale PNG whose header announces width × height pixels, with only one row of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + chunk(b"IEND", b"")


def test_pictures_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(30000, 30000))
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        open_image(path)
    small = tmp_path / "wide.png"
    small.write_bytes(_png_bytes(Image.new("RGB", (300, 200))))
    with pytest.raises(ImageTooLargeError, match="60,000 pixels is over the limit of 50,000"):
        open_image(small, max_pixels=50_000)
    monkeypatch.setenv("FORGERYTALKER_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageTooLargeError, match="limit of 1,000"):
        open_image(small)
    monkeypatch.setenv("FORGERYTALKER_MAX_IMAGE_PIXELS", "many")
    with pytest.raises(ValueError, match="FORGERYTALKER_MAX_IMAGE_PIXELS"):
        open_image(small)


def test_truncated_zero_byte_and_non_image_files_name_the_file(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with Image.open(truncated) as image:
        image.verify()  # Pillow's own check passes a truncated JPEG
    with pytest.raises(ImageReadError, match="cut.jpg.*cannot be decoded"):
        open_image(truncated)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png"):
        open_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(ImageReadError, match="notes.jpg"):
        open_image(text)
    with pytest.raises(ImageReadError, match="no such file"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="sample 7"):
        open_image(b"garbage", what="sample 7")


def test_one_mask_rule_for_every_mode():
    blue = np.zeros((4, 4, 3), dtype=np.uint8)
    blue[0, 0] = (0, 0, 1)  # luminance rounds to 0, yet the pixel is marked
    assert forged_pixels(Image.fromarray(blue)).sum() == 1
    assert forged_pixels(blue).sum() == 1
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque but black: not forged
    rgba[1, 1, 0] = 9
    assert forged_pixels(Image.fromarray(rgba, mode="RGBA")).sum() == 1
    assert forged_pixels(rgba).sum() == 1
    sixteen = np.zeros((4, 4), dtype=np.uint16)
    sixteen[2, 2] = 3  # 3/65535 would become 0 in 8 bits; the rule is on the stored value
    assert forged_pixels(Image.fromarray(sixteen)).sum() == 1
    assert forged_pixels(np.array([[0.0, 0.2]])).tolist() == [[False, True]]
    assert forged_pixels(np.ones((1, 3, 3))).shape == (3, 3)
    assert load_mask(_png_bytes(Image.fromarray(blue))).sum() == 1
