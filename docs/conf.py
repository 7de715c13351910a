"""Sphinx configuration of the gca_jax documentation.

Why Sphinx (rather than MkDocs): the docstrings are Google style with
reStructuredText inline markup (``code``, :func: roles), which autodoc and
napoleon read as written; MyST keeps the narrative pages (the losses' math
page among them) in Markdown, and myst-nb renders the notebooks from their
saved outputs. Build: ``sphinx-build -W --keep-going -b html docs docs/_build``.
"""

import sys
from pathlib import Path

# Document the checkout this file belongs to, whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gca_jax  # noqa: E402
from docutils import nodes  # noqa: E402
from sphinx import addnodes  # noqa: E402

project = "gca_jax"
author = "gca_jax authors"
release = version = gca_jax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",  # the summary table atop each API page
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_nb",  # MyST Markdown pages and notebooks
]

# The docstrings are Google style (Args/Returns/Raises/Attributes).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Single backticks in the docstrings name Python objects.
default_role = "py:obj"

# Markdown headings get GitHub-style anchors, so `losses.md#3-projections`
# links work here as on GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

# The notebooks are rendered from their saved outputs: the build never runs
# them (they take minutes and need matplotlib).
nb_execution_mode = "off"

# docs/notebooks is a link to the repository's notebooks/ directory.
exclude_patterns = ["_build", "README.md", "examples", "notebooks/.ipynb_checkpoints"]

html_theme = "alabaster"
# Wide enough for 72-column code (docs/examples) without horizontal
# scrolling: a code block then shows about 80 columns.
html_theme_options = {"page_width": "1080px"}
html_title = "gca_jax"


def _skip_named_tuple_fields(app, what, name, obj, skip, options):
  """A NamedTuple's fields are documented by its ``Attributes:`` section;
  their generated "Alias for field number k" entries would repeat them."""
  del app, what, name, options
  if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
    return True
  return skip


def _link_method_table(app, doctree):
  """The paper-to-function table names each function as code (it is the
  README's, which GitHub renders too); on the methods page each name in its
  function column links to the function's entry."""
  if app.env.docname != "api/methods":
    return
  for table in doctree.findall(nodes.table):
    for body in table.findall(nodes.tbody):
      for row in body.findall(nodes.row):
        function_cell = row.children[1]
        for literal in list(function_cell.findall(nodes.literal)):
          reference = addnodes.pending_xref(
              "", refdomain="py", reftype="func", reftarget=f"gca_jax.{literal.astext()}",
              refdoc=app.env.docname, refexplicit=True, refwarn=True)
          reference += literal.deepcopy()
          literal.replace_self(reference)


def setup(app):
  app.connect("autodoc-skip-member", _skip_named_tuple_fields)
  app.connect("doctree-read", _link_method_table)
