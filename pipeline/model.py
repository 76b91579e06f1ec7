"""BERT for pretraining: embeddings, Transformer encoder, masked-LM head and next-sentence head.

Layers are named after the paper's parts (embeddings, attention, intermediate, output, heads); the
names differ from Hugging Face's `modeling_bert.py` in places (`attention_norm`, `mlm_head.decoder`,
the pooler inside `nsp_head`), and export/huggingface.py maps every parameter explicitly. Written for
the static graph on CPU: one additive attention mask per batch shared by every head and layer; with
up to 4 heads, attention runs head by head on column blocks of the projection weights (no transposes),
with more the heads are batched with the usual transposes; the MLM head gathers its rows by flat
index; no Python loops over tensor values. Shapes: B batch, L length, H hidden, V vocabulary.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from pipeline.config import ModelConfig
from pipeline.core.export_format import ENCODER_INPUTS
from pipeline.data.batches import dropout_keep_probability

MASK_VALUE = -1e4  # additive mask for padded keys; safe in fp16 too
# The token weights' learning rate, as a multiple of train.lr: the best measured (docs/contrastive.md)
TOKEN_WEIGHT_LR = 30.0
TOKEN_WEIGHTS_PREFIX = "token_weights."  # their name in a checkpoint's weights
CLASSIFIER_PREFIX = "classifier."  # a fine-tuned classifier's output layer (model.labels)


def attention_mask(valid_length: paddle.Tensor, seq_len: paddle.Tensor | int) -> paddle.Tensor:
    """[B, 1, L] additive mask: 0 for the first `valid_length` keys of a row, MASK_VALUE after."""
    positions = paddle.arange(seq_len, dtype=valid_length.dtype).unsqueeze(0)
    keep = positions < valid_length.unsqueeze(1)
    return ((1.0 - keep.astype("float32")) * MASK_VALUE).unsqueeze(1)


def linear_with_bias_row(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """`x @ weight + bias` as one product of [x, 1] and [weight; bias].

    The bias gradient then comes out of the weight-gradient product instead of a column reduction,
    which Paddle's CPU kernels run slowly, above all under to_static (measured for a 128 -> 256 layer on
    [512, 64] rows, forward + backward: 318 ms plain, 113 ms this way, 98 ms with no bias at all).
    """
    ones = paddle.ones(paddle.concat([paddle.shape(x)[:-1], paddle.ones([1], dtype="int64")]), dtype=x.dtype)
    return paddle.matmul(paddle.concat([x, ones], axis=-1), paddle.concat([weight, bias.unsqueeze(0)], axis=0))


def dense(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None, training: bool) -> paddle.Tensor:
    """`linear_with_bias_row` in training; plain F.linear (fewer ops, no gradient needed) in eval mode;
    a plain product without a bias (`model.linear_bias=false`)."""
    if bias is None:
        return paddle.matmul(x, weight)
    return linear_with_bias_row(x, weight, bias) if training else F.linear(x, weight, bias)


class BiasRowLinear(nn.Linear):
    """nn.Linear whose training form multiplies by [W; b] (the bias as an extra weight row): see `dense`."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return dense(x, self.weight, self.bias, self.training)


