"""Training side of groupsweep: datasets, balancing, models, the finetuning loop and the Ray trainable."""
