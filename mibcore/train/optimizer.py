"""The optimizer of a training: fused Adam, with its own learning rate for a text backbone."""
import torch


def make_optimizer(config, model):
    """Adam; a text backbone's parameters get their own (smaller) learning rate."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("text_backbone.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("text_backbone.")]
    groups = [{"params": rest}] + ([{"params": backbone, "lr": config.backbone_lr}] if backbone else [])
    return adam(groups, lr=config.lr, weight_decay=config.weight_decay, capturable=config.cuda_graphs)


def adam(params, lr, weight_decay=0.0, capturable=False):
    """torch's Adam in its fused implementation (one kernel over all parameters): the optimizer is
    a large part of a tensor-fusion training step (6.6M weights in the TFN Linear), and the fused
    update is several times faster than the default (the benchmark suite's profiler breakdown,
    `python -m benchmarks`, compares them). The same update rule; its rounding differs in the
    last bits. `capturable`: its step counts on the device, so that a CUDA graph can capture the
    update (--cuda-graphs)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True, capturable=capturable)
