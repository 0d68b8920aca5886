"""Training settings (Detectron2's LazyConfig ``train`` node, read by ``train_net.py`` and by Detectron2's
``tools/lazyconfig_train_net.py``; ``seed`` also seeds the sample order, and in ``train_net.py`` each
iteration's randomness). Gradient clipping is in the optimizer (``configs/common/optim.py``)."""
import torch

train = dict(
    output_dir="./output/sparse_detr",
    init_checkpoint="",
    max_iter=90000,  # set from the schedule by each config
    amp=dict(enabled=False),  # automatic mixed precision, CUDA only
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=3),
    eval_period=5000,
    log_period=20,
    device="cuda" if torch.cuda.is_available() else "cpu",
    seed=42,  # model init, sample order, augmentations; train_net.py: per-iteration RNG (exact resume)
)
