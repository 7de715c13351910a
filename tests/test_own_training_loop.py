"""The own-training-loop example of the documentation trains."""

import math
import runpy

from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "docs" / "examples" / "own_training_loop.py"


def test_own_training_loop_example_loss_is_finite_and_decreases():
  example = runpy.run_path(str(EXAMPLE))  # not as __main__: nothing runs on import
  losses = example["train"](steps=40)
  assert len(losses) == 40
  assert all(math.isfinite(loss) for loss in losses)
  first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
  assert last < 0.95 * first, (first, last)


def test_own_training_loop_example_fits_the_page():
  # The page includes the file as written; at the docs' page width a code
  # block shows about 80 columns, so 72 leave a margin.
  wide = [number for number, line in enumerate(EXAMPLE.read_text().splitlines(), 1)
          if len(line) > 72]
  assert not wide, f"lines {wide} of {EXAMPLE.name} are wider than 72 columns"
