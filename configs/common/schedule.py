"""The paper's schedule: 50 epochs of COCO train2017 at 16 images per iteration, lr x 0.1 after epoch 40.

``epoch_step_schedule`` converts epochs to iterations (ceil(images / batch) per epoch). The milestones scale
with ``train.max_iter``: shortening a run with ``train.max_iter=N`` keeps the drop at 80 % of it.
"""
from sparse_detr.engine.schedule import COCO_TRAIN2017_IMAGES, epoch_step_schedule, iterations_per_epoch

TOTAL_BATCH_SIZE = 16
ITERATIONS_PER_EPOCH = iterations_per_epoch(COCO_TRAIN2017_IMAGES, TOTAL_BATCH_SIZE)
MAX_ITER_50EP, lr_multiplier = epoch_step_schedule(
    epochs=50, drop_epochs=[40], dataset_size=COCO_TRAIN2017_IMAGES, total_batch_size=TOTAL_BATCH_SIZE
)
