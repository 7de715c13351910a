"""The documentation builds without a warning and documents the API.

The build runs Sphinx as the docs' README says (warnings are errors); the
checks then read the built HTML, so they see what a reader sees.
"""

import ast
import html
import html.parser
import inspect
import re
import subprocess
import sys

import pytest

import gca_jax
from gca_jax import losses, metrics
from tests.conftest import REPO_ROOT

# Functions whose reference entry must document every parameter.
DOCUMENTED = {
    "gca_jax.gca_uot": gca_jax.gca_uot,
    "gca_jax.gca_ince": gca_jax.gca_ince,
    "gca_jax.infonce": gca_jax.infonce,
    "gca_jax.losses.sinkhorn": losses.sinkhorn,
    "gca_jax.domain_target": gca_jax.domain_target,
    "gca_jax.class_target": gca_jax.class_target,
    "gca_jax.metrics.alignment": metrics.alignment,
    "gca_jax.metrics.uniformity": metrics.uniformity,
    "gca_jax.metrics.wdm_lower_bound": metrics.wdm_lower_bound,
    "gca_jax.metrics.wdm_sinkhorn": metrics.wdm_sinkhorn,
}
DOCUMENTED["gca_jax.hierarchical_target"] = gca_jax.hierarchical_target
# Napoleon renders these sections as field lists of parameter names.
PARAMETER_FIELDS = ("Parameters", "Keyword Arguments")


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("docs") / "html"
  build = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
       str(REPO_ROOT / "docs"), str(out)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert build.returncode == 0, f"sphinx-build failed:\n{build.stdout}\n{build.stderr}"
  return out


class _EntryParameters(html.parser.HTMLParser):
  """The parameter names an autodoc entry (``<dt id=name>``) documents."""

  def __init__(self, name: str):
    super().__init__()
    self.name = name
    self.found = False
    self.names = []
    self._depth = 0          # <dl> nesting
    self._entry_depth = None  # nesting of the entry's <dl> while inside it
    self._field_title = None  # text of the field-list <dt> being read
    self._field = None        # the field whose list is being read
    self._strong = None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "dl":
      self._depth += 1
    if self._entry_depth is None:
      if tag == "dt" and attrs.get("id") == self.name and not self.found:
        self.found = True
        self._entry_depth = self._depth
      return
    if tag == "dt" and (attrs.get("class") or "").startswith("field-"):
      self._field_title = ""
    elif tag == "strong" and self._field in PARAMETER_FIELDS:
      self._strong = ""

  def handle_endtag(self, tag):
    if tag == "dl":
      if self._entry_depth is not None and self._depth == self._entry_depth:
        self._entry_depth = None
      self._depth -= 1
    if self._entry_depth is None:
      return
    if tag == "dt" and self._field_title is not None:
      self._field = self._field_title.strip().rstrip(":").strip()
      self._field_title = None
    elif tag == "strong" and self._strong is not None:
      self.names.append(self._strong.strip())
      self._strong = None

  def handle_data(self, data):
    if self._field_title is not None:
      self._field_title += data
    if self._strong is not None:
      self._strong += data


def documented_parameters(html_dir, name: str):
  """The parameter names on ``name``'s entry, or None without an entry."""
  for page in sorted(html_dir.rglob("*.html")):
    text = page.read_text()
    if f'id="{name}"' not in text:
      continue
    parser = _EntryParameters(name)
    parser.feed(text)
    if parser.found:
      return parser.names
  return None


@pytest.mark.slow
def test_docs_build_without_warnings(html_dir):
  for page in ("index", "losses", "own_training_loop", "notebooks", "api/methods",
               "api/losses", "api/targets", "api/projections", "api/sharded",
               "api/reference", "api/metrics", "api/training"):
    assert (html_dir / f"{page}.html").is_file(), page


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_reference_documents_every_parameter(html_dir, name):
  signature = inspect.signature(DOCUMENTED[name])
  hidden = [p.name for p in signature.parameters.values()
            if p.kind is inspect.Parameter.VAR_KEYWORD]
  assert not hidden, (f"{name} takes **{hidden[0]}: its parameters are not in its "
                      f"signature, so its entry cannot list them")
  documented = documented_parameters(html_dir, name)
  assert documented is not None, f"no reference entry for {name}"
  expected = [p.name for p in signature.parameters.values()
              if p.kind is not inspect.Parameter.VAR_POSITIONAL]
  missing = [p for p in expected if p not in documented]
  assert not missing, f"{name}'s entry does not document {missing}"


def test_own_training_loop_page_shows_the_tested_example(html_dir):
  markup = (html_dir / "own_training_loop.html").read_text()
  page = html.unescape(re.sub(r"<[^>]+>", "", markup))  # highlighting splits tokens
  for line in ("def make_train_step", "optax.adam", "gca_jax.gca_uot"):
    assert line in page, line


def test_notebooks_are_rendered_with_their_saved_outputs(html_dir):
  notebooks = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
  assert notebooks
  for notebook in notebooks:
    page = html_dir / "notebooks" / f"{notebook.stem}.html"
    assert page.is_file(), notebook.name
    if '"image/png"' in notebook.read_text():
      assert "<img" in page.read_text(), f"{notebook.name}'s saved figures are missing"


def test_docs_python_examples_run():
  blocks = [block for page in sorted((REPO_ROOT / "docs").glob("*.md"))
            for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]
  assert blocks
  for block in blocks:
    exec(compile(block, "docs", "exec"), {})  # pylint: disable=exec-used


# ---------------------------------------------------------------------------
# The method table (README, included in the reference) matches the code.


def method_table():
  """{label: (function, params, preset)} from the README's method table."""
  readme = (REPO_ROOT / "README.md").read_text()
  block = re.search(r"<!-- methods-table -->\n(.*?)<!-- /methods-table -->", readme, re.S)
  assert block, "README.md has no method table between its markers"
  rows = {}
  for line in block.group(1).strip().splitlines()[2:]:
    label, function, params, preset = [c.strip() for c in line.strip("|").split("|")]
    params = params.strip("`")
    parsed = {}
    if "=" in params and "(" not in params:
      call = ast.parse(f"f({params})", mode="eval").body
      parsed = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    rows[label] = (function.strip("`"), parsed, preset.strip("`"))
  return rows


def test_method_table_matches_the_experiments():
  from experiments import methods  # pylint: disable=g-import-not-at-top
  table = method_table()
  assert set(methods.METHOD_LABELS) <= set(table)
  for label, (function, params) in methods.CLEAN_METHODS.items():
    assert table[label][:2] == (function, params), label
  for label, preset in methods.PUBLISHED_LOSSES.items():
    assert table[label][2] == preset, label
  assert table["BYOL"][0] == "byol"


def test_method_table_lists_the_functions_defaults_with_eps_the_temperature():
  from gca_jax import reference  # pylint: disable=g-import-not-at-top
  for label, (function, params, preset) in method_table().items():
    signature = inspect.signature(getattr(gca_jax, function))
    for name, value in params.items():
      assert name in signature.parameters, f"{label}: {function} has no {name}"
      assert signature.parameters[name].default == value, f"{label}: {function}({name})"
    if function != "byol":
      assert params["eps"] == 0.5, label
      assert preset in reference.NAMES, label
