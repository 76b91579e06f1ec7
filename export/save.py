"""Turn a pretraining checkpoint into a Paddle Inference model with paddle.jit.save (or a Hugging Face folder).

    python export/save.py                                  # newest checkpoint of output/ -> output/inference
    python export/save.py --checkpoint output/checkpoints/step_50 --export-dir model/ --with-heads
    python export/save.py --format huggingface             # -> output/huggingface (transformers loads it)
    python export/save.py --from-hf all-MiniLM-L6-v2/ --export-dir minilm/   # a published BERT, no training

Writes <export-dir>/encoder.json + encoder.pdiparams (Paddle 3 PIR program), vocab.json (+ tokenizer.json)
and manifest.json (and pretraining.* with --with-heads), through a temporary folder renamed at the end.
The manifest says how token vectors become one embedding (pooling, normalisation) and the longest input:
a checkpoint's are model.pooling (with `weighted`, its weight per token in token_weights.npy), normalised
after the contrastive stage, data.max_len; a published folder's are what it declares.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.core.runtime import setup_process_for_paddle

setup_process_for_paddle()

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle.static import InputSpec  # noqa: E402

from export import huggingface, onnx_graph  # noqa: E402
from export.quantize import CHECK_TEXTS, min_cosine, quantize_encoder  # noqa: E402
from pipeline import checkpoint  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.core.errors import UserError, run_cli  # noqa: E402
from pipeline.core.export_format import (  # noqa: E402
    ENCODER,
    INT8_WEIGHT_BITS,
    MANIFEST,
    MANIFEST_FORMAT,
    ONNX_FILE,
    ONNX_INT8_FILE,
    PRED_POSITIONS,
    PRETRAINING,
    PRETRAINING_OUTPUTS,
    TOKEN_CLASSIFICATION,
    TOKEN_WEIGHTS,
    VOCAB,
    embedding_manifest,
    head_manifest,
    inputs_manifest,
    outputs_manifest,
)
from pipeline.core.files import atomic_folder, file_digest  # noqa: E402
from pipeline.core.pooling import pool  # noqa: E402
from pipeline.core.tokenizer import Tokenizer, load_tokenizer, pad_batch, tokenize  # noqa: E402
from pipeline.core.vocab import Vocab  # noqa: E402
from pipeline.model import BertForPretraining, SequenceClassifier, TokenClassifier, encoder_input_spec  # noqa: E402
from pipeline.objectives import OBJECTIVES  # noqa: E402
from pipeline.pretrained import complete_state, open_pretrained, sentence_embedding  # noqa: E402

# int8 embeddings further than this from fp32's (cosine, worst of CHECK_TEXTS) get a warning at export
MIN_INT8_COSINE = 0.99


class PretrainingHeads(paddle.nn.Layer):
    """The encoder with its pretraining heads, for inference: masked-word and next-sentence probabilities
    (the `pretraining` program of an export made with --with-heads)."""

    def __init__(self, model: BertForPretraining):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, valid_length, pred_positions):
        mlm_logits, nsp_logits = self.model(input_ids, token_type_ids, valid_length, pred_positions)
        return paddle.nn.functional.softmax(mlm_logits, -1), paddle.nn.functional.softmax(nsp_logits, -1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a pretraining checkpoint as a Paddle Inference model "
                                            "(paddle.jit.save of the encoder under to_static, dynamic batch "
                                            "and sequence length).")
    p.add_argument("--output-dir", default="output",
                   help="training output folder whose newest checkpoint is exported (default: output)")
    p.add_argument("--checkpoint", help="a checkpoint folder (checkpoints/step_N) instead of the newest")
    p.add_argument("--from-hf", metavar="DIR",
                   help="export a published BERT without training: a Hugging Face BertModel/BertForPreTraining "
                        "folder or a sentence-transformers folder (its pooling, normalisation and max_seq_length go "
                        "into the manifest); default dir <output-dir>/inference")
    p.add_argument("--export-dir", help="where to write the model (default: <output-dir>/inference)")
    p.add_argument("--force", action="store_true",
                   help="replace the export in the default folder even when it came from another model "
                        "(without it, that is refused: name the folder with --export-dir instead)")
    p.add_argument("--with-heads", action="store_true",
                   help="also export encoder + MLM/NSP heads, needed by infer/encode.py --fill-mask")
    p.add_argument("--onnx", action="store_true",
                   help="also write the encoder as ONNX (encoder.onnx) for infer/ --backend onnxruntime: a post-LN "
                        "BERT with ONNX Runtime's fused BERT operators, other models converted by paddle2onnx; "
                        "needs: pip install paddle2onnx onnxruntime onnx")
    p.add_argument("--int8", action="store_true",
                   help="also write encoder.int8.onnx (implies --onnx): ONNX Runtime dynamic int8 quantisation for "
                        "infer/ --precision int8, faster than fp32 on CPU; prints its cosine to fp32 on varied texts")
    p.add_argument("--format", choices=("paddle", "huggingface"), default="paddle",
                   help="paddle (default): a Paddle Inference model for infer/; huggingface: a folder that "
                        "transformers.BertForPreTraining.from_pretrained loads (default dir <output-dir>/huggingface)")
    return p


def export(cfg: Config, model_state: dict, tokenizer: Tokenizer, export_dir: Path, source: dict,
           embedding: dict, with_heads: bool = False, onnx: bool = False, int8: bool = False) -> Path:
    """Write the inference model of `model_state` (a `BertForPretraining` of `cfg.model`) to `export_dir`,
    replacing what was there only on success. `source` (where the weights came from) and `embedding`
    (`embedding_manifest`) go into the manifest; `onnx` adds encoder.onnx, `int8` its int8 quantisation too."""
    model = BertForPretraining(cfg.model)
    checkpoint.apply_model_state(model, model_state, Path(source.get("checkpoint") or source.get("from_hf")))
    model.eval()
    labels = cfg.model.labels
    tagger = cfg.model.problem_type == TOKEN_CLASSIFICATION
    # a fine-tuned model's program also outputs its head's logits; the encodings stay its first output
    program = (TokenClassifier(model, 0.0) if tagger else SequenceClassifier(model, 0.0)) if labels else model.encoder
    program.eval()
    with atomic_folder(export_dir) as tmp:
        encoder = paddle.jit.to_static(program, input_spec=encoder_input_spec(), full_graph=True)
        paddle.jit.save(encoder, str(tmp / ENCODER))
        if with_heads:
            heads = PretrainingHeads(model)
            spec = encoder_input_spec() + [InputSpec([None, None], "int64", PRED_POSITIONS[0])]
            paddle.jit.save(paddle.jit.to_static(heads, input_spec=spec, full_graph=True), str(tmp / PRETRAINING))
        graph_kind = write_onnx(tmp, model, cfg) if onnx or int8 else None
        weights = model.token_weights.numpy() if embedding["pooling"] == "weighted" else None
        if weights is not None:
            np.save(tmp / TOKEN_WEIGHTS, weights)
        quantized = write_int8(tmp, cfg, tokenizer, embedding["pooling"], weights) if int8 else None
        tokenizer.save(tmp)  # vocab.json, and tokenizer.json for WordPiece: inference tokenizes as training did
        manifest = {
            "format": MANIFEST_FORMAT,
            "model": cfg.model.__dict__, "max_len": cfg.data.max_len, "tokenizer": tokenizer.kind,
            **source, "paddle_version": paddle.__version__,
            "inputs": inputs_manifest(),
            "outputs": outputs_manifest(cfg.model.hidden_size, len(labels or []), tagger),
            "embedding": embedding,
            "with_heads": with_heads,
            "sha256": {p.name: file_digest(p)
                       for p in sorted([*tmp.glob("*.pdiparams"), *tmp.glob("*.onnx"), *tmp.glob("*.npy")])},
        }
        if with_heads:
            manifest["heads_outputs"] = list(PRETRAINING_OUTPUTS)
        if labels:
            manifest["head"] = head_manifest(labels, cfg.model.problem_type)
        if graph_kind:
            manifest["onnx_graph"] = graph_kind
        if quantized:
            manifest["int8"] = quantized
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return export_dir


def export_checkpoint(ckpt: checkpoint.Checkpoint, tokenizer: Tokenizer, export_dir: Path, with_heads: bool,
                      onnx: bool = False, int8: bool = False) -> Path:
    """A training checkpoint's export, its embedding as trained: model.pooling, normalised after the
    contrastive stage (its cosine loss is what the vectors were trained for), not after masked-LM alone."""
    source = {"checkpoint": str(ckpt.path), "checkpoint_step": ckpt.step}
    m = ckpt.config.model
    embedding = embedding_manifest(m.pooling, OBJECTIVES[ckpt.config.train.objective].normalized, m.hidden_size)
    return export(ckpt.config, ckpt.model_state, tokenizer, export_dir, source, embedding, with_heads, onnx, int8)


def export_published(folder: Path, export_dir: Path, with_heads: bool, onnx: bool = False,
                     int8: bool = False) -> Path:
    """A published BERT's export, with no training step: its settings, weights and tokenizer as --init-from
    reads them, and the pooling, normalisation and longest input the folder declares."""
    pretrained = open_pretrained(folder)
    if with_heads and pretrained.fresh:
        raise UserError(f"--with-heads: {folder} holds no pretraining heads (a BertModel or sentence-transformers "
                        f"folder is the encoder alone); export without --with-heads")
    declared = sentence_embedding(folder, pretrained.model["max_position"])
    cfg = load_config(None, (), {**{f"model.{k}": v for k, v in pretrained.model.items()},
                                 "model.pooling": declared.pooling, "data.max_len": declared.max_len, "data.tokenizer": "wordpiece",
                                 "data.lowercase": pretrained.tokenizer.lowercase, "model.labels": pretrained.labels,
                                 "model.problem_type": pretrained.problem_type})
    fresh = {k: v.numpy() for k, v in BertForPretraining(cfg.model).state_dict().items()} if pretrained.fresh else {}
    state = complete_state(pretrained, fresh)
    embedding = embedding_manifest(declared.pooling, declared.normalize, cfg.model.hidden_size)
    return export(cfg, state, pretrained.tokenizer, export_dir, {"from_hf": str(Path(folder).resolve())}, embedding,
                  with_heads, onnx, int8)


def write_onnx(folder: Path, model: BertForPretraining, cfg: Config) -> str:
    """folder/encoder.onnx: written from the weights with ONNX Runtime's fused BERT operators where the model
    is a post-LN BERT (export/onnx_graph.py), else converted by paddle2onnx; returns which ("fused" or
    "paddle2onnx", the manifest's "onnx_graph")."""
    if not onnx_graph.expressible(cfg.model) or cfg.model.labels:  # the fused graph is the encoder alone
        convert_to_onnx(folder, folder / ONNX_FILE)
        return "paddle2onnx"
    try:
        import onnx  # noqa: F401 - the graph is written with it
    except ImportError:
        raise UserError("--onnx needs onnx: pip install onnx onnxruntime") from None
    state = {k: v.numpy() for k, v in model.encoder.state_dict().items()}
    onnx_graph.write_fused_onnx(state, cfg.model, folder / ONNX_FILE)
    return "fused"


def convert_to_onnx(folder: Path, target: Path) -> None:
    """folder/encoder.json + .pdiparams -> `target` (opset 17) with paddle2onnx."""
    try:
        import paddle2onnx
    except ImportError:
        raise UserError("--onnx needs paddle2onnx: pip install paddle2onnx onnxruntime") from None
    with captured_output() as said:  # its own progress lines (C++ and Python) are not the user's business
        try:  # optimize_tool="None": its default optimiser pip-installs packages on the fly
            paddle2onnx.export(str(folder / f"{ENCODER}.json"), str(folder / f"{ENCODER}.pdiparams"),
                               save_file=str(target), opset_version=17, optimize_tool="None")
            failure = None
        except (Exception, SystemExit) as err:  # paddle2onnx ends with SystemExit on a failed conversion
            failure = err
    if failure is not None:
        last = (said.text.strip().splitlines() or [str(failure)])[-1]
        raise UserError(f"ONNX conversion failed: {failure} ({last})") from None
    if not target.is_file():
        raise UserError("ONNX conversion failed: paddle2onnx wrote no file")


@dataclass
class Captured:
    """What a block wrote to this process's stdout and stderr."""

    text: str = ""


@contextlib.contextmanager
def captured_output() -> Iterator[Captured]:
    """Route this process's stdout and stderr, lines of C++ code included, into a temporary file for the
    block; what was written is kept in the yielded `Captured` (for an error message)."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        captured = Captured()
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, original in zip((1, 2), saved):
                os.dup2(original, fd)
                os.close(original)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")


def write_int8(folder: Path, cfg: Config, tokenizer: Tokenizer, pooling: str,
               token_weights: np.ndarray | None = None) -> dict:
    """folder/encoder.onnx -> folder/encoder.int8.onnx, smoothed as CHECK_TEXTS' activations show, and the
    manifest's "int8": what stayed fp32 and the lowest cosine of its embeddings to fp32's on CHECK_TEXTS
    (printed; a warning under MIN_INT8_COSINE)."""
    feeds = [pad_batch(tokenizer.vocab, [tokenize(tokenizer, text, cfg.data.max_len, truncate=True)])
             for text in CHECK_TEXTS]
    # quantised from paddle2onnx's graph, whose LayerNorm-fed MatMuls SmoothQuant finds (export/quantize.py)
    converted = folder / "encoder.paddle2onnx.onnx"
    convert_to_onnx(folder, converted)
    kept = quantize_encoder(converted, folder / ONNX_INT8_FILE, cfg.model.hidden_size, cfg.model.ffn_size,
                            calibration=feeds)
    converted.unlink()
    cosine = min_cosine(folder / ONNX_FILE, folder / ONNX_INT8_FILE, feeds, lambda vectors, ids: pool(
        vectors, pooling, token_weights[ids] if token_weights is not None else None))
    print(f"int8: embeddings of {len(CHECK_TEXTS)} varied texts within cosine {cosine:.4f} of fp32")
    if cosine < MIN_INT8_COSINE:
        print(f"warning: int8 embeddings drift from fp32 on this model (cosine {cosine:.4f} < {MIN_INT8_COSINE}); "
              f"prefer fp32 or --precision bf16", file=sys.stderr)
    return {"file": ONNX_INT8_FILE, "weight_bits": INT8_WEIGHT_BITS, "fp32_matmuls": kept,
            "check_texts": len(CHECK_TEXTS), "min_cosine_to_fp32": round(cosine, 5)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output_dir)
    default_name = "huggingface" if args.format == "huggingface" else "inference"
    export_dir = Path(args.export_dir) if args.export_dir else output / default_name
    if args.from_hf is not None:
        if args.checkpoint or args.format != "paddle":
            raise UserError("--from-hf exports a published folder as a Paddle Inference model: it takes neither "
                            "--checkpoint nor --format huggingface")
        source = Path(args.from_hf).expanduser()
        if source.is_dir() and not (args.export_dir or args.force):
            refuse_replacing_another_model(export_dir, source.resolve())
        return write_export(lambda: export_published(Path(args.from_hf), export_dir, args.with_heads, args.onnx,
                                                     args.int8), export_dir, args.from_hf)
    path = Path(args.checkpoint) if args.checkpoint else checkpoint.best(output) or checkpoint.latest(output)
    if path is None:
        raise UserError(f"no checkpoint in {output / 'checkpoints'}: train first (python pipeline/train.py) "
                        f"or pass --checkpoint (or --from-hf DIR for a published BERT)")
    if not path.is_dir():
        raise UserError(f"checkpoint folder not found: {path}")
    ckpt = checkpoint.load(path)
    run_folder = path.resolve().parent.parent
    if not (args.export_dir or args.force):
        refuse_replacing_another_model(export_dir, run_folder)
    vocab = Vocab.load(run_folder / VOCAB)
    tokenizer = load_tokenizer(run_folder, vocab)
    if len(vocab) != ckpt.config.model.vocab_size:
        raise UserError(f"vocab.json has {len(vocab)} tokens but checkpoint {ckpt.path} expects "
                        f"{ckpt.config.model.vocab_size}")

    def write() -> None:
        if args.format == "huggingface":
            huggingface.check_expressible(ckpt.config)
            if ckpt.config.model.pooling == "weighted":
                print("note: the Hugging Face folder holds the encoder without its pooling's token weights "
                      "(model.pooling=weighted); the Paddle export (--format paddle) keeps them", file=sys.stderr)
            with atomic_folder(export_dir) as tmp:
                huggingface.write_folder(tmp, ckpt.config, ckpt.model_state, tokenizer)
        else:
            export_checkpoint(ckpt, tokenizer, export_dir, args.with_heads, args.onnx, args.int8)

    chosen = " (the best by the dev metric; --checkpoint for another)" if path == checkpoint.best(output) else ""
    return write_export(write, export_dir, f"{path} (step {ckpt.step}){chosen}")


def refuse_replacing_another_model(export_dir: Path, source: Path) -> None:
    """Refuse to replace, in a folder the user did not name, an export of another model than `source` (a
    training run folder or a published folder): re-exporting the same run after more training is fine."""
    try:
        manifest = json.loads((export_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # nothing there, or nothing this project wrote
    if "from_hf" in manifest:
        previous = Path(manifest["from_hf"])
    else:
        previous = Path(manifest.get("checkpoint", "")).resolve().parent.parent
    if previous != source:
        raise UserError(f"{export_dir} holds the export of {previous}; write this one elsewhere with --export-dir DIR, "
                        f"or pass --force to replace it")


def write_export(write, export_dir: Path, what: str) -> int:
    """Run `write`; a full disk or a read-only folder is one line, and a previous export stays as it was."""
    try:
        write()
    except OSError as err:
        raise UserError(f"cannot write the export to {export_dir} ({err.strerror or err}); "
                        f"{'the previous export is unchanged' if export_dir.exists() else 'nothing was written'}") from None
    print(f"exported {what} to {export_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
