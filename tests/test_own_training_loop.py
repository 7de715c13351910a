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
