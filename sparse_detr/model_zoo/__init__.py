"""Model zoo: the configs of ``configs/`` by name, in the style of ``detectron2.model_zoo``.

    from sparse_detr import model_zoo
    cfg = model_zoo.get_config("sparse_detr_r50_rho0.1_50ep")        # LazyConfig
    cfg = model_zoo.get_config("sparse_detr_r50_rho0.1_50ep.yaml")   # its yacs twin (CfgNode)
    model = model_zoo.get("sparse_detr_r50_rho0.1_50ep")              # untrained nn.Module
    model = model_zoo.get("sparse_detr_r50_rho0.1_50ep", trained=True)   # the official trained model

Trained weights are the official release files, by name: ``sparse_detr://official/<stem>`` (e.g.
``sparse_detr://official/sparse_detr_r50_10``) works wherever Detectron2 reads weights; the file is
downloaded, converted and cached once (``official_weights``).
"""

from .model_zoo import get, get_checkpoint_url, get_config, list_configs

__all__ = ["get", "get_checkpoint_url", "get_config", "list_configs"]
