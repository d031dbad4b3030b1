"""The model registry: every model a sweep can train, built as a ``GroupModel``.

Importing this package registers every entry (``timm_family``: ConvNeXt-V2, ResNet and their toy
ladders; ``bert_family``: BERT sizes, MiniLM-L6 and the toy BERT ladder). Use
``build_model(name, num_classes, pretrained=..., model_path=..., vocab_size=...)``.
"""

# Registration order is the listing order: image families first, then text.
from trainables.models import timm_family  # noqa: F401  isort: skip
from trainables.models import bert_family  # noqa: F401  isort: skip
from trainables.models.base import MODELS, GroupModel, LocalPackage, ModelSpec, get_spec, register_model  # noqa: F401
from trainables.models.build import build_model, parameter_count  # noqa: F401
from trainables.models.hub import weights_available, weights_origin  # noqa: F401
