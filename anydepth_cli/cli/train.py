"""`anydepth train`: fine-tune a head on a frozen encoder, on one device or under torchrun / srun."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from anydepth_cli.errors import UsageError

DEFAULT_OUTPUT = Path("anydepth-run")
DATA = "Data"
MODEL = "Model"
OPTIM = "Optimisation"
RUN = "Running"


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def train(
    ctx: typer.Context,
    data: Annotated[Optional[list[Path]], typer.Argument(help="Training data, several at once: a folder (image/ + depth/ [+ mask/], or NAME.jpg beside NAME_depth.png) or a list file of `RGB DEPTH [MASK]` lines (whitespace- or comma-separated); or DATASET:PATH, a list file or folder of hypersim, vkitti, irs, blendedmvs or tartanair, read as that dataset defines its depth. Optional with --resume.", metavar="[DATASET:]PATH", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder: arch.json, model.pth, last.pth, metrics.csv, loss.png. \\[default: anydepth-run, or the --resume folder]", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Start from this registry model. \\[default: anydepth-dav2-vitb]", show_default=False, rich_help_panel=MODEL)] = None,
    arch: Annotated[Optional[Path], typer.Option(help="JSON architecture to train (with --checkpoint or --encoder-weights).", rich_help_panel=MODEL)] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Start from these weights (.pth/.safetensors in any layout we load, or hf://ORG/REPO/FILE).", rich_help_panel=MODEL)] = None,
    encoder_weights: Annotated[Optional[str], typer.Option(help="The encoder of a freshly initialised head: a plain DINOv2/DINOv3 backbone state dict, or VGGT's whole model.pt (its aggregator.* part) for an --arch with encoder vggt; a file or hf://ORG/REPO/FILE.", metavar="FILE", rich_help_panel=MODEL)] = None,
    encoder: Annotated[Optional[str], typer.Option(help="Train a fresh head on this published encoder (vggt-1b: VGGT-1B's aggregator, downloaded from the Hub), in its registry architecture.", rich_help_panel=MODEL)] = None,
    target: Annotated[Optional[str], typer.Option(help="What the head learns: depth (ReLU + 0.001 output, as the AnyDepth code), disparity (ReLU), or metric: depth in metres, a head ending in sigmoid × --max-depth trained with Depth Anything V2's SiLog loss (λ 0.5) on sources that give metres. \\[default: depth, or the resumed run's]", show_default=False, rich_help_panel=MODEL)] = None,
    batchnorm: Annotated[Optional[str], typer.Option(help="The head's BatchNorms: train (batch statistics of the global batch, synchronised across processes, running averages updated) or frozen (stored statistics). \\[default: train for a fresh head, frozen for a checkpoint]", show_default=False, rich_help_panel=MODEL)] = None,
    val: Annotated[Optional[list[Path]], typer.Option(help="Validation data, given as the training data is (a folder, a list file or DATASET:PATH; repeat for several): AbsRel and δ1 as `anydepth eval` computes them.", rich_help_panel=DATA)] = None,
    val_every: Annotated[int, typer.Option(help="Validate (and save) every N steps, and at the end.", rich_help_panel=DATA)] = 1000,
    data_root: Annotated[Optional[list[str]], typer.Option(help="Folder that list files' relative paths resolve against, and that replaces the leading folder of absolute paths not on this machine (the published lists'). NAME=DIR for one dataset's lists; repeat for several.", metavar="[NAME=]DIR", show_default=False, rich_help_panel=DATA)] = None,
    mix: Annotated[Optional[str], typer.Option(help="Probability of drawing each dataset, e.g. hypersim=0.9,vkitti=0.1 (normalised). \\[default: in proportion to their sizes]", metavar="NAME=WEIGHT,...", show_default=False, rich_help_panel=DATA)] = None,
    max_depth: Annotated[Optional[str], typer.Option(help="Depth caps in metres replacing the datasets' own (vkitti 80 m; the others none), e.g. vkitti=120,tartanair=500; inf for none. A bare METRES caps every dataset not named, and with --target metric is the head's range (required).", metavar="[METRES,]NAME=METRES,...", show_default=False, rich_help_panel=DATA)] = None,
    keep: Annotated[Optional[float], typer.Option(help="Train only on the samples `anydepth score --keep FRACTION` keeps (DDS and GCS of the ground truth), within each source.", metavar="FRACTION", rich_help_panel=DATA)] = None,
    depth_scale: Annotated[float, typer.Option(help="Divisor from 16-bit PNG depth values to depth, for generic data.", rich_help_panel=DATA)] = 1000.0,
    input_size: Annotated[Optional[int], typer.Option(help="Side of the square training crops (a multiple of the patch size). \\[default: 518, 512 for DINOv3]", show_default=False, rich_help_panel=DATA)] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps to train (the smaller of --steps and --epochs when both are given).", show_default=False, rich_help_panel=OPTIM)] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the data to train.", show_default=False, rich_help_panel=OPTIM)] = None,
    batch_size: Annotated[int, typer.Option(help="Images per process per micro-batch (the global batch is this × --grad-accum × processes).", rich_help_panel=OPTIM)] = 4,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.", rich_help_panel=OPTIM)] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the head (AdamW).", rich_help_panel=OPTIM)] = 1e-4,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (not on biases and norms).", rich_help_panel=OPTIM)] = 0.01,
    warmup: Annotated[Optional[int], typer.Option(help="Steps of linear warmup before the cosine decay. \\[default: 5 % of the steps]", show_default=False, rich_help_panel=OPTIM)] = None,
    clip_grad: Annotated[float, typer.Option(help="Gradient-norm clipping.", rich_help_panel=OPTIM)] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the head's initialisation, the data order and the augmentation.", rich_help_panel=OPTIM)] = 0,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder from its last.pth.", show_default=False, rich_help_panel=RUN)] = None,
    save_every: Annotated[int, typer.Option(help="Write model.pth and last.pth every N steps.", rich_help_panel=RUN)] = 500,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16, fp16 or fp64 (auto: bf16 autocast on GPUs, fp32 on the CPU; fp64: a reference mode for checks).", rich_help_panel=RUN)] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps (under torchrun each process takes its local GPU).", rich_help_panel=RUN)] = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Data-loading processes per training process. \\[default: up to 4]", show_default=False, rich_help_panel=RUN)] = None,
) -> None:
    """Train a depth head on a frozen encoder: SDT (or DPT) from a registry model, your checkpoint, or a backbone.

    `--resume RUN` continues with the run's own data and settings; options given again override them.

    The loss regresses the output onto the target normalised per image to [0, 1] (2nd to 98th percentile, in the target space), plus multi-scale gradient matching: the output's sign and scale are fixed, the ground truth's scale and shift do not matter. Under `torchrun --nproc-per-node N` or `srun` it runs data-parallel; only rank 0 writes and prints.

    Exit status: 0 trained, 1 stopped (a dead start, with nothing written; a non-finite loss or out of memory, with the last good checkpoint kept), 2 usage error.
    """
    from anydepth_cli.training.options import RESUMED, TrainOptions

    if resume is not None and output is not None and output.resolve() != resume.resolve():
        raise UsageError("--resume continues a run in its own folder: drop -o or give the same folder")
    options = TrainOptions(
        data=tuple(data or ()), output=resume or output or DEFAULT_OUTPUT, model=model, arch=arch, checkpoint=checkpoint,
        encoder_weights=encoder_weights, encoder=encoder, target=target, val=tuple(val or ()), val_every=val_every, steps=steps,
        epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, lr=lr, weight_decay=weight_decay, warmup=warmup,
        input_size=input_size, precision=precision, device=device,
        workers=min(4, os.cpu_count() or 1) if workers is None else workers, seed=seed, keep=keep,
        resume=resume is not None, depth_scale=depth_scale, save_every=save_every, clip_grad=clip_grad,
        data_root=tuple(Path(root) for root in data_root or ()), mix=mix, max_depth=max_depth, batchnorm=batchnorm,
        explicit=frozenset(name for name in RESUMED if _given(ctx, name)),
    )
    options.check()
    from anydepth_cli.cli.progress import TrainProgress, print_train_summary
    from anydepth_cli.io.writers import prepare_output_dir
    from anydepth_cli.training.distributed import world_from_env
    from anydepth_cli.training.loop import train as run_training

    if world_from_env().main:
        prepare_output_dir(options.output)
    summary = run_training(options, TrainProgress())
    if world_from_env().main:
        print_train_summary(summary)
