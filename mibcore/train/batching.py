"""The batches of an epoch: a shuffle that a resumed run repeats, split across DDP processes."""
import torch


def epoch_batches(config, n_samples, epoch, rank, world):
    """This process's index batches for one epoch.

    The shuffle comes from a generator seeded by (seed, epoch), not from the global RNG, so a
    resumed run shuffles as an uninterrupted one; under DDP each process takes its slice of
    every global batch."""
    generator = torch.Generator().manual_seed((config.seed * 100003 + epoch) % 2**64)  # (seeds up to 2^63)
    order = torch.randperm(n_samples, generator=generator)
    batches = [order[i : i + config.batch_size] for i in range(0, n_samples, config.batch_size)]
    if world == 1:
        return batches
    per_rank = max(config.batch_size // world, 1)
    return [batch[rank * per_rank : (rank + 1) * per_rank] for batch in batches]
