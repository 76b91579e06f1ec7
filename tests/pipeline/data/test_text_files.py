"""pipeline/data/text_files.py: your own files, folders and globs read as documents of sentences."""
import pytest

from pipeline.core.errors import UserError
from pipeline.data.text_files import file_documents, find_files, split_sentences


def test_sentences_split_in_english_and_chinese(tmp_path):
    assert split_sentences("The crane, flying over Berlin, isn't here. It left! Did it? Yes") == \
        ["The crane, flying over Berlin, isn't here.", "It left!", "Did it?", "Yes"]
    assert split_sentences("我们去北京。天气很好！你来吗？好的") == ["我们去北京。", "天气很好！", "你来吗？", "好的"]
    (tmp_path / "t.txt").write_text("a. b.\nc!\n\n \nd. e\n", encoding="utf-8")
    assert list(file_documents(tmp_path / "t.txt")) == [["a.", "b.", "c!"], ["d.", "e"]]


def test_files_folders_and_globs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.txt", "sub/b.md", "sub/c.TXT", "skip.json"):
        (tmp_path / name).write_text("x. y.\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("")
    found = find_files([tmp_path])
    assert [p.name for p in found.files] == ["a.txt", "b.md", "c.TXT"] and [p.name for p in found.empty] == ["empty.txt"]
    assert [p.name for p in find_files([str(tmp_path / "**" / "*.md")]).files] == ["b.md"]
    with pytest.raises(UserError, match="no such file or folder"):
        find_files([tmp_path / "nope"])


def test_bad_files_are_named_in_one_line(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("line one\ncafé".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.txt is not UTF-8 text \(invalid byte at line 2\)"):
        list(file_documents(latin))
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(UserError, match="image.txt looks binary"):
        list(file_documents(binary))
