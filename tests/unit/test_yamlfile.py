"""The YAML reader: libyaml's parser, safe tags only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline import yamlfile
from pipeline.yamlfile import load_yaml


def test_a_document_is_read_as_the_pure_python_loader_reads_it(tmp_path: Path) -> None:
    text = "id: a\nlist: [1, 2.5, yes, null, '0x10']\nblock: |\n  two\n  lines\nwhen: 2024-01-02\n"
    (tmp_path / "doc.yml").write_text(text)
    assert load_yaml(tmp_path / "doc.yml") == yaml.safe_load(text)


def test_the_compiled_parser_is_the_one_used() -> None:
    assert yamlfile._LOADER is yaml.CSafeLoader  # a thousand rule files: 10x the load time


def test_a_python_object_tag_is_refused(tmp_path: Path) -> None:
    (tmp_path / "doc.yml").write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(yaml.constructor.ConstructorError):
        load_yaml(tmp_path / "doc.yml")