class BertEmbeddings(nn.Layer):
    """Token + segment + learned position embeddings, then LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(2, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps)

    def forward(self, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor) -> paddle.Tensor:
        # position ids of the full [B, L] shape: a broadcast [1, L, H] add would make the position
        # gradient a slow column reduction, the embedding lookup makes it a scatter-add
        positions = paddle.zeros_like(input_ids) + paddle.arange(paddle.shape(input_ids)[1], dtype=input_ids.dtype)
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(positions))
        return self.layer_norm(x)


class BertSelfAttention(nn.Layer):
    """Multi-head self-attention with the padding mask.

    With few heads (the tiny model) it runs head by head on [B, L, head_dim] column blocks of the
    projection weights: no [B, L, heads, dim] transposes (copies, slow on CPU). With many heads it runs
    them batched, as usual: unrolling 12 heads x 12 layers made to_static take two minutes to build.

    The key bias shifts every score of a query row by the same amount, which softmax ignores, so there
    is none; the value bias passes through the attention weights (rows sum to 1) into the output bias.
    In training, the query and output biases are extra weight rows (`linear_with_bias_row`). With
    `model.linear_bias=false` there are no biases at all (cramming).
    """

    MAX_UNROLLED_HEADS = 4

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        bias = None if cfg.linear_bias else False
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias_attr=bias)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias_attr=False)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias_attr=bias)
        self.output = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias_attr=bias)

    def _dense(self, x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None) -> paddle.Tensor:
        return dense(x, weight, bias, self.training)

    def _output_bias(self) -> paddle.Tensor | None:
        """The value bias carried through the output weights, plus the output bias (None without biases)."""
        if self.output.bias is None:
            return None
        return (paddle.matmul(self.value.bias.unsqueeze(0), self.output.weight) + self.output.bias).squeeze(0)

    def forward(self, x: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
        scale = 1.0 / math.sqrt(self.head_dim)
        bias = self._output_bias()
        query_bias = None if self.query.bias is None else self.query.bias * scale
        if self.num_heads > self.MAX_UNROLLED_HEADS:
            return self._batched_heads(x, mask, scale, query_bias, bias)
        out = None
        for h in range(self.num_heads):
            cols = slice(h * self.head_dim, (h + 1) * self.head_dim)
            q = self._dense(x, self.query.weight[:, cols] * scale, None if query_bias is None else query_bias[cols])
            k = paddle.matmul(x, self.key.weight[:, cols])
            v = paddle.matmul(x, self.value.weight[:, cols])
            context = paddle.matmul(F.softmax(paddle.matmul(q, k, transpose_y=True) + mask, axis=-1), v)
            if h == 0:  # the output bias rides on the first head's product
                part = self._dense(context, self.output.weight[cols], bias)
            else:
                part = paddle.matmul(context, self.output.weight[cols])
            out = part if out is None else out + part
        return out

    def _batched_heads(self, x: paddle.Tensor, mask: paddle.Tensor, scale: float, query_bias: paddle.Tensor | None,
                       bias: paddle.Tensor | None) -> paddle.Tensor:
        batch, length = paddle.shape(x)[0], paddle.shape(x)[1]
        heads = [batch, length, self.num_heads, self.head_dim]
        q = self._dense(x, self.query.weight * scale, query_bias).reshape(heads).transpose([0, 2, 1, 3])
        k = paddle.matmul(x, self.key.weight).reshape(heads).transpose([0, 2, 1, 3])
        v = paddle.matmul(x, self.value.weight).reshape(heads).transpose([0, 2, 1, 3])
        scores = paddle.matmul(q, k, transpose_y=True) + mask.unsqueeze(1)
        context = paddle.matmul(F.softmax(scores, axis=-1), v).transpose([0, 2, 1, 3])
        return self._dense(context.reshape([batch, length, -1]), self.output.weight, bias)


class BertLayer(nn.Layer):
    """Transformer block. Post-LN (BERT, `model.norm=post`): attention, add & norm, feed-forward, add & norm.
    Pre-LN (`pre`): x + attention(norm(x)), then x + feed-forward(norm(x)); the encoder adds a final norm.
    The feed-forward is activation(x W1) W2, or gated (`model.gated`, GLU, cramming's gated GELU):
    (activation(x W1) * x V) W2, with W1 and V the two halves of one [hidden, 2 ffn] product.

    Dropout uses `drop_masks` ([2, B, L, hidden] uint8, 1 = keep) when given: masks drawn on the host
    by the data pipeline are ~10x cheaper than Paddle's CPU random numbers. Without them, F.dropout.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = BertSelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps)
        bias = None if cfg.linear_bias else False
        self.gated = cfg.gated
        self.intermediate = BiasRowLinear(cfg.hidden_size, cfg.ffn_size * (2 if cfg.gated else 1), bias_attr=bias)
        self.output = BiasRowLinear(cfg.ffn_size, cfg.hidden_size, bias_attr=bias)
        self.activation = getattr(F, cfg.activation)
        self.output_norm = nn.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.keep_scale = 1.0 / dropout_keep_probability(cfg.dropout)
        self.pre_norm = cfg.norm == "pre"

    def _drop(self, y: paddle.Tensor, keep: paddle.Tensor | None) -> paddle.Tensor:
        if not self.training or keep is None:
            return self.dropout(y)
        return y * (keep.astype(y.dtype) * self.keep_scale)

    def feed_forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.intermediate(x)
        if self.gated:
            value, gate = paddle.chunk(y, 2, axis=-1)
            return self.output(self.activation(value) * gate)
        return self.output(self.activation(y))

    def forward(self, x: paddle.Tensor, mask: paddle.Tensor, drop_masks: paddle.Tensor | None = None) -> paddle.Tensor:
        keep_attention = None if drop_masks is None else drop_masks[0]
        keep_output = None if drop_masks is None else drop_masks[1]
        if self.pre_norm:
            x = x + self._drop(self.attention(self.attention_norm(x), mask), keep_attention)
            return x + self._drop(self.feed_forward(self.output_norm(x)), keep_output)
        x = self.attention_norm(x + self._drop(self.attention(x, mask), keep_attention))
        return self.output_norm(x + self._drop(self.feed_forward(x), keep_output))


class BertEncoder(nn.Layer):
    """(input_ids, token_type_ids, valid_length) -> encodings [B, L, hidden]. What export saves."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.LayerList([BertLayer(cfg) for _ in range(cfg.num_layers)])
        # pre-LN leaves the residual stream unnormalised: one LayerNorm at the end (cramming's final_norm)
        self.final_norm = nn.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps) if cfg.norm == "pre" else None

    def forward(self, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor, valid_length: paddle.Tensor,
                drop_masks: paddle.Tensor | None = None) -> paddle.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        mask = attention_mask(valid_length, paddle.shape(input_ids)[1])
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, None if drop_masks is None else drop_masks[2 * i:2 * i + 2])
        return x if self.final_norm is None else self.final_norm(x)


class MaskLMHead(nn.Layer):
    """Linear, activation, LayerNorm, Linear to the vocabulary, at the masked positions only.

    With `word_embeddings` the output layer's weight is the (transposed) word-embedding table, as in
    BERT: rare words then learn from every time they are read, not only from the few times they are
    masked. Only the output bias (`decoder_bias`) is the head's own.
    """

    def __init__(self, cfg: ModelConfig, word_embeddings: nn.Embedding | None = None):
        super().__init__()
        self.transform = BiasRowLinear(cfg.hidden_size, cfg.hidden_size)
        self.activation = getattr(F, cfg.activation)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps)
        self.tied = [word_embeddings] if word_embeddings is not None else []  # a list: not a second sublayer
        if word_embeddings is None:
            self.decoder = BiasRowLinear(cfg.hidden_size, cfg.vocab_size)
        else:
            self.decoder_bias = self.create_parameter([cfg.vocab_size], is_bias=True)

    def forward(self, encodings: paddle.Tensor, pred_positions: paddle.Tensor) -> paddle.Tensor:
        """Logits [B * P, V] for the [B, P] positions of each row."""
        batch, seq_len = paddle.shape(encodings)[0], paddle.shape(encodings)[1]
        offsets = (paddle.arange(batch, dtype=pred_positions.dtype) * seq_len).unsqueeze(1)
        return self.predict(encodings, (pred_positions + offsets).reshape([-1]))

    def predict(self, encodings: paddle.Tensor, flat_positions: paddle.Tensor) -> paddle.Tensor:
        """Logits [N, V] at `flat_positions` (indices into the B * L rows of `encodings`)."""
        flat = paddle.gather(encodings.reshape([-1, encodings.shape[-1]]), flat_positions)
        hidden = self.layer_norm(self.activation(self.transform(flat)))
        if self.tied:
            return dense(hidden, self.tied[0].weight.T, self.decoder_bias, self.training)
        return self.decoder(hidden)


class NextSentenceHead(nn.Layer):
    """Pooler (Linear + Tanh on <cls>) then a Linear to two classes."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.classifier = nn.Linear(cfg.hidden_size, 2)

    def forward(self, encodings: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(paddle.tanh(self.pooler(encodings[:, 0])))


class TokenWeights(nn.Layer):
    """One learned weight per vocabulary token for `model.pooling=weighted`, kept as its logarithm (always
    positive, and Adam's steps are then relative); the trainer starts them at SIF's a / (a + p)
    (`pipeline.contrastive.sif_log_weights`)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.log_weight = self.create_parameter([vocab_size], attr=paddle.ParamAttr(learning_rate=TOKEN_WEIGHT_LR),
                                                default_initializer=nn.initializer.Constant(0.0))

    def forward(self, input_ids: paddle.Tensor) -> paddle.Tensor:
        """[B, L] ids -> [B, L] weights."""
        return paddle.exp(paddle.gather(self.log_weight, input_ids.reshape([-1]))).reshape(paddle.shape(input_ids))

    def numpy(self) -> np.ndarray:
        """Every vocabulary token's weight, float32 [V] (what an export writes as TOKEN_WEIGHTS)."""
        return paddle.exp(self.log_weight).numpy()


class BertForPretraining(nn.Layer):
    """Encoder + MLM head + NSP head; returns (mlm_logits [B, P, V], nsp_logits [B, 2]). With
    `model.pooling=weighted` it also holds the pooling's `token_weights`; with `model.labels`, a classifier
    (see SequenceClassifier)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size < 6:
            raise ValueError("model.vocab_size must be set from the vocabulary")
        self.encoder = BertEncoder(cfg)
        self.mlm_head = MaskLMHead(cfg, self.encoder.embeddings.word_embeddings if cfg.tie_word_embeddings else None)
        self.nsp_head = NextSentenceHead(cfg)
        self.token_weights = TokenWeights(cfg.vocab_size) if cfg.pooling == "weighted" else None
        # a fine-tuned classifier's output layer (model.labels), after the NSP head's pooler, as BERT shares it
        self.classifier = nn.Linear(cfg.hidden_size, len(cfg.labels)) if cfg.labels else None
        if cfg.init_std > 0:
            init_bert_weights(self, cfg.init_std)
        if cfg.zero_position_init:
            for table in (self.encoder.embeddings.position_embeddings, self.encoder.embeddings.token_type_embeddings):
                table.weight.set_value(paddle.zeros_like(table.weight))

    def forward(self, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor, valid_length: paddle.Tensor,
                pred_positions: paddle.Tensor, drop_masks: paddle.Tensor | None = None
                ) -> tuple[paddle.Tensor, paddle.Tensor]:
        encodings = self.encoder(input_ids, token_type_ids, valid_length, drop_masks)
        mlm_logits = self.mlm_head(encodings, pred_positions)
        batch, preds = paddle.shape(pred_positions)[0], paddle.shape(pred_positions)[1]
        return mlm_logits.reshape([batch, preds, -1]), self.nsp_head(encodings)


def init_bert_weights(model: nn.Layer, std: float) -> None:
    """BERT's initialisation: every weight matrix and embedding from N(0, std) truncated at 2 std,
    biases 0, LayerNorm scale 1 (Paddle's defaults are Xavier-uniform matrices instead)."""
    normal = nn.initializer.TruncatedNormal(mean=0.0, std=std, a=-2 * std, b=2 * std)  # bounds are absolute
    for name, param in model.named_parameters():
        if "norm" in name:
            continue  # already scale 1, shift 0
        if param.ndim == 2:
            normal(param)
        else:
            param.set_value(paddle.zeros_like(param))


def pretraining_loss(mlm_logits: paddle.Tensor, nsp_logits: paddle.Tensor, mlm_labels: paddle.Tensor,
                     nsp_labels: paddle.Tensor, mlm_norm: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """MLM cross entropy summed over the real masked positions ([N, V] logits, [N] labels) and divided
    by `mlm_norm` (their count), and the mean NSP cross entropy. Padding never reaches the loss."""
    per_position = F.cross_entropy(mlm_logits.astype("float32"), mlm_labels.reshape([-1, 1]), reduction="none")
    mlm_loss = per_position.sum() / mlm_norm.reshape([])
    nsp_loss = F.cross_entropy(nsp_logits.astype("float32"), nsp_labels.reshape([-1, 1]))
    return mlm_loss, nsp_loss


class PretrainingStep(nn.Layer):
    """Forward pass and losses as one Layer, so one to_static program covers both. The MLM head runs on
    the real masked positions only (`mlm_positions`: flat indices into the B * L tokens), not on padding.
    Without NSP (`nsp=False`) its loss is weighted 0: the head stays in the graph (every parameter keeps a
    gradient, as data parallel wants) but learns nothing and moves nothing else."""

    def __init__(self, model: BertForPretraining, nsp: bool = True):
        super().__init__()
        self.bert = model
        self.nsp_weight = 1.0 if nsp else 0.0

    def forward(self, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor, valid_length: paddle.Tensor,
                mlm_positions: paddle.Tensor, mlm_labels: paddle.Tensor, nsp_labels: paddle.Tensor,
                mlm_norm: paddle.Tensor, drop_masks: paddle.Tensor | None = None
                ) -> tuple[paddle.Tensor, paddle.Tensor]:
        encodings = self.bert.encoder(input_ids, token_type_ids, valid_length, drop_masks)
        mlm_logits = self.bert.mlm_head.predict(encodings, mlm_positions)
        nsp_logits = self.bert.nsp_head(encodings)
        mlm_loss, nsp_loss = pretraining_loss(mlm_logits, nsp_logits, mlm_labels, nsp_labels, mlm_norm)
        return mlm_loss, nsp_loss * self.nsp_weight


def pooled(encodings: paddle.Tensor, valid_length: paddle.Tensor, pooling: str,
           token_weights: paddle.Tensor | None = None) -> paddle.Tensor:
    """[B, L, H] encodings -> [B, H]: <cls>'s vector, or the mean or max over each row's real tokens, or
    (`weighted`) their mean weighted by `token_weights` ([B, L], each token's weight)."""
    if pooling == "cls":
        return encodings[:, 0]
    keep = paddle.arange(paddle.shape(encodings)[1], dtype=valid_length.dtype).unsqueeze(0) < valid_length.unsqueeze(1)
    weights = keep.astype(encodings.dtype).unsqueeze(-1)  # [B, L, 1]: padding counts 0
    if pooling == "weighted":
        weights = weights * token_weights.astype(encodings.dtype).unsqueeze(-1)
        return (encodings * weights).sum(axis=1) / weights.sum(axis=1)
    if pooling == "max":
        masked = encodings + (1.0 - weights) * MASK_VALUE
        # the maximum gathered at its argmax: the same value and gradient as masked.max(axis=1), whose backward
        # on CPU took 974 ms for a [128, 64, 128] batch against 5 ms (Paddle 3.3; contrastive steps were 5x slower)
        at = masked.detach().argmax(axis=1, keepdim=True)
        return paddle.take_along_axis(masked, at, axis=1).squeeze(1)
    return (encodings * weights).sum(axis=1) / valid_length.astype(encodings.dtype).unsqueeze(1)


class EmbeddingStep(nn.Layer):
    """The contrastive forward pass: the encoder (with dropout in training), pooled, scaled to unit length.
    It holds the encoder (and the pooling's token weights) only, so data parallel sees no unused parameter
    (the heads are not trained here)."""

    def __init__(self, model: BertForPretraining, pooling: str):
        super().__init__()
        self.encoder, self.token_weights, self.pooling = model.encoder, model.token_weights, pooling

    def forward(self, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor, valid_length: paddle.Tensor
                ) -> paddle.Tensor:
        weights = self.token_weights(input_ids) if self.token_weights is not None else None
        vectors = pooled(self.encoder(input_ids, token_type_ids, valid_length), valid_length, self.pooling, weights)
        return F.normalize(vectors.astype("float32"), axis=-1)


class SequenceClassifier(nn.Layer):
    """(input_ids, token_type_ids, valid_length) -> (encodings [B, L, H], logits [B, labels]): BERT's pooler
    (dense + tanh on <cls>), dropout, the classifier, laid out as transformers' BertForSequenceClassification.
    It holds only what it runs, so data parallel sees no unused parameter; the export saves it whole."""

    def __init__(self, model: BertForPretraining, dropout: float):
        super().__init__()
        self.encoder, self.pooler, self.classifier = model.encoder, model.nsp_head.pooler, model.classifier
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor, valid_length: paddle.Tensor,
                drop_masks: paddle.Tensor | None = None) -> tuple[paddle.Tensor, paddle.Tensor]:
        encodings = self.encoder(input_ids, token_type_ids, valid_length, drop_masks)
        return encodings, self.classifier(self.dropout(paddle.tanh(self.pooler(encodings[:, 0]))))


class ClassifyStep(nn.Layer):
    """The fine-tuning forward pass and loss: cross entropy over the classes, or mean squared error of the one
    output (a regression), as transformers' BertForSequenceClassification computes them."""

    def __init__(self, classifier: SequenceClassifier, regression: bool):
        super().__init__()
        self.classifier, self.regression = classifier, regression

    def forward(self, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor, valid_length: paddle.Tensor,
                labels: paddle.Tensor, drop_masks: paddle.Tensor | None = None) -> paddle.Tensor:
        logits = self.classifier(input_ids, token_type_ids, valid_length, drop_masks)[1].astype("float32")
        if self.regression:
            return F.mse_loss(logits.reshape([-1]), labels.astype("float32"))
        return F.cross_entropy(logits, labels.reshape([-1, 1]))


class TokenClassifier(nn.Layer):
    """(input_ids, token_type_ids, valid_length) -> (encodings [B, L, H], logits [B, L, tags]): dropout and the
    classifier on every token, laid out as transformers' BertForTokenClassification (no pooler)."""

    def __init__(self, model: BertForPretraining, dropout: float):
        super().__init__()
        self.encoder, self.classifier = model.encoder, model.classifier
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor, valid_length: paddle.Tensor,
                drop_masks: paddle.Tensor | None = None) -> tuple[paddle.Tensor, paddle.Tensor]:
        encodings = self.encoder(input_ids, token_type_ids, valid_length, drop_masks)
        return encodings, self.classifier(self.dropout(encodings))


class TagStep(nn.Layer):
    """Token classification's loss: cross entropy over the labelled pieces (each word's first; the rest are
    -100), summed and divided by `label_norm` (the global batch's labelled words over the world size)."""

    def __init__(self, tagger: TokenClassifier):
        super().__init__()
        self.tagger = tagger

    def forward(self, input_ids: paddle.Tensor, token_type_ids: paddle.Tensor, valid_length: paddle.Tensor,
                labels: paddle.Tensor, label_norm: paddle.Tensor, drop_masks: paddle.Tensor | None = None
                ) -> paddle.Tensor:
        logits = self.tagger(input_ids, token_type_ids, valid_length, drop_masks)[1].astype("float32")
        per_token = F.cross_entropy(logits.reshape([-1, logits.shape[-1]]), labels.reshape([-1, 1]),
                                    ignore_index=-100, reduction="none")
        return per_token.sum() / label_norm.reshape([])


def tag_input_spec(host_dropout: bool) -> list:
    """InputSpecs of TagStep.forward."""
    from paddle.static import InputSpec

    masks = [InputSpec([None, None, None, None], "uint8", "drop_masks")] if host_dropout else []
    return encoder_input_spec() + [InputSpec([None, None], "int64", "labels"),
                                   InputSpec([1], "float32", "label_norm")] + masks


def classify_input_spec(regression: bool, host_dropout: bool) -> list:
    """InputSpecs of ClassifyStep.forward: the encoder's inputs, the labels (class ids, or scores), and the
    dropout masks or not."""
    from paddle.static import InputSpec

    masks = [InputSpec([None, None, None, None], "uint8", "drop_masks")] if host_dropout else []
    return encoder_input_spec() + [InputSpec([None], "float32" if regression else "int64", "labels")] + masks


def step_input_spec(host_dropout: bool) -> list:
    """InputSpecs of PretrainingStep.forward, batch and length dynamic; with the dropout masks or not."""
    from paddle.static import InputSpec

    i64, f32 = "int64", "float32"
    masks = [InputSpec([None, None, None, None], "uint8", "drop_masks")] if host_dropout else []
    return [InputSpec([None, None], i64, "input_ids"), InputSpec([None, None], i64, "token_type_ids"),
            InputSpec([None], i64, "valid_length"), InputSpec([None], i64, "mlm_positions"),
            InputSpec([None], i64, "mlm_labels"), InputSpec([None], i64, "nsp_labels"),
            InputSpec([1], f32, "mlm_norm")] + masks


def encoder_input_spec() -> list:
    """InputSpecs of BertEncoder.forward (the exported model's inputs, named in export_format)."""
    from paddle.static import InputSpec

    return [InputSpec([None] * len(shape), "int64", name) for name, shape, _ in ENCODER_INPUTS]
