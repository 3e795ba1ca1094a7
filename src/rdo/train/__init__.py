"""`rdo align`: the policy's training, its Trainer, reference log-probs and resume checks."""
