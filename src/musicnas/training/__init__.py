"""Training a fixed network from scratch, augmentation, evaluation."""
