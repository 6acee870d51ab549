"""The training pipeline: reading the corpus, its validation split and token cache, batching and augmentation."""
