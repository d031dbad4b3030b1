"""Group datasets: the shared interface, the embedded benchmarks and the real-data loaders.

Importing this package registers every dataset; use ``load_dataset(name, **options)``.
"""

from trainables.data.base import (  # noqa: F401
    DATASETS,
    SPLITS,
    GroupDataset,
    Split,
    check_dataset_options,
    dataset_options,
    load_dataset,
    reads_files,
    register_dataset,
)
# Modules below register their datasets on import.
from trainables.data import synthetic_images, synthetic_text  # noqa: E402,F401
from trainables.data import celeba, civilcomments, custom, multinli, waterbirds  # noqa: E402,F401
