"""A tiny Sparse DETR on the tiny synthetic shapes sets: end-to-end tests of train_net.py in seconds."""
from detectron2.config import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../../configs/quickstart_shapes.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train")
)

model.neck.hidden_dim = 32
model.encoder.num_heads = 4
model.encoder.ffn_dim = 64
model.decoder.num_layers = 2
model.decoder.num_heads = 4
model.decoder.ffn_dim = 64
model.query_init.num_queries = 20
model.encoder.dropout = 0.1  # randomness in training: resume must reproduce it
model.decoder.dropout = 0.1

dataloader.train.dataset.names = "shapes_tiny_train"
dataloader.train.mapper.augmentations.min_sizes = [80, 96]
dataloader.train.mapper.augmentations.max_size = 128
dataloader.train.mapper.augmentations.crop_resize_sizes = [80, 96]
dataloader.train.mapper.augmentations.crop_size = [64, 96]
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "shapes_tiny_val"
dataloader.test.mapper.augmentations.min_size = 96
dataloader.test.mapper.augmentations.max_size = 128
dataloader.test.num_workers = 0

train.max_iter = 4
train.checkpointer.period = 2
train.log_period = 1
train.output_dir = "./output/tiny_shapes"
