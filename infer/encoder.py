"""BERT encodings from an exported model: tokenize -> group -> run -> pool.

    from infer.encoder import Encoder
    encoder = Encoder("output/inference")
    encodings = encoder.encode(["a crane is flying"])
    encodings[0].vectors.shape   # (6, 128): <cls> a crane is flying <sep>
    encoder.embed(["a crane is flying"]).shape   # (1, 128): pooled as the export's manifest says

Texts are tokenized as in training, sorted by length and cut into calls where padding costs more than a call
(infer/call_cost.py, at the backend's own cost), run on a backend (infer/backends/: Paddle Inference or ONNX
Runtime), unpadded, pooled (pipeline/core/pooling.py) and returned in input order. Imports no training code:
only `infer/` and `pipeline.core` (a test checks).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from infer.backends import open_backend
from infer.call_cost import padding_groups
from infer.entities import grouped_entities
from infer.model_folder import ModelFolder
from pipeline.core.errors import UserError
from pipeline.core.export_format import ENCODER, PRED_POSITIONS, PRETRAINING
from pipeline.core.pooling import EmbeddingSpec, combine_windows, first_dimensions, normalized, pool
from pipeline.core.tokenizer import (
    Item,
    Span,
    Text,
    TokenizationError,
    load_tokenizer,
    pad_batch,
    tokenize,
    tokenize_windows,
)


class Output(NamedTuple):
    """One input's results from one call: its token vectors ([len(tokens), hidden]) and, for a model with a
    head (the manifest's "head"), its logits ([labels])."""

    vectors: np.ndarray
    logits: np.ndarray | None


@dataclass
class Encoding:
    """One input's tokens and their vectors ([len(tokens), hidden]); row 0 is <cls>."""

    tokens: list[str]
    segments: list[int]
    vectors: np.ndarray

    @property
    def cls(self) -> np.ndarray:
        return self.vectors[0]


class Encoder:
    """An export on the backend `backend` names ("auto": ONNX Runtime on CPU where the export has it and
    onnxruntime is installed, else Paddle Inference on GPU, optionally TensorRT, or CPU with oneDNN fp32/bf16;
    precision="int8": ONNX Runtime over `save.py --int8`'s model)."""

    def __init__(self, model_dir: str | Path = "output/inference", device: str = "auto", threads: int = 0,
                 onednn: str = "auto", trt: bool = False, precision: str = "fp32", max_batch: int = 64,
                 verbose: bool = False, backend: str = "auto"):
        self.folder = ModelFolder.open(model_dir)
        self.vocab = self.folder.vocab
        self.tokenizer = load_tokenizer(self.folder.path, self.vocab)
        self.max_len = self.folder.max_len
        self.embedding = EmbeddingSpec.from_manifest(self.folder.manifest)
        self.head: dict | None = self.folder.manifest.get("head")  # a classifier's or reranker's labels
        self.token_weights = self.folder.token_weights()
        self.precision = precision
        self.runtime = open_backend(self.folder, backend, device, precision, threads, onednn, trt, max_batch, verbose)
        self.call_tokens = self.runtime.call_tokens

    @property
    def backend(self) -> str:
        return self.runtime.name

    @property
    def device(self) -> str:
        return self.runtime.device

    def clone(self) -> "Encoder":
        """An Encoder for another thread, sharing the weights (see `Backend.clone`): call it from the thread
        that owns this Encoder, then use each Encoder from one thread only."""
        twin = copy.copy(self)
        twin.runtime = self.runtime.clone()
        return twin

    def run(self, arrays: dict[str, np.ndarray], program: str = ENCODER) -> list[np.ndarray]:
        """Feed named int64 arrays to `program`; return its outputs in order."""
        return self.runtime.run(arrays, program)

    # -- tokenize -------------------------------------------------------------------------------
    def preprocess(self, texts: Sequence[Text], truncate: bool = False) -> list[Item]:
        return [tokenize(self.tokenizer, t, self.max_len, truncate) for t in texts]

    def tokenize_for_embedding(self, texts: Sequence[Text], truncate: bool = False,
                               windows: bool = False) -> list[list[Item]]:
        """Each text's items: one, or with `windows` as many overlapping windows as a long text needs."""
        if windows:
            if any(not isinstance(t, str) for t in texts):
                raise UserError("windows embed single texts, not (A, B) pairs")
            return [tokenize_windows(self.tokenizer, t, self.max_len) for t in texts]
        return [[item] for item in self.preprocess(texts, truncate)]

    # -- group and run --------------------------------------------------------------------------
    def call_groups(self, items: list[Item], batch_size: int) -> list[list[int]]:
        """Indices into `items`, one list per call of at most `batch_size`: sorted by length and cut where
        padding costs more than another call (infer/call_cost.py, at this backend's cost per call)."""
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
        return [order[lo:hi] for lo, hi in
                padding_groups([len(items[i][0]) for i in order], batch_size, self.call_tokens)]

    def run_items(self, items: list[Item], batch_size: int = 64) -> list[Output]:
        """Outputs of tokenized items, in calls of `batch_size` items of similar length, in input order."""
        results: list[Output | None] = [None] * len(items)
        for chunk in self.call_groups(items, batch_size):
            for i, output in zip(chunk, self.run_tokenized([items[i] for i in chunk])):
                results[i] = output
        return results

    def encode_items(self, items: list[Item], batch_size: int = 64) -> list[np.ndarray]:
        """Vectors of tokenized items ([len(tokens), hidden] each), in input order."""
        return [output.vectors for output in self.run_items(items, batch_size)]

    def run_tokenized(self, items: list[Item]) -> list[Output]:
        """Outputs of tokenized items in one call, padded as the backend pads (in calls of at most the
        backend's `max_rows`)."""
        rows = self.runtime.max_rows
        if rows and len(items) > rows:
            return [o for lo in range(0, len(items), rows) for o in self.run_tokenized(items[lo:lo + rows])]
        width = self.runtime.padded_width(len(items), max(len(tokens) for tokens, _ in items))
        outputs = self.run(pad_batch(self.vocab, items, width))
        # (B, L, H), and a head's (B, labels) or, a tagger's, (B, L, tags)
        encodings, logits = outputs[0], (outputs[1] if self.head is not None else None)
        per_token = logits is not None and logits.ndim == 3
        return [Output(encodings[row, :len(tokens)],
                       None if logits is None else logits[row, :len(tokens)] if per_token else logits[row])
                for row, (tokens, _) in enumerate(items)]

    def encode_tokenized(self, items: list[Item]) -> list[np.ndarray]:
        """Vectors ([len(tokens), hidden]) of tokenized items in one call."""
        return [output.vectors for output in self.run_tokenized(items)]

    def encode(self, texts: Sequence[Text], batch_size: int = 64, truncate: bool = False) -> list[Encoding]:
        """Encodings of `texts` (strings, or (A, B) pairs), batched by length, in input order."""
        if isinstance(texts, (str, tuple)):
            raise TypeError("encode() takes a list of texts")
        items = self.preprocess(texts, truncate)
        return [Encoding(*item, vectors) for item, vectors in zip(items, self.encode_items(items, batch_size))]

    # -- pool -----------------------------------------------------------------------------------
    def embed(self, texts: Sequence[Text], normalize: bool | None = None, truncate: bool = False,
              windows: bool = False, dimensions: int | None = None, batch_size: int = 64) -> np.ndarray:
        """One vector per text ([len(texts), dimensions]), pooled as the export's manifest says and
        normalised as it says unless `normalize` is given; `windows`: a text over the model's maximum is
        embedded whole, by overlapping windows; `dimensions`: the first n values, renormalised."""
        if isinstance(texts, (str, tuple)):
            raise TypeError("embed() takes a list of texts")
        per_text = self.tokenize_for_embedding(texts, truncate, windows)
        flat = [item for items in per_text for item in items]
        return self.pool_texts(per_text, self.encode_items(flat, batch_size), normalize, dimensions)

    def pool_texts(self, per_text: list[list[Item]], vectors: list[np.ndarray],
                   normalize: bool | None = None, dimensions: int | None = None) -> np.ndarray:
        """Token vectors (flat, in the order of `per_text`'s items) -> one embedding per text."""
        pooling = self.embedding.pooling
        out, at = [], 0
        for items in per_text:
            weights = [self.weights_of(tokens) if pooling == "weighted" else None for tokens, _ in items]
            pooled = [pool(v, pooling, w) for v, w in zip(vectors[at:at + len(items)], weights)]
            # a long text's windows count by their tokens, or by their tokens' weights
            mass = [len(tokens) if w is None else float(w.sum()) for (tokens, _), w in zip(items, weights)]
            out.append(combine_windows(pooled, mass, pooling))
            at += len(items)
        result = np.asarray(out, dtype=np.float32).reshape(len(per_text), -1)
        if self.embedding.normalize if normalize is None else normalize:
            result = normalized(result)
        return first_dimensions(result, dimensions)

    def weights_of(self, tokens: list[str]) -> np.ndarray:
        """Each token's weight under `weighted` pooling ([len(tokens)])."""
        if self.token_weights is None:
            raise UserError(f"pooling weighted needs a model trained with it; this one pools {self.embedding.pooling}")
        return self.token_weights[[self.vocab[t] for t in tokens]]

    def pool(self, tokens: list[str], vectors: np.ndarray, pooling: str) -> np.ndarray:
        """One input's vectors ([len(tokens), hidden]) as one, `pooling` (weighted: by this model's weights)."""
        return pool(vectors, pooling, self.weights_of(tokens) if pooling == "weighted" else None)

    # -- a classifier's or reranker's head -------------------------------------------------------
    def predict(self, texts: Sequence[Text], raw_scores: bool = False, truncate: bool = False,
                batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """Each text's (or (A, B) pair's) labels with their scores, best first: the softmax over a classifier's
        labels, the sigmoid of a reranker's one output, or the logits themselves with `raw_scores`."""
        if isinstance(texts, (str, tuple)):
            raise TypeError("predict() takes a list of texts")
        head = self.require_head("classifier", "reranker")
        outputs = self.run_items(self.preprocess(texts, truncate), batch_size)
        return [label_scores(output.logits, head, raw_scores) for output in outputs]

    def entities(self, texts: Sequence[str], batch_size: int = 64) -> list[list[dict]]:
        """Each text's entities as transformers' token-classification pipeline gives them (`simple`
        aggregation): {"entity_group", "score", "word", "start", "end"}, offsets into the text. A text over the
        model's maximum is tagged whole, in windows of consecutive pieces."""
        if isinstance(texts, str):
            raise TypeError("entities() takes a list of texts")
        spans, owners, items = self.tag_windows(texts)
        return self.group_entities(texts, spans, owners, self.run_items(items, batch_size))

    def tag_windows(self, texts: Sequence[str]) -> tuple[list[list[Span]], list[int], list[Item]]:
        """Each text's pieces with their characters, and the `<cls> pieces <sep>` windows a tagger runs on (of
        at most max_len tokens), each with the text it belongs to."""
        self.require_head("tagger")
        cls, sep = self.vocab.specials.cls, self.vocab.specials.sep
        spans = [self.tokenizer.spans(text) for text in texts]
        if any(not pieces for pieces in spans):
            raise TokenizationError("empty text: give at least one word")
        width = self.max_len - 2
        windows = [(n, pieces[lo:lo + width]) for n, pieces in enumerate(spans) for lo in range(0, len(pieces), width)]
        items = [([cls, *(token for token, _, _ in window), sep], [0] * (len(window) + 2)) for _, window in windows]
        return spans, [n for n, _ in windows], items

    def group_entities(self, texts: Sequence[str], spans: list[list[Span]], owners: list[int],
                       outputs: list[Output]) -> list[list[dict]]:
        """The windows' outputs (`tag_windows`) put back together into each text's entities."""
        rows: list[list[np.ndarray]] = [[] for _ in texts]
        for n, output in zip(owners, outputs):
            rows[n].append(output.logits[1:-1])  # the pieces' rows, without <cls> and <sep>
        return [grouped_entities(text, pieces, np.concatenate(parts), self.head["labels"])
                for text, pieces, parts in zip(texts, spans, rows)]

    def require_head(self, *kinds: str) -> dict:
        """The manifest's head where it is one of `kinds`; otherwise one line saying what this model is."""
        if self.head is None or self.head["kind"] not in kinds:
            what = f"a {self.head['kind']}" if self.head else "an embedding model"
            raise UserError(f"{self.folder.path} is {what}: this needs a {' or '.join(kinds)} (fine-tune one with "
                            f"train.objective={'tag' if 'tagger' in kinds else 'classify'})")
        return self.head

    # -- the masked-LM head ---------------------------------------------------------------------
    def fill_mask(self, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k words and probabilities for each <mask> in `text` (needs an export --with-heads)."""
        tokens, segments = tokenize(self.tokenizer, text, self.max_len)
        mask = self.vocab.specials.mask
        positions = [i for i, t in enumerate(tokens) if t == mask]
        if not positions:
            raise UserError(f"--fill-mask text has no {mask} token: {text!r}")
        self.folder.program_files(PRETRAINING)
        self.folder.verify(f"{PRETRAINING}.pdiparams")
        arrays = pad_batch(self.vocab, [(tokens, segments)])
        arrays[PRED_POSITIONS[0]] = np.array([positions], dtype=np.int64)
        probabilities = self.run(arrays, PRETRAINING)[0][0]
        out = []
        for row in probabilities:
            best = np.argsort(-row)[:top_k]
            out.append([(self.vocab.idx_to_token[i], float(row[i])) for i in best])
        return out


def label_scores(logits: np.ndarray, head: dict, raw: bool = False) -> list[tuple[str, float]]:
    """(label, score) pairs best first: softmax over several labels, sigmoid of one (a reranker), or raw."""
    logits = np.asarray(logits, dtype=np.float64)
    if raw:
        scores = logits
    elif len(logits) == 1:
        scores = 1.0 / (1.0 + np.exp(-logits))
    else:
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
    return sorted(zip(head["labels"], map(float, scores)), key=lambda pair: -pair[1])
