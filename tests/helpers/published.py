"""Test helper: a published sentence-transformers BERT folder, written by sentence-transformers itself with
random weights over a WordPiece vocabulary learnt from varied text (accents, CJK, emoji), in the current
format or in the one most published models still have (pooling flags, sentence_bert_config.json's
max_seq_length, modules named sentence_transformers.models.*)."""
from __future__ import annotations

import json
from pathlib import Path

# varied texts: the vocabulary is learnt from them, and the parity tests embed them
TEXTS = ["a crane is flying", "A crane driver came; he just left.", "Café naïve résumé à Zürich", "东京是日本的首都",
         "emoji 🙂 and 🚀 launch", "the river bank is over there, past the old mill", "x",
         "Größe und Übermaß", "数据 科学 与 机器 学习", "numbers 12345 and 3.14159 or 1e-12",
         "UPPER lower MiXeD case", "tabs\tand  double  spaces", "it's a dog's life — isn't it?"]
LEGACY_TYPES = {"Transformer": "sentence_transformers.models.Transformer",
                "Pooling": "sentence_transformers.models.Pooling",
                "Normalize": "sentence_transformers.models.Normalize"}


def write_sentence_transformers_folder(folder: Path, pooling: str = "mean", normalize: bool = True,
                                       legacy: bool = False, tokenizer_limits: bool = False, max_len: int = 40,
                                       hidden: int = 32, seed: int = 0):
    """Write the folder; returns the SentenceTransformer model. `tokenizer_limits`: tokenizer.json pads to a
    fixed 128 and truncates at 128, as many published files do."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers import models as token_models

    backend = Tokenizer(token_models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend.train_from_iterator(TEXTS * 20, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials,
                                                                      show_progress=False))
    tokenizer = transformers.BertTokenizerFast(tokenizer_object=backend, do_lower_case=True)
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=backend.get_vocab_size(), hidden_size=hidden, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=64)
    bert_dir = folder.parent / f"{folder.name}-bert"
    transformers.BertModel(config).save_pretrained(str(bert_dir))
    tokenizer.save_pretrained(str(bert_dir))
    modules = [models.Transformer(str(bert_dir), max_seq_length=max_len), models.Pooling(hidden, pooling_mode=pooling)]
    if normalize:
        modules.append(models.Normalize())
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(folder))
    if legacy:
        write_legacy_format(folder, pooling, max_len)
    if tokenizer_limits:
        path = folder / "tokenizer.json"
        spec = json.loads(path.read_text(encoding="utf-8"))
        spec["padding"] = {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": None,
                           "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
        spec["truncation"] = {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0}
        path.write_text(json.dumps(spec), encoding="utf-8")
    return SentenceTransformer(str(folder), device="cpu")


def write_legacy_format(folder: Path, pooling: str, max_len: int) -> None:
    """Rewrite the module list, the pooling config and sentence_bert_config.json as sentence-transformers 2-3
    wrote them (the format of most published models)."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    for module in modules:
        module["type"] = LEGACY_TYPES[module["type"].rsplit(".", 1)[-1]]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    pooling_config = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    flags = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens"}
    legacy = {"word_embedding_dimension": pooling_config["embedding_dimension"],
              **{flag: name == pooling for name, flag in flags.items()},
              "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
              "pooling_mode_lasttoken": False, "include_prompt": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(legacy, indent=2), encoding="utf-8")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len, "do_lower_case": False}),
                                                      encoding="utf-8")
