"""Sphinx configuration of the cookbook site (`make docs`; docs/site.py stages the sources).

The notebooks are the executed copies of the last `make cookbook`: myst-nb renders their saved
outputs and never runs them. Warnings are errors and references nitpicky (docs/site.py runs
sphinx-build with -W -n); only references to packages outside deploykit are let through, since
an offline build has no other project's inventory to resolve them against.
"""

import importlib

from docutils import nodes

project = "deploykit"
author = "deploykit"
copyright = "deploykit authors, Apache-2.0"

extensions = ["myst_nb", "sphinx.ext.autodoc"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# The notebooks come executed; running them again here would take half an hour.
nb_execution_mode = "off"
nb_merge_streams = True  # a cell's prints read as one block, as in JupyterLab
# Widget JavaScript from the site's own _static/widgets/ (docs/site.py unpacks it from npm),
# never from a CDN: the saved widget state (notebook 11's live view) renders offline.
nb_ipywidgets_js: dict[str, dict[str, str]] = {
    "widgets/require.js": {},
    "widgets/embed-amd.js": {},  # bundles ipywidgets' base, controls and output models
}

myst_heading_anchors = 3  # [text](running.md#profiles) links resolve to headings
myst_enable_extensions = ["colon_fence"]
default_role = "code"  # docstrings write `name` for code, as the Markdown pages do

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_default_options = {"members": True}
# The functions' defaults stay as written (`spec=LoadSpec()`), not as evaluated reprs.
autodoc_preserve_defaults = True

nitpicky = True
# Names of other projects (torch, pandas, httpx, the standard library...) cannot be resolved
# offline; deploykit's own names must all resolve (docs/site.py maps module paths to the face).
nitpick_ignore_regex = [(r"py:.*", r"(?!deploykit\b).*")]

html_theme = "pydata_sphinx_theme"
html_title = "deploykit cookbook"
html_static_path = ["_static"]
html_last_updated_fmt = None
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
    "navbar_end": ["theme-switcher"],
    "header_links_before_dropdown": 6,
}
html_sidebars = {"**": ["sidebar-nav-bs"]}


def _to_face(app, env, node, contnode):
    """Resolve deploykit.<module>.Name to deploykit.Name, where the page documents it."""
    import typing

    import deploykit

    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("deploykit."):
        return None
    module, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    if isinstance(obj, typing.TypeVar):  # a signature's type variable: shown as its name
        return nodes.literal(name, name)
    if name in deploykit.__all__ and getattr(deploykit, name) is obj:
        node["reftarget"] = f"deploykit.{name}"
        return env.domains["py"].resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], f"deploykit.{name}", node, contnode
        )
    return None


def setup(app):
    app.connect("missing-reference", _to_face)
