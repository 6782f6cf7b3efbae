"""The docs say what the code is: the architecture's module map lists every module, no other."""

from __future__ import annotations

import re

from tests import PROJECT_ROOT

ARCHITECTURE = PROJECT_ROOT / "docs" / "architecture.md"


def test_the_module_map_lists_every_module_and_no_other() -> None:
    mapped = set(re.findall(r"^\| `(pipeline/[\w/]+\.py)` \|", ARCHITECTURE.read_text(), re.M))
    modules = {
        str(path.relative_to(PROJECT_ROOT))
        for path in (PROJECT_ROOT / "pipeline").rglob("*.py")
        if "content" not in path.parts
    }
    assert mapped == modules


def test_the_readme_is_a_short_guide_whose_links_resolve() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert links
    for link in links:
        assert (PROJECT_ROOT / link).exists(), link
