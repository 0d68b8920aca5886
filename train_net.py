#!/usr/bin/env python
"""Train or evaluate Sparse DETR (or any LazyConfig model of this repository) with Detectron2.

    python train_net.py --config-file configs/quickstart_shapes.py
    python train_net.py --config-file configs/sparse_detr_r50_rho0.1_50ep.py --num-gpus 8
    python train_net.py --config-file CONFIG --eval-only train.init_checkpoint=output/x/model_final.pth
    python train_net.py --config-file CONFIG --resume           # continue from output_dir/last_checkpoint
    python train_net.py --config-file CONFIG train.device=cpu train.max_iter=100 \
        dataloader.train.total_batch_size=4

``key=value`` overrides must name existing config keys (or arguments of the object a LazyCall node builds);
``+key=value`` adds a new key on purpose. Multi-process training uses Detectron2's ``launch`` (DDP: NCCL on
GPUs, gloo on CPU); ``--num-machines/--machine-rank/--dist-url`` scale it out.

The config provides ``model``, ``dataloader.{train,test,evaluator}``, ``optimizer``, ``lr_multiplier`` and
``train`` (see ``configs/common/train.py``); optional ``datasets.coco_json`` registers COCO-format json files
(see ``sparse_detr.data.catalog``). Besides Detectron2's checkpoints, logs, ``metrics.json`` and TensorBoard
events, ``output_dir`` receives ``final_metrics.json`` with the results of the last evaluation.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys

import torch
import torch.distributed as dist
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

import _prefer_installed_sparse_detr  # noqa: F401  (before sparse_detr: see that module)
import sparse_detr.modeling  # noqa: F401  (registers the model components)
from sparse_detr.config.safe_yaml import check_config_file
from sparse_detr.config.validation import (
    check_command_line_overrides,
    lazy_target_accepts,
    validate_config,
)
from sparse_detr.data import catalog  # (importing sparse_detr.data registers the synthetic shapes sets)
from sparse_detr.engine.checkpoint import (
    AtomicDetectionCheckpointer,
    PersistentPeriodicCheckpointer,
    SafeDetectionCheckpointer,
    set_aside_diverged_checkpoint,
)
from sparse_detr.engine.loss_guard import FiniteLossGuard, NonFiniteLossError
from sparse_detr.engine.output_lock import OutputDirectoryLock
from sparse_detr.engine.seeding import IterationSeeding
from sparse_detr.evaluation.size_groups import SameSizeBatches
from sparse_detr.utils.cli import run_tool, setup_tool_logger
from sparse_detr.utils.files import atomic_write, refuse_overwriting_inputs

logger = logging.getLogger("sparse_detr.train_net")


# ----------------------------------------------------------------------------------------------------------
# Config checks
# ----------------------------------------------------------------------------------------------------------
def _dataset_names(loader_cfg) -> list[str]:
    names = OmegaConf.select(loader_cfg, "dataset.names", default=None)
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def _uses_dataset_node(loader_cfg) -> bool:
    """Whether the loader's dataset is the project's node (:func:`sparse_detr.data.detection_dataset_dicts`),
    which takes the dicts :func:`check_datasets` loaded."""
    target = OmegaConf.select(loader_cfg, "dataset._target_", default=None)
    return (locate(target) if isinstance(target, str) else target) is catalog.detection_dataset_dicts


def check_datasets(
    cfg,
    contents_of: tuple[str, ...] = (),
    splits: tuple[str, ...] = ("train", "test"),
    loaded_next: str | None = None,
) -> None:
    """Register ``datasets.coco_json`` entries and check every dataset name the ``splits``' loaders use.

    For the splits in ``contents_of`` the datasets are also loaded and checked (a broken annotation file
    named, dropped boxes counted, duplicate category ids, categories against ``model.heads.num_classes``, a
    training set without boxes) before the model is built (the project's dataset node,
    :func:`sparse_detr.data.detection_dataset_dicts`, checks them again when the loader is built, which is
    what other trainers rely on; the ``loaded_next`` split's loader takes the dicts loaded here instead of
    reading its files again). ``--eval-only`` checks the test split only: the training annotations need
    not be installed to evaluate.
    """
    catalog.register_config_datasets(cfg)
    num_classes = OmegaConf.select(cfg, "model.heads.num_classes", default=None)
    for split in splits:
        if split in cfg.dataloader:
            names = _dataset_names(cfg.dataloader[split])
            catalog.check_dataset_names(names, f"dataloader.{split}.dataset.names")
            if split in contents_of:
                key = f"dataloader.{split}.dataset.names"
                training = split == "train"
                keep = split == loaded_next and _uses_dataset_node(cfg.dataloader[split])
                catalog.check_datasets_ahead(names, key, num_classes, training=training, keep=keep)


def resolve_device(cfg) -> torch.device:
    device = torch.device(cfg.train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but no CUDA device is available; use train.device=cpu")
    if cfg.train.amp.enabled and device.type != "cuda":
        raise ValueError("train.amp.enabled=True needs train.device='cuda' (AMP training runs on GPUs only)")
    if device.type == "cuda":
        device = torch.device("cuda", comm.get_local_rank())
    return device


# ----------------------------------------------------------------------------------------------------------
# Evaluation and training
# ----------------------------------------------------------------------------------------------------------
def do_test(cfg, model) -> dict:
    """Evaluate ``model`` on ``dataloader.test`` with ``dataloader.evaluator``; returns the result dict."""
    if "evaluator" not in cfg.dataloader:
        return {}
    test_loader = instantiate(cfg.dataloader.test)  # first: loading a dataset may generate its files
    evaluator = instantiate(cfg.dataloader.evaluator)
    # an image's detections must not depend on its neighbours: no padding across image sizes
    results = inference_on_dataset(SameSizeBatches(model), test_loader, evaluator)
    if comm.is_main_process():
        print_csv_format(results)
    return results


def write_final_metrics(cfg, results: dict) -> None:
    if comm.is_main_process() and results:
        path = os.path.join(cfg.train.output_dir, "final_metrics.json")
        atomic_write(path, json.dumps(results, indent=2).encode())
        logger.info(f"Final metrics written to {path}")


def build_train_loader(cfg, start_iter: int):
    loader_cfg = cfg.dataloader.train
    if lazy_target_accepts(loader_cfg, "start_iter"):
        loader_cfg.start_iter = start_iter
    elif start_iter > 0:
        logger.warning("dataloader.train cannot start at a given iteration: a resumed run sees other batches")
    return instantiate(loader_cfg)


def build_writers(cfg) -> list:
    """Console (20-iteration medians, ETA); ``metrics.json`` and TensorBoard (raw values of the iteration)."""
    output_dir = cfg.train.output_dir
    return [
        CommonMetricPrinter(cfg.train.max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json"), window_size=1),
        TensorboardXWriter(output_dir, window_size=1),
    ]


def do_train(args, cfg) -> dict:
    device = resolve_device(cfg)
    model = instantiate(cfg.model).to(device)
    logger.info(f"Model:\n{model}")

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)

    ddp_kwargs = dict(cfg.train.ddp)
    if device.type == "cpu":
        ddp_kwargs["device_ids"] = None  # DDP over CPU modules takes no device ids
    ddp_model = create_ddp_model(model, **ddp_kwargs)
    trainer_class = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
    guard = FiniteLossGuard(ddp_model)
    trainer = trainer_class(guard, None, optimizer)
    checkpointer = AtomicDetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)

    final_results: dict = {}

    def evaluate():
        final_results.clear()
        final_results.update(do_test(cfg, model))
        return final_results

    # gradient clipping is in the optimizer (ClippedAdamW), the token statistics in the evaluator, as under
    # any Detectron2 trainer; the per-iteration seeding (exact resume) is this trainer's, and goes first
    is_main = comm.is_main_process()
    seed = cfg.train.get("seed", -1)  # negative: not seeded, as Detectron2's default_setup
    trainer.register_hooks(
        [
            IterationSeeding(seed) if seed >= 0 else None,
            hooks.IterationTimer(),
            guard.hook(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            PersistentPeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if is_main else None,
            hooks.EvalHook(cfg.train.eval_period, evaluate),
            hooks.PeriodicWriter(build_writers(cfg), period=cfg.train.log_period) if is_main else None,
        ]
    )

    # from train.init_checkpoint: what fits is loaded, the rest logged; --resume: strict
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # the checkpoint stores the iteration that just finished
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    if start_iter > cfg.train.max_iter:
        raise ValueError(
            f"--resume: {checkpointer.get_checkpoint_file()} was saved after iteration {trainer.iter} "
            f"({start_iter} iterations done), but train.max_iter={cfg.train.max_iter} is below that: there "
            f"is nothing to train. Set train.max_iter above {start_iter} to train on, or another "
            "train.output_dir to start over"
        )
    trainer.reset_data_loader(lambda: build_train_loader(cfg, start_iter))
    try:
        trainer.train(start_iter, cfg.train.max_iter)
    except NonFiniteLossError as error:
        if is_main and error.iteration is not None:
            set_aside_diverged_checkpoint(checkpointer, error.iteration)
        raise
    return final_results


def do_eval_only(cfg) -> dict:
    device = resolve_device(cfg)
    model = instantiate(cfg.model).to(device)  # validate_config(eval_only=True) required the weights
    SafeDetectionCheckpointer(model, strict=True).load(cfg.train.init_checkpoint)
    return do_test(cfg, model)


def refuse_overwriting_training_inputs(cfg, args) -> None:
    """The output directory's files must not be the run's inputs (its config, its initial weights)."""
    output_dir = cfg.train.output_dir
    outputs = {f"train.output_dir's {name}": os.path.join(output_dir, name)
               for name in ("config.yaml", "log.txt", "final_metrics.json", "metrics.json")}
    if not args.eval_only:
        outputs["train.output_dir's model_final.pth"] = os.path.join(output_dir, "model_final.pth")
    refuse_overwriting_inputs(
        outputs, {"--config-file": args.config_file, "train.init_checkpoint": cfg.train.init_checkpoint}
    )


def main(args) -> dict:
    check_config_file(args.config_file)
    cfg = LazyConfig.load(args.config_file)
    check_command_line_overrides(cfg, args.opts, "train_net.py --config-file CONFIG [options]")
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    validate_config(cfg, eval_only=args.eval_only, world_size=comm.get_world_size())
    refuse_overwriting_training_inputs(cfg, args)
    splits = ("test",) if args.eval_only else ("train", "test")
    # the loader built first (the training loader, or the test loader of --eval-only) reuses what is loaded
    check_datasets(cfg, contents_of=splits, splits=splits, loaded_next=splits[0])
    # one run per output directory (before default_setup writes config.yaml and log.txt there); only the
    # main process writes files, so only it locks
    with OutputDirectoryLock(cfg.train.output_dir) if comm.is_main_process() else contextlib.nullcontext():
        default_setup(cfg, args)
        # default_setup sets up Detectron2's and fvcore's loggers; the project's go to the console and log.txt
        setup_tool_logger(cfg.train.output_dir, distributed_rank=comm.get_rank())
        results = do_eval_only(cfg) if args.eval_only else do_train(args, cfg)
        write_final_metrics(cfg, results)
    if comm.get_world_size() > 1:
        # Leave the process group together: a process that exits while its peer still has gloo
        # connections open can make the peer abort.
        comm.synchronize()
        dist.destroy_process_group()
    return results


def invoke_main(argv: list[str] | None = None) -> None:
    def run(arguments: list[str]) -> None:
        args = default_argument_parser().parse_args(arguments)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )

    sys.exit(run_tool(run, argv, "train_net.py"))


if __name__ == "__main__":
    invoke_main()
