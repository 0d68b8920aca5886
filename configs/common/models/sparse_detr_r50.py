"""Base model: Sparse DETR, ResNet-50, rho = 0.1 (paper / official ``r50_sparse_detr_rho_0.1.sh``).

Deformable DETR+ (two-stage, box refinement, Efficient-DETR query init) with 6 + 6 layers, 300 queries
and the DAM scorer: the defaults of ``sparse_detr_graph`` (the one description of the model graph, shared
with the yacs keys). Variants change a few fields, e.g. ``model.token_scorer.keep_ratio = 0.2``,
``model.token_scorer = None`` (dense baseline) or ``model.encoder.num_layers = 12``; dimensions, level
counts, the heads' sites and the class count follow ``model.neck``, ``model.encoder`` / ``model.decoder``
and ``model.heads.num_classes`` by interpolation. ``model.backbone`` sets how the backbone runs
(``channels_last``, ``dtype``: :func:`~sparse_detr.modeling.backbone.precision.set_backbone_execution`); the
ResNet it runs is ``model.backbone.module.module`` (inside the FrozenBN folding).
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from sparse_detr.modeling.backbone.frozen_bn import fold_frozen_batchnorm
from sparse_detr.modeling.meta_arch import sparse_detr_graph

model = sparse_detr_graph(
    # FrozenBN folded into the convs: the same function with one pass less over every activation map
    backbone=L(fold_frozen_batchnorm)(
        module=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            # torchvision-style bottlenecks (stride in the 3x3 conv), as the official torchvision ResNet-50
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,  # stem + res2 frozen, like the official conv1 + layer1
        )
    ),
    in_channels=[512, 1024, 2048],
    channels_last=True,  # backbone + neck on NHWC maps (faster convolutions)
)
