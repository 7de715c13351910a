"""ImageNet-100: the 100 ImageNet classes of CMC, as a TensorFlow-free tfds builder.

The builder copies the JPEG files of the 100 classes from a manually
downloaded ImageNet in class-folder layout into tfds ``array_record`` files
(no decoding, no TensorFlow); ``tfds`` then reads them back with
``data_source``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import tensorflow_datasets as tfds

# HobbitLong/CMC imagenet100.txt, in its order (which defines label ids).
CLASSES = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406",
    "n02091831", "n04517823", "n04589890", "n03062245", "n01773797",
    "n01735189", "n07831146", "n07753275", "n03085013", "n04485082",
    "n02105505", "n01983481", "n02788148", "n03530642", "n04435653",
    "n02086910", "n02859443", "n13040303", "n03594734", "n02085620",
    "n02099849", "n01558993", "n04493381", "n02109047", "n04111531",
    "n02877765", "n04429376", "n02009229", "n01978455", "n02106550",
    "n01820546", "n01692333", "n07714571", "n02974003", "n02114855",
    "n03785016", "n03764736", "n03775546", "n02087046", "n07836838",
    "n04099969", "n04592741", "n03891251", "n02701002", "n03379051",
    "n02259212", "n07715103", "n03947888", "n04026417", "n02326432",
    "n03637318", "n01980166", "n02113799", "n02086240", "n03903868",
    "n02483362", "n04127249", "n02089973", "n03017168", "n02093428",
    "n02804414", "n02396427", "n04418357", "n02172182", "n01729322",
    "n02113978", "n03787032", "n02089867", "n02119022", "n03777754",
    "n04238763", "n02231487", "n03032252", "n02138441", "n02104029",
    "n03837869", "n03494278", "n04136333", "n03794056", "n03492542",
    "n02018207", "n04067472", "n03930630", "n03584829", "n02123045",
    "n04229816", "n02100583", "n03642806", "n04336792", "n03259280",
    "n02116738", "n02108089", "n03424325", "n01855672", "n02090622",
)

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download ImageNet (ILSVRC2012) from https://image-net.org and arrange it in
class folders (the usual layout; valprep.sh sorts the validation images):
  <manual_dir>/train/<wnid>/*.JPEG
  <manual_dir>/val/<wnid>/*.JPEG
Only the 100 ImageNet-100 classes are read. Then run
  python -m gca_jax.data.prepare imagenet100 --manual_dir <manual_dir> --data_dir <data_dir>
(no TensorFlow needed)."""

SPLIT_FOLDERS = {"train": "train", "validation": "val"}
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class ImageNet100(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """ImageNet-100 (CMC class list) from a manual ImageNet download."""

  name = "imagenet100"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="ImageNet-100: the 100 ImageNet classes used by CMC.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3),
                                         encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=CLASSES),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    root = Path(dl_manager.manual_dir)
    missing = [f for f in SPLIT_FOLDERS.values() if not (root / f).is_dir()]
    if missing:
      raise FileNotFoundError(f"{root} lacks the folders {missing}.\n"
                              f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return {split: self._generate_examples(root / folder)
            for split, folder in SPLIT_FOLDERS.items()}

  def _generate_examples(self, folder: Path):
    """Yields the encoded image files of the 100 classes found in ``folder``."""
    for wnid in CLASSES:
      class_dir = folder / wnid
      if not class_dir.is_dir():
        continue
      for path in sorted(class_dir.iterdir()):
        if path.suffix.lower() in _IMAGE_SUFFIXES:
          key = f"{wnid}/{path.name}"
          yield key, {"image": path.read_bytes(), "label": wnid,
                      "file_name": key}
