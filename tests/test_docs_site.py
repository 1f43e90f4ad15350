"""The documentation site builds (``mkdocs build --strict``) and its API reference renders as a
user expects: no literal Sphinx roles, docstring examples in code blocks, and every argument of
every loss (function, constructor, forward) documented. Read from the built HTML."""

import importlib
import inspect
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from exportable_loss._registry import specs

for _name in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material"):
    pytest.importorskip(_name, reason="the docs toolchain is not installed (pip install -e '.[docs]')")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("reduction", "sample_weight", "normalizer", "backend")
SPHINX_ROLE = re.compile(r":(?:func|class|meth|mod|attr|obj|exc|data|ref|py:\w+):")
INVISIBLE = {"script", "style"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: Dict[str, str], parent: Optional["Node"]) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: List[object] = []  # Node or str

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def classes(self) -> List[str]:
        return self.attrs.get("class", "").split()

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class TreeBuilder(HTMLParser):
    """A minimal DOM: enough to ask which element a piece of text sits in."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(path: Path) -> Node:
    builder = TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    return builder.root


def text_nodes(root: Node):
    """(text, its element) for every piece of visible text."""
    for node in root.iter():
        if node.tag in INVISIBLE:
            continue
        for c in node.children:
            if isinstance(c, str) and c.strip():
                yield c, node


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.fixture(scope="module")
def api(site) -> Node:
    return parse(site / "api" / "index.html")


def sections(api: Node) -> Dict[str, Node]:
    """Each documented object's section (``div.doc-object``) by its dotted path."""
    out = {}
    for node in api.iter():
        if node.tag[:1] == "h" and node.attrs.get("id", "").startswith("exportable_loss."):
            owner = next(a for a in node.ancestors() if "doc-object" in a.classes())
            out[node.attrs["id"]] = owner
    return out


def documented_parameters(section: Node) -> List[str]:
    """The names in the "Parameters" tables of a section (its own and its members')."""
    names = []
    for node in section.iter():
        if node.tag == "table" and _section_title(node) == "Parameters:":
            for row in node.iter():
                if row.tag == "tr" and "doc-section-item" in row.classes():
                    first_cell = next(c for c in row.children if isinstance(c, Node) and c.tag == "td")
                    names.append(first_cell.text().strip())
    return names


def _section_title(table: Node) -> Optional[str]:
    siblings = [c for c in table.parent.children if isinstance(c, Node)]
    before = siblings[: siblings.index(table)]
    titles = [n for s in before for n in s.iter() if "doc-section-title" in n.classes()]
    return titles[-1].text().strip() if titles else None


def resolve(path: str):
    """The Python object behind a dotted path of the API page."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def test_no_literal_sphinx_roles(site):
    bad = []
    for page in sorted(site.rglob("*.html")):
        for text, node in text_nodes(parse(page)):
            if SPHINX_ROLE.search(text):
                bad.append(f"{page.relative_to(site)}: <{node.tag}> {text.strip()[:80]!r}")
    assert not bad, "literal Sphinx roles in the built site:\n" + "\n".join(bad)


def test_examples_render_as_code(site, api):
    # No ">>>" anywhere outside a code block, on any page...
    bad = []
    for page in sorted(site.rglob("*.html")):
        for text, node in text_nodes(parse(page)):
            if ">>>" in text and not any(a.tag in ("pre", "code") for a in [node, *node.ancestors()]):
                bad.append(f"{page.relative_to(site)}: <{node.tag}> {text.strip()[:80]!r}")
    assert not bad, "docstring examples rendered outside a code block:\n" + "\n".join(bad)
    # ...and every example line of every object on the API page inside its section's code blocks
    # (a ">>>" read as Markdown becomes nested blockquotes and loses its prompt).
    checked = 0
    for path, section in sections(api).items():
        doc = inspect.getdoc(resolve(path)) or ""
        rendered = "\n".join(n.text() for n in section.iter() if n.tag == "pre")
        for line in doc.splitlines():
            if line.strip().startswith(">>>"):
                checked += 1
                assert line.strip() in rendered, f"{path}: example line not rendered as code: {line.strip()!r}"
    assert checked >= 2 * len(specs())


@pytest.mark.parametrize("spec", list(specs().values()), ids=list(specs()))
def test_every_argument_of_every_loss_is_documented(api, spec):
    found = sections(api)
    function_path = f"exportable_loss.functional.{spec.function.__name__}"
    module_path = f"exportable_loss.losses.{spec.module.__name__}"
    assert function_path in found, f"{function_path} is not on the API page"
    assert module_path in found, f"{module_path} is not on the API page"

    documented = documented_parameters(found[function_path])
    expected = list(inspect.signature(spec.function).parameters)
    missing = [p for p in expected if p not in documented]
    assert not missing, f"{function_path}: undocumented arguments {missing}"
    assert set(SHARED) <= set(documented)

    # The module: its constructor's arguments (shown in the class's signature and table) and
    # its forward's, together.
    section = found[module_path]
    documented = documented_parameters(section)
    init = [p for p in inspect.signature(spec.module.__init__).parameters if p != "self"]
    forward = [p for p in inspect.signature(spec.module.forward).parameters if p != "self"]
    missing = [p for p in init + forward if p not in documented]
    assert not missing, f"{module_path}: undocumented arguments {missing}"
    assert set(SHARED) <= set(documented)
    signature = next(n for n in section.iter() if "doc-signature" in n.classes()).text()
    assert all(p in signature for p in init), f"{module_path}: constructor signature not shown"
