"""An empty image record in a JPEG-layout .npz is reported with its index."""

import io

import numpy as np
import pytest
from PIL import Image

from gca_jax.data import DatasetError, load_dataset


def _jpeg(seed):
  image = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "JPEG")
  return np.frombuffer(buffer.getvalue(), np.uint8)


def test_an_empty_image_record_is_named_by_its_index(tmp_path):
  blobs = [_jpeg(i) for i in range(4)]
  blobs[2] = blobs[2][:0]  # image 2 has no bytes
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
  path = tmp_path / "jpeg.npz"
  np.savez(path, train_jpeg=np.concatenate(blobs), train_offsets=offsets,
           train_labels=np.array([0, 1, 0, 1]), test_jpeg=np.concatenate(blobs[:2]),
           test_offsets=offsets[:3], test_labels=np.array([0, 1]))
  with pytest.raises(DatasetError) as refused:
    load_dataset(f"npz:{path}")
  assert str(refused.value) == (
      f"'{path}': train image 2 is an empty record (train_offsets[2] = train_offsets[3] = "
      f"{offsets[2]}); re-create the file with its bytes.")
