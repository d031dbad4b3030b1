"""Tokenizers of the text models, and encoding of text splits with an on-disk cache.

Pretrained BERT-family models use their own tokenizer (``AutoTokenizer`` from ``model_path`` or the
local copy of the model, ``trainables.models.hub.local_copy``: the Hugging Face cache or the package
that ships it; never the network). Toy BERTs use a word-level tokenizer built from the
training texts: BERT's normaliser (lowercase, accents stripped, control characters removed) and
pre-tokeniser (split on whitespace and punctuation, punctuation marks kept as tokens), a vocabulary of
the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4) followed by the corpus words ordered by
decreasing frequency then alphabetically, capped at ``max_vocab_size`` entries, unknown words mapped to
``[UNK]``, and BERT's post-processing ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]`` with token type ids
0 for the first segment and 1 for the second. The vocabulary is a deterministic function of the corpus
(its order does not matter) and the cap.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from trainables.errors import GroupsweepError
from trainables.models.hub import local_copy, missing_from_cache
from trainables.models.registry import TOY_VOCAB_SIZE, get_spec

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER_FILES = (("tokenizer.json", "vocab.txt"), ("tokenizer_config.json", "config.json"))
ENCODED_KEYS = ("input_ids", "attention_mask", "token_type_ids")
CACHE_FORMAT = "groupsweep-encoded-texts-v1"


def build_tokenizer(name: str, model_path=None, corpus: Iterable | None = None,
                    max_vocab_size: int = TOY_VOCAB_SIZE):
    """The tokenizer of text model ``name``.

    Toy models (``toy-bert-*``): ``word_level_tokenizer(corpus, max_vocab_size)``; ``corpus`` (the
    training texts, strings or string pairs) is required and ``model_path`` is not used, since the
    vocabulary is a deterministic function of the corpus. Pretrained models: the tokenizer saved in
    ``model_path`` when given, else the one of the entry's hub id in the local Hugging Face cache, else
    the one in the package that ships the entry (``local_copy``);
    ``corpus`` is not used. Missing files, image models and unknown names raise a one-line
    ``GroupsweepError``.
    """
    spec = get_spec(name)
    if spec.modality != "text":
        raise GroupsweepError(f"model {name!r} is an {spec.modality} model; only text models have a tokenizer")
    if spec.toy:
        if corpus is None:
            raise GroupsweepError(f"toy model {name!r} builds its word-level vocabulary from the training texts; "
                                  f"pass corpus=")
        return word_level_tokenizer(corpus, max_vocab_size)
    if model_path is not None:
        directory = Path(model_path)
        if not directory.is_dir():
            raise GroupsweepError(f"model_path {str(directory)!r} of model {name!r} is not a directory")
    else:
        found = local_copy(spec, TOKENIZER_FILES)
        if found is None:
            raise missing_from_cache(spec, "tokenizer files")
        directory = found[0]
    # deferred: tokenizers/transformers load only for text models
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise GroupsweepError(f"cannot load the tokenizer of model {name!r} from {str(directory)!r}: "
                              f"{error}".splitlines()[0])


def _corpus_texts(corpus: Iterable) -> Iterable[str]:
    for item in corpus:
        parts = item if isinstance(item, (tuple, list)) else (item,)
        for text in parts:
            if not isinstance(text, str):
                raise GroupsweepError(f"corpus items must be strings or string pairs, got {type(text).__name__}")
            yield text


def word_level_tokenizer(corpus: Iterable, max_vocab_size: int = TOY_VOCAB_SIZE):
    """A deterministic word-level BERT-style tokenizer built from ``corpus`` (see module docstring),
    as a transformers ``PreTrainedTokenizerFast`` (``len(tokenizer)`` = vocabulary size)."""
    # deferred: tokenizers/transformers load only for text models
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if max_vocab_size <= len(SPECIAL_TOKENS):
        raise GroupsweepError(f"max_vocab_size {max_vocab_size} leaves no room for words; "
                              f"use more than {len(SPECIAL_TOKENS)}")
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(vocab_size=max_vocab_size, min_frequency=1,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tokenizer.train_from_iterator(_corpus_texts(corpus), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_input_names=list(ENCODED_KEYS),
    )


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides how ``tokenizer`` encodes text: its class, its full
    tokenizers pipeline (normaliser, pre-tokeniser, vocabulary, post-processor; the padding and
    truncation state a call leaves behind excluded) and its padding/truncation sides."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GroupsweepError(f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer")
    pipeline = json.loads(backend.to_str())
    pipeline.pop("padding", None)
    pipeline.pop("truncation", None)
    identity = json.dumps([type(tokenizer).__name__, pipeline, tokenizer.padding_side, tokenizer.truncation_side],
                          sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()


def _split_pairs(texts: Sequence) -> tuple[list[str], list[str] | None]:
    if all(isinstance(text, str) for text in texts):
        return list(texts), None
    if all(isinstance(text, (tuple, list)) and len(text) == 2 for text in texts):
        return [str(a) for a, _ in texts], [str(b) for _, b in texts]
    raise GroupsweepError("texts must all be strings or all be (text, text) pairs")


def _cache_key(tokenizer, max_length: int, firsts: list[str], seconds: list[str] | None) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{tokenizer_fingerprint(tokenizer)}|{max_length}|"
                            f"{'pairs' if seconds is not None else 'single'}|{len(firsts)}".encode())
    for column in (firsts, seconds or []):
        for text in column:
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def _save_atomically(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def encode_texts(tokenizer, texts: Sequence, max_length: int, cache_dir=None) -> dict:
    """Encode ``texts`` (all strings, or all (text, text) pairs) into LongTensors (N, max_length)
    ``input_ids``, ``attention_mask`` and ``token_type_ids``: special tokens added, padded to
    ``max_length``, truncated to it (pairs: the longer segment first, token by token).

    With ``cache_dir``, the encoding is stored there as ``tokens-<hash>.npy`` (int32, shape
    (3, N, max_length), written atomically), keyed by the tokenizer fingerprint, ``max_length`` and the
    texts, and loaded instead of re-tokenising on the next call with the same three. A cache folder that
    cannot be written (a read-only data folder) costs a warning, not the run: the encoding is returned.
    """
    if max_length < 2:
        raise GroupsweepError(f"max_length {max_length} is too short; need at least 2 tokens ([CLS] [SEP])")
    firsts, seconds = _split_pairs(texts)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"tokens-{_cache_key(tokenizer, max_length, firsts, seconds)}.npy"
    if path is not None and path.is_file():
        stacked = np.load(path)
    else:
        stacked = np.zeros((len(ENCODED_KEYS), len(firsts), max_length), dtype=np.int32)
        if firsts:
            encoded = tokenizer(firsts, seconds, padding="max_length", truncation=True, max_length=max_length,
                                return_attention_mask=True, return_token_type_ids=True, return_tensors="np")
            stacked = np.stack([encoded[key] for key in ENCODED_KEYS]).astype(np.int32)
        if path is not None:
            try:
                _save_atomically(path, stacked)
            except OSError as error:
                warnings.warn(f"token ids not cached in {str(path.parent)!r} ({error.strerror or error}); pass "
                              "cache_dir or set GROUPSWEEP_CACHE to a writable folder", stacklevel=2)
    return {key: torch.from_numpy(stacked[i].astype(np.int64)) for i, key in enumerate(ENCODED_KEYS)}
