"""The one tokenizer code path: text -> tokens -> `<cls> A <sep> [B <sep>]` and segment ids.

Two tokenizers, one interface (`tokens(text)`, `vocab`, `save(folder)`), used by training, export and
inference alike, so the same text always gives the same ids:
- `WhitespaceTokenizer`: lower-cased words split on whitespace, the seed's WikiText vocabulary;
- `WordPieceTokenizer`: BERT's WordPiece, trained on the corpus with Hugging Face `tokenizers` (Rust):
  BERT's normalisation (optional lower-casing with accents stripped, control characters removed, every
  CJK character a word of its own), punctuation split off, sub-words marked `##`.
The training side saves the tokenizer next to the vocabulary; the export carries it; `load_tokenizer`
reads it back.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Protocol, Union

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.export_format import VOCAB, input_names
from pipeline.core.vocab import OWN_SPECIALS, SpecialTokens, Vocab

Text = Union[str, tuple[str, str]]
Item = tuple[list[str], list[int]]  # one tokenized input: its tokens and their segment ids
Span = tuple[str, int, int]  # a token and the characters [start, stop) of the text it came from


class TokenizationError(UserError):
    """A text that cannot become the model's input: empty, or too long (`TextTooLong`)."""


class TextTooLong(TokenizationError):
    """A text of `length` tokens (with <cls>/<sep>) over the model's `max_len`; each front end says how to
    cut it (--truncate on the command line, "truncate": true over HTTP)."""

    def __init__(self, length: int, max_len: int):
        super().__init__(f"text is {length} tokens long with <cls>/<sep>, over the model's max_len {max_len} "
                         f"(shorten it or pass --truncate)")
        self.length, self.max_len = length, max_len
TOKENIZER_FILE = "tokenizer.json"  # a WordPiece tokenizer in Hugging Face `tokenizers` format


class Tokenizer(Protocol):
    kind: str
    vocab: Vocab
    lowercase: bool

    def tokens(self, text: str) -> list[str]: ...

    def spans(self, text: str) -> list[Span]: ...

    def decode(self, ids: list[int], skip_special: bool = True) -> str: ...

    def ids_batch(self, texts: list[str]) -> list[list[int]]: ...

    def save(self, folder: Path) -> None: ...


def whitespace_words(text: str) -> list[str]:
    """The seed's WikiText tokenisation: lower-cased, whitespace-separated words."""
    return text.lower().split()


