"""Export RetroMAE encoders as standard sentence-transformers folders (the encoder's own architecture + [CLS] pooling).

The exported folder is what stage-2 models are published as: `SentenceTransformer(folder)` loads it with
sentence-transformers alone, without `trust_remote_code` and without this package, because the weights are the
encoder's native base model (`BertModel`, `XLMRobertaModel`, `ModernBertModel`, ...) and the modules are
sentence-transformers' own (Transformer, CLS Pooling, [Normalize]).
"""

import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .configuration_retromae import RetroMAEConfig
from .errors import MissingInputError, UserError, check_weight_files, remote_resource
from .modeling_retromae import RetroMAEForPreTraining, RetroMAEModel, RetroMAEPreTrainedModel
from .outputs import staged_output

logger = logging.getLogger(__name__)

Similarity = Literal["dot", "cosine"]


def _encoder_and_tokenizer(
    model_or_path: RetroMAEPreTrainedModel | str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | str | None,
) -> tuple[RetroMAEPreTrainedModel, PreTrainedTokenizerBase]:
    own_tokenizer = checkpoint = None  # set for a checkpoint folder: whether the tokenizer is its own
    if isinstance(model_or_path, RetroMAEModel | RetroMAEForPreTraining):
        model = model_or_path
    else:
        path = str(model_or_path)
        if os.path.exists(path) and not os.path.isfile(os.path.join(path, "config.json")):
            raise MissingInputError(f"{path} has no config.json: not a RetroMAE checkpoint folder")
        check_weight_files(path, f"checkpoint {path}")
        with remote_resource("checkpoint", path):
            config = AutoConfig.from_pretrained(path)
            if config.model_type != RetroMAEConfig.model_type:
                raise UserError(
                    f"{path} is a {config.model_type!r} model, not a RetroMAE checkpoint; convert it first "
                    "(retromae-hf convert) or load it with sentence-transformers directly"
                )
            model = RetroMAEModel.from_pretrained(path)
        own_tokenizer = path if tokenizer is None or str(tokenizer) == path else None
        checkpoint = path
        tokenizer = tokenizer or path
    if tokenizer is None:
        raise ValueError("exporting a model object needs its tokenizer (tokenizer=...)")
    if isinstance(tokenizer, str | os.PathLike):
        with remote_resource("tokenizer", str(tokenizer), "--tokenizer"):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size} embeddings: "
            "they do not belong together. Export with the checkpoint's own tokenizer."
        )
    if checkpoint is not None and own_tokenizer is None:
        _check_given_tokenizer(tokenizer, checkpoint)
    return model.eval(), tokenizer


#: English text on which a tokenizer given for a checkpoint (`export --tokenizer`) is tried: a tokenizer that turns
#: it mostly into [UNK] would export a model that sees nothing but [UNK].
PROBE_TEXT = (
    "The committee met on Tuesday to review the annual budget. Researchers measured how quickly the new method "
    "retrieves relevant documents from a large collection, and the results were published in 2021. She walked "
    "along the river, thinking about the questions her students had asked during the morning lecture."
)


def _check_given_tokenizer(tokenizer: PreTrainedTokenizerBase, checkpoint: str) -> None:
    """A tokenizer passed with a checkpoint (not its own) must not turn ordinary text mostly into [UNK]; the
    checkpoint's own tokenizer, when the folder holds one, is the reference: if it does the same, the model was
    trained that way and the given one is accepted."""
    from .data import UNKNOWN_SHARE_LIMIT, check_unknown_share, unknown_share

    share, tokens = unknown_share(tokenizer, [PROBE_TEXT])
    if share <= UNKNOWN_SHARE_LIMIT:
        return
    try:
        own = AutoTokenizer.from_pretrained(checkpoint)
    except Exception:  # a checkpoint without a tokenizer of its own: nothing to compare with
        own = None
    if own is not None and unknown_share(own, [PROBE_TEXT])[0] > UNKNOWN_SHARE_LIMIT:
        return
    check_unknown_share(
        tokenizer,
        share,
        tokens,
        what="a probe of ordinary English text",
        fix=f"It is not the tokenizer {checkpoint} was trained with: export with the checkpoint's own tokenizer "
        "(drop --tokenizer) or the one named in its training recipe.",
    )


def native_encoder(model: RetroMAEPreTrainedModel) -> PreTrainedModel:
    """The encoder as the model `AutoModel` builds for its architecture (`BertModel`, `XLMRobertaModel`,
    `ModernBertModel`, ...), with identical weights: what sentence-transformers loads without remote code."""
    encoder = model.get_encoder()
    native = AutoModel.from_config(encoder.config.__class__.from_dict(encoder.config.to_dict()))
    missing, unexpected = native.load_state_dict(encoder.state_dict(), strict=False)
    if unexpected:
        raise RuntimeError(f"the encoder does not map onto {type(native).__name__}: unexpected {unexpected}")
    # What AutoModel adds that the masked-LM encoder lacks (BERT's pooler): RetroMAE embeds with the raw [CLS]
    # vector and never uses it. Zeros (rather than random values) keep the export deterministic and let it load
    # without "newly initialised weights" warnings.
    parameters = dict(native.named_parameters())
    with torch.no_grad():
        for key in missing:
            if key in parameters:
                parameters[key].zero_()
    return native.eval()


