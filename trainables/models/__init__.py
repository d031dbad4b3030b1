"""The models a sweep can train.

``trainables.models.registry`` (re-exported here) names every model as data and imports no model library,
so importing this package costs no torch: the sweep driver checks model names with it. Building needs torch:
``trainables.models.build.build_model(name, num_classes, pretrained=..., model_path=..., vocab_size=...)``
returns a ``GroupModel`` (``trainables.models.base``) built by the entry's family module (``timm_family``,
``bert_family``).
"""

from trainables.models.hub import (  # noqa: F401
    check_weights_request,
    checkpoint_source,
    weights_available,
    weights_origin,
)
from trainables.models.registry import MODELS, LocalPackage, ModelSpec, get_spec, register_model  # noqa: F401
