"""Print BERT encodings of text from an exported model (Paddle Inference, or ONNX Runtime: --backend).

    python infer/encode.py --text "a crane is flying"
    python infer/encode.py --text "a crane driver came" --text-b "he just left" --json
    python infer/encode.py --text "a crane is flying" --compare "a crane driver came" --word crane
    python infer/encode.py --file sentences.txt --json        # one text (or A<TAB>B) per line; - for stdin
    python infer/encode.py --file docs.txt --embed --windows  # one pooled vector per text, long texts whole
    python infer/encode.py --fill-mask "a <mask> is flying"   # needs export/save.py --with-heads
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.core.runtime import setup_process_for_paddle

setup_process_for_paddle()

import numpy as np  # noqa: E402

from infer.backends import BACKENDS, PRECISIONS  # noqa: E402
from infer.encoder import Encoder, Encoding  # noqa: E402
from pipeline.core.errors import UserError, run_cli  # noqa: E402
from pipeline.core.files import line_of, not_utf8, read_utf8  # noqa: E402
from pipeline.core.pooling import normalized  # noqa: E402
from pipeline.core.tokenizer import Text, Tokenizer, word_position  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="BERT encodings from an exported model (python export/save.py): "
                                            "Paddle Inference on GPU (+TensorRT) or CPU (+oneDNN, fp32 or bf16), "
                                            "or ONNX Runtime on CPU (--backend).")
    what = p.add_argument_group("input (one of --text, --file, --fill-mask)")
    what.add_argument("--text", help="the text to encode, tokenized by the model's own tokenizer as in training")
    what.add_argument("--text-b", help="second sentence: encode the pair <cls> A <sep> B <sep>")
    what.add_argument("--file", help="one text per line, or A<TAB>B for a pair; '-' reads standard input")
    what.add_argument("--fill-mask", metavar="TEXT", help="print the top 5 words for each <mask> in TEXT "
                                                          "(needs an export made with --with-heads)")
    p.add_argument("--predict", action="store_true",
                   help="a fine-tuned classifier's or reranker's labels and scores for each input, best first "
                        "(softmax over labels, sigmoid of one output) instead of encodings")
    p.add_argument("--raw-scores", action="store_true", help="with --predict: the logits, not probabilities")
    p.add_argument("--entities", action="store_true",
                   help="a fine-tuned tagger's entities in each text (entity_group, score, word, start, end: "
                        "character offsets), as transformers' token-classification pipeline gives them")
    p.add_argument("--compare", metavar="TEXT2", help="cosine similarity of --word's vectors in --text and TEXT2")
    p.add_argument("--word", default="crane", help="the word compared by --compare (default: crane)")
    p.add_argument("--json", action="store_true", help="one JSON object per input: tokens, segments, cls, encoding "
                                                       "(with --embed: the embedding)")
    p.add_argument("--embed", action="store_true",
                   help="print one vector per input, pooled and normalised as the export's manifest says "
                        "(what the service's /embed answers) instead of every token's")
    p.add_argument("--windows", action="store_true",
                   help="with --embed: embed a text over the model's maximum whole, by overlapping windows")
    p.add_argument("--model-dir", default="output/inference", help="exported model folder (default: output/inference)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per predictor call for --file (default: 64)")
    p.add_argument("--truncate", action="store_true", help="cut texts longer than the model's max_len instead of failing")
    run = p.add_argument_group("predictor")
    run.add_argument("--backend", default="auto", choices=BACKENDS,
                     help="auto (default): ONNX Runtime on CPU when the export has encoder.onnx (export/save.py "
                          "--onnx) and onnxruntime is installed, else Paddle Inference; or name one")
    run.add_argument("--device", default="auto", choices=("auto", "gpu", "cpu"),
                     help="auto (default) uses the GPU when this PaddlePaddle build and machine have one")
    run.add_argument("--threads", type=int, default=0,
                     help="CPU math threads; 0 (default) = 1 for short inputs, all cores for batches")
    run.add_argument("--onednn", default="auto", choices=("auto", "on", "off"),
                     help="CPU oneDNN kernels; auto (default) = off for short inputs, on for batches")
    run.add_argument("--trt", action="store_true", help="GPU: run through TensorRT (engine cached in the model folder)")
    run.add_argument("--precision", default="fp32", choices=PRECISIONS,
                     help="fp32 (default); bf16: CPU oneDNN bf16 kernels, only on CPUs with bf16 units "
                          "(avx512_bf16/amx_bf16), faster batches, encodings within ~0.05; fp16: GPU; "
                          "int8: ONNX Runtime on CPU over encoder.int8.onnx (export/save.py --int8), faster than fp32")
    run.add_argument("--max-batch", type=int, default=64, help="TensorRT: largest batch of its shape range (default 64)")
    run.add_argument("--verbose", action="store_true", help="show the predictor's own log")
    return p


def read_texts(source: str) -> list[Text]:
    """Lines of `source` ('-' = stdin): a text, or a tab-separated pair."""
    try:
        if source == "-":  # as bytes, decoded strictly: not the locale's lenient surrogate escapes
            lines = sys.stdin.buffer.read().decode("utf-8").splitlines()
        else:
            lines = read_utf8(source).splitlines()
    except FileNotFoundError:
        raise UserError(f"input file not found: {source}") from None
    except UnicodeDecodeError as err:
        raise not_utf8("standard input", err.object, f"at line {line_of(err.object, err.start)}") from None
    except OSError as err:
        raise UserError(f"cannot read {source}: {err.strerror or err}") from None
    texts: list[Text] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise UserError(f"{source}: line {number} is empty")
        a, tab, b = line.partition("\t")
        texts.append((a, b) if tab else a)
    if not texts:
        raise UserError(f"{source} holds no text")
    return texts


def show(encoding: Encoding, as_json: bool) -> str:
    if as_json:
        return json.dumps({"tokens": encoding.tokens, "segments": encoding.segments,
                           "cls": encoding.cls.round(6).tolist(), "encoding": encoding.vectors.round(6).tolist()})
    lines = [f"tokens: {encoding.tokens}",
             f"encoding shape: {(1, *encoding.vectors.shape)}",
             f"<cls> shape: {(1, encoding.vectors.shape[1])}",
             f"each token's first 3 of {encoding.vectors.shape[1]} numbers (--json for all):"]
    width = max(len(t) for t in encoding.tokens)
    for token, vector in zip(encoding.tokens, encoding.vectors):
        lines.append(f"  {token:<{width}} {np.array2string(vector[:3], precision=4, separator=', ')}")
    return "\n".join(lines)


def cosine_of_word(tokenizer: Tokenizer, first: Encoding, second: Encoding, word: str) -> float:
    """Cosine of `word`'s vectors (its first piece's, as pipeline/evaluate.py's crane test) in two encodings."""
    vectors = []
    for enc in (first, second):
        position = word_position(tokenizer, enc.tokens, word)
        if position is None:
            raise UserError(f"--word {word!r} ({' '.join(tokenizer.tokens(word))}) is not among the tokens {enc.tokens}")
        vectors.append(enc.vectors[position])
    a, b = normalized(np.asarray(vectors))  # a zero vector gives 0, not a division by zero
    return float(a @ b)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = [x for x in (args.text, args.file, args.fill_mask) if x is not None]
    if len(given) != 1:
        raise UserError("give exactly one of --text, --file or --fill-mask")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    encoder = Encoder(model_dir=args.model_dir, device=args.device, threads=args.threads, onednn=args.onednn,
                      trt=args.trt, precision=args.precision, max_batch=args.max_batch, verbose=args.verbose,
                      backend="paddle" if args.fill_mask is not None else args.backend)
    if args.fill_mask is not None:
        for i, candidates in enumerate(encoder.fill_mask(args.fill_mask)):
            print(f"<mask> {i + 1}: " + ", ".join(f"{w} {p:.3f}" for w, p in candidates))
        return 0
    if args.file is not None:
        texts = read_texts(args.file)
    else:
        texts = [(args.text, args.text_b) if args.text_b is not None else args.text]
    if args.entities:
        if args.predict or args.embed or args.compare is not None or any(not isinstance(t, str) for t in texts):
            raise UserError("--entities tags single texts; it goes with neither --predict, --embed, --compare nor "
                            "--text-b")
        for text, found in zip(texts, encoder.entities(texts, args.batch_size)):
            print(json.dumps({"text": text, "entities": found}, ensure_ascii=False) if args.json else
                  f"{text!r}: " + (", ".join(f"{e['word']!r} {e['entity_group']} {e['score']:.3f} [{e['start']}:"
                                              f"{e['end']}]" for e in found) or "no entity"))
        return 0
    if args.predict:
        if args.embed or args.compare is not None:
            raise UserError("--predict prints labels and scores; it goes with neither --embed nor --compare")
        for text, scored in zip(texts, encoder.predict(texts, args.raw_scores, args.truncate, args.batch_size)):
            print(json.dumps({"text": text, "scores": [{"label": label, "score": round(score, 6)}
                                                       for label, score in scored]}) if args.json else
                  f"{text!r}: " + ", ".join(f"{label} {score:.3f}" for label, score in scored))
        return 0
    if args.embed:
        if args.compare is not None:
            raise UserError("--compare compares a word's vectors; it does not go with --embed")
        for text, vector in zip(texts, encoder.embed(texts, truncate=args.truncate, windows=args.windows,
                                                     batch_size=args.batch_size)):
            print(json.dumps({"text": text, "embedding": vector.round(6).tolist()}) if args.json else
                  f"embedding {vector.shape} of {text!r}, first 3: "
                  f"{np.array2string(vector[:3], precision=4, separator=', ')} ...")
        return 0
    if args.windows:
        raise UserError("--windows goes with --embed")
    if args.compare is not None:
        texts.append(args.compare)
    encodings = encoder.encode(texts, args.batch_size, args.truncate)
    if args.compare is not None:
        *encodings, other = encodings
        similarity = cosine_of_word(encoder.tokenizer, encodings[0], other, args.word)
    for encoding in encodings:
        print(show(encoding, args.json))
    if args.compare is not None:
        print(f"cosine similarity of {args.word!r} in the two contexts: {similarity:.6f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
