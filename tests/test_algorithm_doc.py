"""docs/ALGORITHM.md is what the code cites: every citation names an existing section, nothing cites the
old out-of-tree spec, and the published cells written there are the presets (no TensorFlow needed)."""

import pathlib
import re

from unas_keras.space import darts, presets

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "ALGORITHM.md").read_text(encoding="utf-8")
_SOURCES = [path for folder in ("unas_keras", "apps", "benchmarks", "tests", "configs")
            for path in sorted((ROOT / folder).rglob("*")) if path.suffix in (".py", ".json")]


def _sections():
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\. ?", DOC, flags=re.M)) | set(
        re.findall(r"^### (\d+\.\d+) ", DOC, flags=re.M))


def test_every_citation_names_an_existing_section():
    sections = _sections()
    assert {"1", "3.3", "3.4", "4", "5", "6", "7.1", "7.2", "8.1"} <= sections
    cited = []
    for path in _SOURCES:
        for match in re.finditer(r"docs/ALGORITHM\.md,? sections? (\d+(?:\.\d+)?)(?: and (\d+(?:\.\d+)?))?",
                                 path.read_text(encoding="utf-8")):
            cited += [(path.name, number) for number in match.groups() if number]
    assert cited, "no citation found"
    assert [c for c in cited if c[1] not in sections] == []


def test_nothing_cites_the_spec_outside_the_repository():
    stale = [f"{path.relative_to(ROOT)}: {line.strip()}" for path in _SOURCES if path.name != "test_algorithm_doc.py"
             for line in path.read_text(encoding="utf-8").splitlines()
             if re.search(r"spec section|UNAS_SPEC|given in the spec", line)]
    assert stale == []


def _cells_of(preset, ops):
    """The doc's table rows of a preset: {cell: [[(op, input), (op, input)] per node]}."""
    rows, current = {}, None
    for line in DOC.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not line.startswith("|"):
            continue
        if cells[0] == f"`{preset}`":
            current = preset
        elif cells[0]:
            current = None
        if current == preset and cells[1] in ("normal", "reduction"):
            rows[cells[1]] = [[(ops[int(o)], int(i)) for o, i in (pair.split("@") for pair in node.split(", "))]
                              for node in cells[2:]]
    return rows


def test_published_cells_in_the_doc_are_the_presets():
    for name, ops in (("unas_cifar10", darts.UNAS_OPS), ("unas_cifar100", darts.UNAS_OPS),
                      ("unas_imagenet", darts.UNAS_IMAGENET_OPS)):
        genotype = presets.get(name).genotype
        rows = _cells_of(name, ops)
        assert rows["normal"] == [list(node) for node in genotype.normal], name
        assert rows["reduction"] == [list(node) for node in genotype.reduce], name
    darts_v2 = {}
    for line in DOC.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 5 and cells[0] in ("normal", "reduction"):
            darts_v2[cells[0]] = [[(op, int(i)) for op, i in (pair.split("@") for pair in node.split(", "))]
                                  for node in cells[1:]]
    genotype = presets.get("darts_v2").genotype
    assert darts_v2 == {"normal": [list(node) for node in genotype.normal],
                        "reduction": [list(node) for node in genotype.reduce]}
