"""Image decoding: 16-bit images are scaled to 8 bits, never clipped."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gca_jax.data import DatasetError, load_dataset
from gca_jax.data import decode


def write_png16(path: Path, samples: np.ndarray) -> None:
  """A real 16-bit PNG of uint16 ``samples`` (H, W) grey or (H, W, C) with C
  2 (grey+alpha), 3 (RGB) or 4 (RGBA), encoded with numpy and zlib (Pillow
  writes 16-bit grey only)."""
  samples = np.asarray(samples, ">u2")
  if samples.ndim == 2:
    samples = samples[..., None]
  height, width, channels = samples.shape
  color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
  rows = b"".join(b"\x00" + samples[y].tobytes() for y in range(height))

  def chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body)))

  header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                   + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def high_byte(samples) -> np.ndarray:
  return (np.asarray(samples, np.uint16) >> 8).astype(np.uint8)


RAMP = np.array([[0, 255, 256, 1000, 32767, 32768], [40000, 65279, 65280, 65534, 65535, 0]],
                np.uint16)


@pytest.mark.parametrize("value,expected", [(0, 0), (257, 1), (32768, 128), (49152, 192),
                                            (65535, 255)])
def test_16bit_grey_png_from_pillow_is_scaled(tmp_path, value, expected):
  path = tmp_path / "grey16.png"
  Image.fromarray(np.full((4, 5), value, np.uint16)).save(path)
  with Image.open(path) as image:
    assert image.mode.startswith("I")  # really a 16-bit file
  decoded = decode.decode_image(path)
  assert decoded.dtype == np.uint8 and decoded.shape == (4, 5, 3)
  np.testing.assert_array_equal(decoded, expected)


def test_16bit_grey_ramp_is_monotone_and_within_one_level(tmp_path):
  path = tmp_path / "ramp16.png"
  values = np.arange(0, 65536, 97, dtype=np.uint16).reshape(1, -1)
  Image.fromarray(values).save(path)
  decoded = decode.decode_image(path)[0, :, 0].astype(int)
  assert np.all(np.diff(decoded) >= 0)
  exact = values[0] * 255.0 / 65535.0
  assert np.abs(decoded - exact).max() <= 1.0


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_of_every_colour_type_is_scaled(tmp_path, channels):
  """Grey, grey+alpha, RGB and RGBA at 16 bits: colour is the high byte of
  each sample (the alpha channel is dropped); grey is replicated."""
  rng = np.random.default_rng(channels)
  samples = rng.integers(0, 65536, (3, 4, channels), dtype=np.uint16)
  samples[0, :2, 0] = (32768, 65535)
  write_png16(tmp_path / "c.png", samples[..., 0] if channels == 1 else samples)
  decoded = decode.decode_image(tmp_path / "c.png")
  colour = samples[..., :3] if channels >= 3 else np.repeat(samples[..., :1], 3, -1)
  np.testing.assert_array_equal(decoded, high_byte(colour))
  assert decoded[0, 0, 0] == 128 and decoded[0, 1, 0] == 255


def test_16bit_grey_and_its_rgb_copy_decode_alike(tmp_path):
  write_png16(tmp_path / "grey.png", RAMP)
  write_png16(tmp_path / "rgb.png", np.repeat(RAMP[..., None], 3, -1))
  grey, rgb = decode.decode_image(tmp_path / "grey.png"), decode.decode_image(
      tmp_path / "rgb.png")
  np.testing.assert_array_equal(grey, rgb)
  np.testing.assert_array_equal(grey[..., 0], high_byte(RAMP))


def test_16bit_image_resized_keeps_its_grey_level(tmp_path):
  path = tmp_path / "grey16.png"
  Image.fromarray(np.full((40, 60), 32768, np.uint16)).save(path)
  decoded = decode.decode_image(path, size=16)
  assert decoded.shape == (16, 16, 3)
  np.testing.assert_array_equal(decoded, 128)


def test_16bit_pngs_in_an_image_folder(tmp_path):
  for label, values in enumerate(((32768, 65535, 16384), (0, 1000, 50000))):
    for i, value in enumerate(values):
      folder = tmp_path / f"class{label}"
      folder.mkdir(exist_ok=True)
      Image.fromarray(np.full((6, 6), value, np.uint16)).save(folder / f"{i}.png")
  ds = load_dataset(str(tmp_path))
  pixels = sorted(np.concatenate([ds.train.images, ds.test.images])[:, 0, 0, 0].tolist())
  assert pixels == sorted(int(v) >> 8 for v in (32768, 65535, 16384, 0, 1000, 50000))


@pytest.mark.parametrize("mode,kind", [("F", "float"), ("I", "32-bit integer")])
def test_images_without_a_fixed_range_are_refused(tmp_path, mode, kind):
  buffer = io.BytesIO()
  Image.fromarray(np.full((3, 3), 7, np.float32 if mode == "F" else np.int32),
                  ).save(buffer, "TIFF")
  with pytest.raises(DatasetError, match=f"record 3 .*{kind}"):
    decode.decode_image(buffer.getvalue(), what="record 3")


def test_8bit_modes_are_unchanged(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / "rgb.png")
  Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
  Image.fromarray(np.dstack([rgb, np.full((5, 7), 9, np.uint8)])).save(tmp_path / "a.png")
  np.testing.assert_array_equal(decode.decode_image(tmp_path / "rgb.png"), rgb)
  np.testing.assert_array_equal(decode.decode_image(tmp_path / "grey.png"),
                                np.repeat(rgb[..., :1], 3, -1))
  np.testing.assert_array_equal(decode.decode_image(tmp_path / "a.png"), rgb)
