"""Finding WikiText-2: local folders, the zip archive, and the verified download (over loopback)."""
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from pipeline.core.errors import UserError
from pipeline.data import wikitext
from pipeline.data.wikitext import read_sentences


@pytest.fixture(scope="module")
def archive(tmp_path_factory, corpus_dir) -> Path:
    """A zip laid out like the official wikitext-2-v1.zip (wikitext-2/wiki.*.tokens)."""
    path = tmp_path_factory.mktemp("zip") / wikitext.ARCHIVE_NAME
    with zipfile.ZipFile(path, "w") as zf:
        for split in wikitext.SPLITS:
            zf.write(corpus_dir / f"wiki.{split}.tokens", f"wikitext-2/wiki.{split}.tokens")
    return path


@pytest.fixture()
def server(archive):
    """Serves the archive's folder on 127.0.0.1 (no other address is ever contacted)."""
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(archive.parent), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{archive.name}"
    httpd.shutdown()


def test_folder_subfolder_and_zip_are_all_accepted(corpus_dir, archive, tmp_path):
    assert wikitext.find_split(corpus_dir, "valid") == corpus_dir / "wiki.valid.tokens"
    nested = tmp_path / "data"
    (nested / "wikitext-2").mkdir(parents=True)
    (nested / "wikitext-2" / "wiki.test.tokens").write_text("a . b\n")
    assert wikitext.find_split(nested, "test") == nested / "wikitext-2" / "wiki.test.tokens"
    from_zip = wikitext.find_split(archive, "train", cache_dir=tmp_path / "cache")
    assert from_zip.read_bytes() == (corpus_dir / "wiki.train.tokens").read_bytes()
    beside = tmp_path / "holder"
    beside.mkdir()
    (beside / wikitext.ARCHIVE_NAME).write_bytes(archive.read_bytes())
    assert wikitext.find_split(beside, "test", cache_dir=tmp_path / "cache").name == "wiki.test.tokens"


def test_download_with_the_right_sha1_is_verified_and_unpacked(server, archive, tmp_path):
    sha1 = hashlib.sha1(archive.read_bytes()).hexdigest()
    folder = wikitext.fetch_official(tmp_path, url=server, sha1=sha1)
    assert (folder / "wiki.train.tokens").is_file()
    assert (tmp_path / wikitext.ARCHIVE_NAME).read_bytes() == archive.read_bytes()
    assert not list(tmp_path.glob("*.part"))


def test_download_with_a_wrong_sha1_is_refused_and_nothing_is_kept(server, tmp_path):
    with pytest.raises(UserError, match="is corrupt: SHA-1"):
        wikitext.fetch_official(tmp_path, url=server, sha1="0" * 40)
    assert list(tmp_path.iterdir()) == []


def test_no_network_says_how_to_use_data_dir(tmp_path):
    with pytest.raises(UserError, match="--data-dir"):
        wikitext.download("http://127.0.0.1:9/none.zip", tmp_path / "x.zip", "0" * 40)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_missing_split_and_unknown_split(tmp_path, corpus_dir):
    with pytest.raises(UserError, match="data folder not found"):
        wikitext.find_split(tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no wiki.train.tokens in .*empty \(found: nothing\)"):
        wikitext.find_split(tmp_path / "empty", "train")
    with pytest.raises(UserError, match="unknown split 'dev'"):
        wikitext.find_split(corpus_dir, "dev")
    not_zip = tmp_path / "notes.txt"
    not_zip.write_text("hello")
    with pytest.raises(UserError, match="neither a folder nor a zip"):
        wikitext.find_split(not_zip, "train")


SAMPLE_SHA1 = {"wiki.valid.tokens": "0418625c8b4da6e4b5c7a0b9e78d4ae8f7ee5422",  # the official splits, unchanged
               "wiki.test.tokens": "c7b8ce0aa086fb34dab808c5c49224211eb2b172"}


def test_the_shipped_sample_is_the_official_validation_and_test_splits_with_its_licence():
    with zipfile.ZipFile(wikitext.SAMPLE_ARCHIVE) as zf:
        digests = {Path(name).name: hashlib.sha1(zf.read(name)).hexdigest() for name in zf.namelist()}
    assert digests == SAMPLE_SHA1
    assert wikitext.SAMPLE_ARCHIVE.stat().st_size < 2 << 20
    licence = (wikitext.SAMPLE_ARCHIVE.parent / "LICENSE").read_text()
    assert "CC BY-SA 3.0" in licence and "Merity" in licence


def test_without_network_the_sample_is_used_but_a_corrupt_download_still_fails(tmp_path, monkeypatch):
    def no_network(url, dest, sha1):
        raise wikitext.DownloadError(f"cannot download {url} (Name or service not known)")

    monkeypatch.setattr(wikitext, "download", no_network)
    assert wikitext.official_or_sample(tmp_path) == (wikitext.SAMPLE_ARCHIVE, True)
    assert wikitext.find_split(wikitext.SAMPLE_ARCHIVE, "test", tmp_path).name == "wiki.test.tokens"

    def corrupt(url, dest, sha1):
        raise UserError(f"download of {url} is corrupt: SHA-1 0000, expected {sha1}")

    monkeypatch.setattr(wikitext, "download", corrupt)
    with pytest.raises(UserError, match="corrupt"):
        wikitext.official_or_sample(tmp_path)


BLOCKED_NETWORK = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",  # the discard port:
                   "no_proxy": "", "NO_PROXY": ""}  # refused at once, like a machine without internet


def test_the_main_command_trains_on_the_sample_without_internet(tmp_path):
    """`python pipeline/train.py` with no data given and the download failing: one line says what is used,
    then training, the seed's lines and held-out figures on the sample's test split."""
    from tests.conftest import TINY, run_script

    out = tmp_path / "out"
    result = run_script("pipeline/train.py", "--output-dir", str(out), "--steps", "3", *TINY,
                        env={**BLOCKED_NETWORK, "BERT_PIPELINE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "no internet" in line]
    assert len(notices) == 1 and "sample shipped with this package" in notices[0] and "--data-dir" in notices[0]
    assert "MLM loss" in result.stdout and "sentence pairs/sec" in result.stdout
    assert "held-out MLM accuracy" in result.stdout
    saved = (out / "config.yaml").read_text()
    assert "split: valid" in saved and "eval_split: test" in saved


def test_paragraphs_follow_the_seed(tmp_path):
    path = tmp_path / "wiki.train.tokens"
    path.write_text(" = Title = \n A b . C d e . \n one sentence only \n x . y \n", encoding="utf-8")
    sents = read_sentences(path)
    assert len(sents.document_starts) - 1 == 2
    assert [sents.forms[i] for i in sents.token_ids] == ["a", "b", "c", "d", "e", ".", "x", "y"]
    assert sents.words[sents.token_ids[0]] == "A", "words keep the file's case"
    assert sents.counts == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, ".": 1, "x": 1, "y": 1}
    assert sents.sentence_starts.tolist() == [0, 2, 6, 7, 8]
