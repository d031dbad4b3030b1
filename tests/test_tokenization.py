"""Tokenizers: the deterministic word-level tokenizer of toy BERTs, pretrained BERT tokenizers from a
local directory or the hub cache (offline), and the on-disk cache of encoded splits."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from model_fixtures import fake_hub_snapshot, hub_cache, minilm_dir, no_network  # noqa: F401

from trainables.errors import GroupsweepError
from trainables.models.build import build_model
from trainables.tokenization import (
    SPECIAL_TOKENS,
    build_tokenizer,
    encode_texts,
    tokenizer_fingerprint,
    word_level_tokenizer,
)

CORPUS = ["The cat sat.", "the dog, the Cat!", ("zebra apple", "banana"), "apple"]
# counts: the 3, cat 2, apple 2; then once each, in code-point order: ! , . banana dog sat zebra
EXPECTED_VOCAB = list(SPECIAL_TOKENS) + ["the", "apple", "cat", "!", ",", ".", "banana", "dog", "sat", "zebra"]


def vocab_in_order(tokenizer) -> list[str]:
    vocab = tokenizer.get_vocab()
    return sorted(vocab, key=vocab.get)


def test_word_level_vocabulary_is_specials_then_frequency_then_alphabet():
    tokenizer = build_tokenizer("toy-bert-xs", corpus=CORPUS)
    assert vocab_in_order(tokenizer) == EXPECTED_VOCAB
    assert len(tokenizer) == len(EXPECTED_VOCAB)
    capped = word_level_tokenizer(CORPUS, max_vocab_size=8)
    assert vocab_in_order(capped) == EXPECTED_VOCAB[:8]


def test_word_level_tokenizer_is_deterministic_in_the_corpus_order():
    shuffled = list(CORPUS)
    random.Random(3).shuffle(shuffled)
    first, second = word_level_tokenizer(CORPUS), word_level_tokenizer(shuffled)
    assert first.get_vocab() == second.get_vocab()
    assert tokenizer_fingerprint(first) == tokenizer_fingerprint(second)
    assert tokenizer_fingerprint(first) != tokenizer_fingerprint(word_level_tokenizer(CORPUS + ["dog dog dog"]))


def test_word_level_tokenizer_lowercases_and_splits_punctuation():
    tokenizer = word_level_tokenizer(CORPUS)
    assert tokenizer.tokenize("Cät, THE\tdog!") == ["cat", ",", "the", "dog", "!"]
    assert tokenizer.convert_tokens_to_ids(tokenizer.tokenize("the unicorn")) == [5, 1]  # [UNK] = 1


def test_encode_single_texts_pads_and_truncates():
    tokenizer = word_level_tokenizer(CORPUS)
    encoded = encode_texts(tokenizer, ["The cat", "the cat sat the dog the apple"], max_length=6)
    assert set(encoded) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(t.dtype == torch.int64 and t.shape == (2, 6) for t in encoded.values())
    # [CLS]=2 the=5 cat=7 [SEP]=3 [PAD]=0
    assert encoded["input_ids"].tolist() == [[2, 5, 7, 3, 0, 0], [2, 5, 7, 13, 5, 3]]
    assert encoded["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert encoded["token_type_ids"].tolist() == [[0] * 6, [0] * 6]


def test_encode_pairs_marks_segments_and_truncates_the_longer_one():
    tokenizer = word_level_tokenizer(CORPUS)
    encoded = encode_texts(tokenizer, [("the cat", "a dog"), ("the cat sat the dog", "apple")], max_length=8)
    # [CLS] the cat [SEP] [UNK] dog [SEP] [PAD]
    assert encoded["input_ids"][0].tolist() == [2, 5, 7, 3, 1, 12, 3, 0]
    assert encoded["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    assert encoded["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 1, 1, 0]
    # longest first: 5 + 1 words for 8 - 3 places; the first segment loses "dog", the second keeps "apple"
    assert encoded["input_ids"][1].tolist() == [2, 5, 7, 13, 5, 3, 6, 3]
    assert encoded["token_type_ids"][1].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    with pytest.raises(GroupsweepError, match="all be strings or all be"):
        encode_texts(tokenizer, ["the cat", ("a", "b")], max_length=8)


def test_encode_cache_hits_return_identical_arrays_without_tokenizing(tmp_path, monkeypatch):
    tokenizer = word_level_tokenizer(CORPUS)
    texts = [("the cat", "sat"), ("apple", "the dog")]
    first = encode_texts(tokenizer, texts, 8, cache_dir=tmp_path)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("tokens-") and files[0].suffix == ".npy"
    assert np.load(files[0]).shape == (3, 2, 8)

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again")

    with monkeypatch.context() as patch:
        patch.setattr(type(tokenizer), "__call__", refuse)
        again = encode_texts(tokenizer, texts, 8, cache_dir=tmp_path)
        rebuilt = encode_texts(word_level_tokenizer(list(reversed(CORPUS))), texts, 8, cache_dir=tmp_path)
    for key in first:
        assert torch.equal(first[key], again[key]) and torch.equal(first[key], rebuilt[key])
    assert sorted(tmp_path.iterdir()) == files

    encode_texts(tokenizer, texts, 9, cache_dir=tmp_path)
    encode_texts(tokenizer, texts[:1], 8, cache_dir=tmp_path)
    encode_texts(word_level_tokenizer(CORPUS, max_vocab_size=8), texts, 8, cache_dir=tmp_path)
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 4 and all(n.startswith("tokens-") and n.endswith(".npy") for n in names)


def test_a_cache_folder_that_cannot_be_written_costs_a_warning_not_the_encoding(tmp_path):
    tokenizer = word_level_tokenizer(CORPUS)
    (tmp_path / "a-file").write_text("")  # a folder cannot be made under a file, even by root
    with pytest.warns(UserWarning, match=r"token ids not cached in .*a-file.*GROUPSWEEP_CACHE"):
        encoded = encode_texts(tokenizer, ["the cat"], 8, cache_dir=tmp_path / "a-file" / "cache")
    assert torch.equal(encoded["input_ids"], encode_texts(tokenizer, ["the cat"], 8)["input_ids"])


def test_toy_tokenizer_feeds_a_toy_bert():
    tokenizer = build_tokenizer("toy-bert-s", corpus=CORPUS)
    model = build_model("toy-bert-s", 2, vocab_size=len(tokenizer)).eval()
    encoded = encode_texts(tokenizer, [("the cat", "sat"), ("zebra", "unknown words")], 10)
    with torch.no_grad():
        assert model(encoded).shape == (2, 2)


def test_tokenizer_errors_are_one_line(hub_cache, no_network):
    with pytest.raises(GroupsweepError, match="image model"):
        build_tokenizer("resnet18")
    with pytest.raises(GroupsweepError, match="pass corpus="):
        build_tokenizer("toy-bert-xs")
    with pytest.raises(GroupsweepError, match="leaves no room"):
        word_level_tokenizer(CORPUS, max_vocab_size=5)
    start = time.perf_counter()
    with pytest.raises(GroupsweepError) as error:
        build_tokenizer("bert-small")
    assert time.perf_counter() - start < 3
    message = str(error.value)
    assert "\n" not in message
    assert "tokenizer files of model 'bert-small'" in message
    assert "hf download google/bert_uncased_L-4_H-512_A-8" in message and "model_path" in message


def test_pretrained_tokenizer_from_model_path_offline(no_network):
    tokenizer = build_tokenizer("minilm-l6", model_path=minilm_dir())
    assert len(tokenizer) == 30522
    encoded = encode_texts(tokenizer, [("Hello world!", "second one")], 12)
    assert encoded["input_ids"][0].tolist() == [101, 7592, 2088, 999, 102, 2117, 2028, 102, 0, 0, 0, 0]
    assert encoded["token_type_ids"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    model = build_model("minilm-l6", 2, model_path=minilm_dir(), vocab_size=len(tokenizer)).eval()
    with torch.no_grad():
        assert model.features(encoded).shape == (1, 384)


def test_pretrained_tokenizer_from_the_local_cache(hub_cache, no_network):
    """A Turc et al. repository holds vocab.txt and config.json (no tokenizer.json)."""
    from transformers import BertConfig

    snapshot = fake_hub_snapshot(hub_cache, "google/bert_uncased_L-2_H-128_A-2")
    BertConfig(**{"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2}).save_pretrained(snapshot)
    (snapshot / "vocab.txt").write_text("\n".join(list(SPECIAL_TOKENS) + ["hello", "world", "!"]) + "\n")
    tokenizer = build_tokenizer("bert-tiny")
    assert tokenizer("Hello WORLD! Zebra")["input_ids"] == [2, 5, 6, 7, 1, 3]
