"""The README says what the code does: its tables are held to the code's own tables."""
from __future__ import annotations

import re

from conftest import ROOT, convcli
from convcli.engine import METHODS
from convcli.engine.borders import BORDER_MODES, help_text, markdown_table
from convcli.io.samples import RANGE_MODES

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_border_table_is_the_engines():
    assert markdown_table() in README


def test_pad_mode_help_names_every_mode_with_its_drawing():
    result = convcli("filter", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert " ".join(help_text().split()) in text
    for mode in BORDER_MODES:
        assert mode.name in text


def test_the_readme_names_every_method_and_range_mode():
    methods = re.search(r"`--method ([a-z|]+)`", README).group(1).split("|")
    assert methods == list(METHODS)
    for mode in RANGE_MODES:
        assert f"| `{mode}` |" in README


def test_the_readme_and_help_name_every_alpha_mode_colour_space_and_axis():
    from convcli.pipeline.options import ALPHA_MODES, AXIS_NAMES, COLORSPACES

    text = " ".join(convcli("filter", "--help").stdout.split())
    for name in ALPHA_MODES + COLORSPACES:
        assert f"`{name}`" in README and name in text, name
    for name in AXIS_NAMES:
        assert f"`{name}`" in README, name


def test_the_readme_kernel_table_names_every_rank_morphology_and_pooling_family():
    from convcli.kernels.generators import FAMILIES

    table = README[README.index("| kernel | what it is |"):README.index("Kernel files:")]
    operators = [name for name, family in FAMILIES.items() if family.build.__module__.endswith("operators")]
    assert len(operators) == 14
    for name in operators:
        assert f"`{name}" in table, name


def test_the_readme_pytorch_table_specs_resolve():
    from convcli.kernels import resolve

    table = README[README.index("| convcli | PyTorch"):]
    table = table[:table.index("\n\n")]
    specs = re.findall(r"-k ([a-z]+pool:[a-z0-9=,_]+)", table)
    assert len(specs) >= 6
    for spec in specs:
        assert resolve(spec, ndim=2).operator.kind == "pool"
