"""The table of formats: every row's reader and writer exist and share one call, and names resolve both ways."""
import inspect
import subprocess
import sys

import pytest

from convcli.errors import UsageError
from convcli.io import formats
from convcli.pipeline.batch import extension_for

READER_PARAMETERS = ["source", "fmt", "limits", "kind", "key", "auto_orient", "stream"]
WRITER_PARAMETERS = ["sig", "dest", "fmt", "compress_level", "range_mode", "depth", "quality"]


@pytest.mark.parametrize("row", formats.FORMATS, ids=lambda row: row.name)
def test_every_reader_and_writer_takes_the_same_explicit_keywords(row):
    reader = inspect.signature(row.read_function()).parameters
    writer = inspect.signature(row.write_function()).parameters
    assert list(reader) == READER_PARAMETERS and list(writer) == WRITER_PARAMETERS
    kinds = {p.kind for p in list(reader.values()) + list(writer.values())}
    assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds


@pytest.mark.parametrize("row", formats.FORMATS, ids=lambda row: row.name)
def test_names_and_extensions_lead_back_to_their_row(row):
    for ext in row.extensions:
        assert formats.from_extension("out" + ext.upper()) == row.name
    for name in row.names:
        assert formats.format_from_name(name) == row.name
    assert extension_for(row.name) == row.extension == row.extensions[0]
    assert formats.family_of(row.name) == row.family


def test_an_unknown_format_name_lists_the_known_ones():
    with pytest.raises(UsageError, match=r"unknown format 'xyz'; known: .*nii\.gz.*") as info:
        formats.format_from_name("xyz")
    assert "nifti-gz" not in str(info.value)
    assert formats.family_of(None) is None and formats.family_of("gzip") is None


def test_the_table_imports_no_reader_or_backend():
    code = ("import sys, convcli.io.formats as f; f.get('png'); "
            "print(sorted(m for m in sys.modules if m.startswith(('numpy', 'PIL', 'soundfile', 'nibabel')) "
            "or m in ('convcli.io.image', 'convcli.io.tiff', 'convcli.io.audio', 'convcli.io.nifti', 'convcli.io.arrays')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # convcli.io itself imports numpy (Signal's module); the table adds no reader, writer or backend.
    assert "convcli.io." not in out and "PIL" not in out and "soundfile" not in out and "nibabel" not in out