class WhitespaceTokenizer:
    """Words as `whitespace_words` makes them, over a vocabulary counted from the corpus."""

    kind = "whitespace"
    lowercase = True

    def __init__(self, vocab: Vocab):
        self.vocab = vocab

    def tokens(self, text: str) -> list[str]:
        return whitespace_words(text)

    def spans(self, text: str) -> list[Span]:
        return [(m.group().lower(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        special = set(self.vocab.special_ids.tolist()) if skip_special else set()
        return " ".join(self.vocab.idx_to_token[i] for i in ids if i not in special)

    def ids_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of many texts; a literal special token in the text (say "<mask>") is `<unk>`, as in training."""
        return [self.vocab.ids_of(self.tokens(t)).tolist() for t in texts]

    def save(self, folder: Path) -> None:
        self.vocab.save(Path(folder) / VOCAB)


def wordpiece_backend(vocab: dict[str, int] | None, unk: str, lowercase: bool, strip_accents: bool | None = None,
                      chinese_chars: bool = True):
    """BERT's WordPiece pipeline in Hugging Face `tokenizers` (BertNormalizer, BertPreTokenizer, 100-character
    words), over `vocab` ({token: id}), or empty for training; `strip_accents` None follows `lowercase`."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    backend = Backend(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100) if vocab is not None
                      else models.WordPiece(unk_token=unk, max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese_chars,
                                                    strip_accents=strip_accents, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    return backend


class WordPieceTokenizer:
    """BERT's WordPiece through Hugging Face `tokenizers`; the ids are the vocabulary's, whose special
    tokens are this project's (a learnt WordPiece) or a published BERT's own (an imported one)."""

    kind = "wordpiece"

    def __init__(self, backend, specials: SpecialTokens = OWN_SPECIALS):
        # a published tokenizer.json may pad to a fixed length and truncate on every encode; this
        # project's own rules (`tokenize`, the example builder) decide both, so the file's never apply
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.vocab = Vocab([backend.id_to_token(i) for i in range(backend.get_vocab_size())], specials)

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int, lowercase: bool = True,
              total: int | None = None, progress: bool = True) -> "WordPieceTokenizer":
        """Learn a vocabulary of `vocab_size` (special tokens included) from `sentences`, streamed."""
        from tokenizers import trainers

        backend = wordpiece_backend(None, OWN_SPECIALS.unk, lowercase)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(OWN_SPECIALS.strings()),
                                            show_progress=progress)
        backend.train_from_iterator(sentences, trainer, length=total)
        return cls(backend)

    @classmethod
    def load(cls, path: Path, specials: SpecialTokens = OWN_SPECIALS) -> "WordPieceTokenizer":
        from tokenizers import Tokenizer as Backend

        try:
            backend = Backend.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - the Rust side raises a plain Exception
            raise UserError(f"{path} is not a tokenizer file ({str(err).splitlines()[0]})") from None
        try:
            return cls(backend, specials)
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None

    @property
    def lowercase(self) -> bool:
        """Whether the text is lower-cased (and its accents stripped) before the pieces are found."""
        return bool(self.backend.normalizer.lowercase)

    def tokens(self, text: str) -> list[str]:
        return self.backend.encode(text, add_special_tokens=False).tokens

    def spans(self, text: str) -> list[Span]:
        encoding = self.backend.encode(text, add_special_tokens=False)
        return [(token, start, stop) for token, (start, stop) in zip(encoding.tokens, encoding.offsets)]

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special)

    def ids_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts at once (the Rust side uses every core and releases the GIL; no
        character offsets are computed)."""
        return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]

    def save(self, folder: Path) -> None:
        self.backend.save(str(Path(folder) / TOKENIZER_FILE))
        self.vocab.save(Path(folder) / VOCAB)


def learn_tokenizer(sentences: Iterable[str], kind: str, vocab_size: int, lowercase: bool, min_freq: int,
                    total: int | None = None) -> Tokenizer:
    """A WordPiece tokenizer learnt from `sentences` (streamed), or the whitespace vocabulary of their
    words seen at least `min_freq` times."""
    if kind == "wordpiece":
        return WordPieceTokenizer.train(sentences, vocab_size, lowercase, total=total)
    return WhitespaceTokenizer(Vocab.from_counts(Counter(w for s in sentences for w in whitespace_words(s)), min_freq))


def load_tokenizer(folder: Path, vocab: Vocab) -> Tokenizer:
    """The tokenizer saved in `folder` (a training output or an export): WordPiece if it holds
    tokenizer.json, else whitespace over `vocab`."""
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        return WhitespaceTokenizer(vocab)
    tokenizer = WordPieceTokenizer.load(path, vocab.specials)
    if tokenizer.vocab.idx_to_token != vocab.idx_to_token:
        raise UserError(f"{path} and the vocabulary next to it disagree: re-export the model")
    return tokenizer


def tokenize(tokenizer: Tokenizer, text: Text, max_len: int, truncate: bool = False) -> Item:
    """`<cls> A <sep> [B <sep>]` and segment ids (0 for A, 1 for B); too long is an error unless
    `truncate`, which drops tokens from the end of the longer side."""
    a, b = (text, None) if isinstance(text, str) else text
    tokens_a, tokens_b = tokenizer.tokens(a), (tokenizer.tokens(b) if b is not None else None)
    if not tokens_a or (tokens_b is not None and not tokens_b):
        raise TokenizationError("empty text: give at least one word" +
                                (" on each side of the pair" if b is not None else ""))
    specials = 2 if tokens_b is None else 3
    total = len(tokens_a) + len(tokens_b or []) + specials
    if total > max_len:
        if not truncate:
            raise TextTooLong(total, max_len)
        while len(tokens_a) + len(tokens_b or []) + specials > max_len:
            if tokens_b and len(tokens_b) >= len(tokens_a):
                tokens_b.pop()
            else:
                tokens_a.pop()
    cls, sep = tokenizer.vocab.specials.cls, tokenizer.vocab.specials.sep
    tokens = [cls, *tokens_a, sep]
    segments = [0] * len(tokens)
    if tokens_b is not None:
        tokens += [*tokens_b, sep]
        segments += [1] * (len(tokens_b) + 1)
    return tokens, segments


WINDOW_OVERLAP = 0.25  # share of a window's tokens that the next window repeats


def window_starts(length: int, width: int, overlap: float = WINDOW_OVERLAP) -> list[int]:
    """Where each window of `width` tokens starts so that windows cover `length` tokens, each repeating
    about `overlap` of the one before; the last one ends at the last token."""
    if length <= width:
        return [0]
    stride = max(1, width - int(width * overlap))
    return list(range(0, length - width, stride)) + [length - width]


def tokenize_windows(tokenizer: Tokenizer, text: str, max_len: int) -> list[Item]:
    """`<cls> piece <sep>` windows of at most `max_len` tokens that cover all of `text`, overlapping by
    WINDOW_OVERLAP (one window when it fits): a text longer than the model's maximum, whole."""
    pieces = tokenizer.tokens(text)
    if not pieces:
        raise TokenizationError("empty text: give at least one word")
    width = max_len - 2
    cls, sep = tokenizer.vocab.specials.cls, tokenizer.vocab.specials.sep
    windows = [[cls, *pieces[start:start + width], sep] for start in window_starts(len(pieces), width)]
    return [(tokens, [0] * len(tokens)) for tokens in windows]


def word_position(tokenizer: Tokenizer, tokens: list[str], word: str) -> int | None:
    """Where `word` is in `tokens` (a tokenized text): the index of its first piece, which stands for the
    whole word (a WordPiece word may be several pieces); None when it is not there."""
    pieces = tokenizer.tokens(word)
    return tokens.index(pieces[0]) if pieces and pieces[0] in tokens else None


def pad_batch(vocab: Vocab, items: list[Item], width: int | None = None) -> dict:
    """Token/segment lists -> the encoder's named int64 inputs, padded to the longest item (or `width`)."""
    width = max(width or 0, max(len(tokens) for tokens, _ in items))
    ids = np.full((len(items), width), vocab.pad, dtype=np.int64)
    segments = np.zeros((len(items), width), dtype=np.int64)
    for row, (tokens, segs) in enumerate(items):
        ids[row, :len(tokens)] = [vocab[t] for t in tokens]
        segments[row, :len(segs)] = segs
    valid = np.array([len(tokens) for tokens, _ in items], dtype=np.int64)
    return dict(zip(input_names(), (ids, segments, valid)))