def export_length(
    model: RetroMAEPreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_seq_length: int | None = None
) -> int:
    """The export's truncation length: `max_seq_length` when given, else the encoder's real longest input.

    The encoder decides, not the tokenizer: a tokenizer's `model_max_length` is a saved attribute that often
    lags behind the model (a tokenizer trained or copied with 512, a BERT whose position table was extended with
    `retromae-hf convert --max-positions`), and sentence-transformers truncates to it. The encoder's length is its
    absolute position table less RoBERTa's padding offset (512 of 514 rows for RoBERTa and XLM-R base), or
    `max_position_embeddings` for a rotary encoder (8,192 for ModernBERT). The tokenizer's length is used only
    for an encoder that states none.
    """
    longest = model.max_sequence_length()
    length = max_seq_length or longest or tokenizer.model_max_length
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and model_max != length:
        logger.info(
            "max_seq_length %d (the %s); the tokenizer's model_max_length was %d",
            length,
            "--max-seq-length given" if max_seq_length else "encoder's longest input",
            model_max,
        )
    return int(length)


def export_sentence_transformer(
    model_or_path: RetroMAEPreTrainedModel | str | os.PathLike,
    output_dir: str | os.PathLike,
    similarity: Similarity = "dot",
    tokenizer: PreTrainedTokenizerBase | str | None = None,
    max_seq_length: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a standard sentence-transformers folder: Transformer (the encoder's own architecture) + CLS Pooling
    [+ Normalize].

    Args:
        model_or_path: a RetroMAE checkpoint folder or Hub id (stage 1, stage 2, or converted official), or a
            `RetroMAEModel` / `RetroMAEForPreTraining` object.
        output_dir: the folder to write; written beside it, then renamed into place. An existing folder that
            holds anything is refused unless `overwrite`; a folder inside (or holding) the checkpoint always is.
        similarity: `"dot"` (RetroMAE's retrieval scoring) or `"cosine"` (adds a Normalize module, for
            sentence-embedding models); recorded in `config_sentence_transformers.json`.
        tokenizer: needed when `model_or_path` is an object; defaults to the checkpoint's own.
        max_seq_length: the export's truncation length (default: the encoder's longest input, `export_length`:
            512 for BERT and XLM-R base, 8,192 for ModernBERT, the new length of an extended position table).
        overwrite: replace an existing `output_dir` that an earlier export wrote (it holds the marker
            `.retromae-output.json`); anything else there is refused.

    Returns:
        The output folder.

    Raises:
        OutputExistsError: `output_dir` exists (without `overwrite`), or is or holds the checkpoint.
        UserError: the checkpoint is missing, not RetroMAE, or needs the Hub, which cannot be reached.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from .outputs import check_output

    if similarity not in ("dot", "cosine"):
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    if max_seq_length is not None and (isinstance(max_seq_length, bool) or max_seq_length < 1):
        raise ValueError(f"max_seq_length must be a positive whole number, got {max_seq_length!r}")
    inputs = [model_or_path, tokenizer] if isinstance(model_or_path, str | os.PathLike) else [tokenizer]
    inputs = [item for item in inputs if isinstance(item, str | os.PathLike)]
    check_output(output_dir, overwrite=overwrite, inputs=inputs, what="export folder", command="export")  # before loading anything
    model, tokenizer = _encoder_and_tokenizer(model_or_path, tokenizer)
    longest = model.max_sequence_length()
    if max_seq_length is not None and longest and max_seq_length > longest:
        raise ValueError(
            f"max_seq_length {max_seq_length} (--max-seq-length) is longer than the model's {longest} positions"
        )
    encoder = native_encoder(model)
    output_dir = Path(output_dir)
    with (
        tempfile.TemporaryDirectory(prefix="retromae-export-") as scratch,
        staged_output(
            output_dir, overwrite=overwrite, inputs=inputs, what="export folder", command="export"
        ) as staging,
    ):
        plain = Path(scratch) / "encoder"
        encoder.save_pretrained(plain)
        tokenizer.save_pretrained(plain)
        length = export_length(model, tokenizer, max_seq_length)
        modules = [
            Transformer(str(plain), max_seq_length=length),
            Pooling(model.config.hidden_size, pooling_mode="cls"),
        ]
        if similarity == "cosine":
            modules.append(Normalize())
        SentenceTransformer(modules=modules, similarity_fn_name=similarity, device="cpu").save(str(staging))
    logger.info("exported %s (CLS pooling, %s similarity) to %s", type(encoder).__name__, similarity, output_dir)
    return output_dir


def load_sentence_transformer(model_or_path: str | os.PathLike, **kwargs):
    """Load any RetroMAE checkpoint, export, or other sentence-transformers model as a `SentenceTransformer`.

    RetroMAE checkpoints load through this package's registered model with CLS pooling (they carry
    sentence-transformers metadata; older ones without it get CLS pooling here explicitly).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    path = str(model_or_path)
    kwargs.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")
    is_local = os.path.isdir(path)
    check_weight_files(path, f"model {path}")
    if is_local and not os.path.isfile(os.path.join(path, "modules.json")):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise MissingInputError(f"{path} holds no model (no config.json, no modules.json)")
        config = AutoConfig.from_pretrained(path)
        if config.model_type == RetroMAEConfig.model_type:
            # Checkpoints older than the sentence-transformers metadata were BERT; 512 is BERT's position table.
            transformer = Transformer(path, max_seq_length=min(config.max_position_embeddings or 512, 512))
            pooling = Pooling(config.hidden_size, pooling_mode="cls")
            return SentenceTransformer(modules=[transformer, pooling], similarity_fn_name="dot", **kwargs)
    with remote_resource("model", path):  # a mistyped local path or an unreachable Hub fails at once, clearly
        return SentenceTransformer(path, **kwargs)


__all__ = ["export_length", "export_sentence_transformer", "load_sentence_transformer", "native_encoder"]
