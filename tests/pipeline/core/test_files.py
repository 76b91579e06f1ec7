"""pipeline/core/files.py: UTF-8 text read with a one-line refusal that names a likely encoding."""
import pytest

from pipeline.core.errors import UserError
from pipeline.core.files import likely_encoding, read_utf8


@pytest.mark.parametrize("text, encoding, named", [
    ("café crème brûlée, naïve résumé", "latin-1", "WINDOWS-1252"),
    ("我们今天去北京看长城。", "gb18030", "GB18030"),
    ("a crane is flying", "utf-16", "UTF-16"),
])
def test_the_likely_encoding_of_bytes_that_are_not_utf8(text, encoding, named):
    assert likely_encoding(text.encode(encoding)) == named


def test_read_utf8_drops_a_bom_and_refuses_other_bytes_with_their_line(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffa crane\n".encode("utf-8"))
    assert read_utf8(good) == "a crane\n"
    bad = tmp_path / "bad.txt"
    bad.write_bytes("one\ntwo\ncafé\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"bad.txt is not UTF-8 text \(invalid byte at line 3\).*iconv -f WINDOWS-1252"):
        read_utf8(bad)
