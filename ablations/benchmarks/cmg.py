"""Time DCID's audio-video-text step and its video modules: ``python -m ablations.benchmarks.cmg``.

``--step`` (what ablations/bench.py's ``cmg`` section prints): one full training step of our
model at the original DCID's shapes (dcid_reference 1.1-1.2): batch 80, T = 10, video as VGG19
pool5 maps ``[80, 10, 7*7*512]`` through the CMG front end (``model.video_frontend=cmg``, width
2048), audio ``[80, 10, 128]``, text ``[80, 10, 768]``, D = 256, 400 codes, method DCID without
COMET (the original is DCID), 5 CLUB inner steps as the original. Text goes straight into its
encoder (the original first runs a 2-layer BiLSTM 768 -> 256, about 1 % of its parameters).

Without ``--step``: forward+backward of each video module alone.

Times ``CMGVideoSemantic``, ``CMGVideoSpecificEncoder`` and ``CMGVideoDecoder`` at DCID's shapes
(``[B, T, 7, 7, 512]`` maps, specific width 2048, code dimension 256; B = 80, T = 10 by default)
in each requested dtype. One timed repeat is a forward pass, the mean square of the outputs
and its backward (parameter gradients, plus input gradients for the decoder, whose inputs come from
trainable modules in training). Prints median / min / max seconds over the repeats, the thread
count and the 1-minute load average before and after, since CPU timings on a shared machine
are noisy. At full size on a few CPU threads one float64 encoder repeat takes minutes: use
``--batch 8`` for a quick look.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from comet_model.nn.cmg_video import CMGVideoDecoder, CMGVideoSemantic, CMGVideoSpecificEncoder
from comet_model.config import ExperimentConfig, preset

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MODULES = ("semantic", "encoder", "decoder")


def _case(
    name: str, batch: int, steps: int, width: int, dim: int, dtype: torch.dtype, seed: int
) -> tuple[nn.Module, Callable[[], Tensor]]:
    """The module ``name`` in ``dtype`` and a closure giving its scalar loss on fixed inputs."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if name == "decoder":
        module: nn.Module = CMGVideoDecoder(dim, width, 512).to(dtype)
        vq = torch.randn(batch, steps, dim, generator=g).to(dtype).requires_grad_(True)
        spec = torch.rand(batch, steps, 3, 3, width, generator=g).to(dtype).requires_grad_(True)
        return module, lambda: module(vq, spec).pow(2).mean()
    video = torch.rand(batch, steps, 7, 7, 512, generator=g).to(dtype)  # pool5 maps are >= 0
    if name == "semantic":
        module = CMGVideoSemantic(512, 7).to(dtype)
        return module, lambda: module(video).pow(2).mean()
    module = CMGVideoSpecificEncoder(512, width).to(dtype)
    encoder = module

    def loss() -> Tensor:  # both outputs, as in training (decoder path and CLUB path)
        spec, club = encoder(video)
        return spec.pow(2).mean() + club.pow(2).mean()

    return module, loss


def fwd_bwd_times(
    name: str,
    *,
    batch: int = 80,
    steps: int = 10,
    width: int = 2048,
    dim: int = 256,
    dtype: torch.dtype = torch.float32,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
) -> list[float]:
    """Seconds of ``repeats`` forward+backward passes of module ``name`` after ``warmup``."""
    if name not in MODULES:
        raise ValueError(f"unknown module {name!r} (known: {MODULES})")
    module, run = _case(name, batch, steps, width, dim, dtype, seed)
    times = []
    for i in range(warmup + repeats):
        module.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        run().backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


AVT_DIMS = {"audio": 128, "video": 7 * 7 * 512, "text": 768}  # the original's input widths


def avt_config(**overrides: object) -> ExperimentConfig:
    """The paper preset at the original's shapes: DCID, CMG video front end, 5 CLUB steps."""
    flat = {"comet": False, "method": "dcid", "model.video_frontend": "cmg"}
    flat |= {"club.inner_steps": 5, "train.batch_size": 80, "data.steps": 10}
    return preset("paper").override(flat | overrides)


def avt_step_times(
    *,
    dtype: torch.dtype = torch.float32,
    batch: int = 80,
    steps: int = 10,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    overrides: dict[str, object] | None = None,
) -> list[float]:
    """Seconds of ``repeats`` full training steps (forward, CLUB inner steps, backward, clip,
    Adam, MM-EMA, dead-code reset) of DCID at the original's audio-video-text shapes."""
    from comet_model.nn.model import CometModel
    from comet_model.continual.train import Trainer, loss_weights, train_step

    cfg = avt_config(**(overrides or {}))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dims = {m: d for m, d in AVT_DIMS.items() if m != "video"}
    dims["video"] = cfg.model.cmg_grid**2 * cfg.model.cmg_channels
    model = CometModel.from_config(cfg, dims).to(dtype)
    trainer = Trainer(model, cfg)
    weights = loss_weights(cfg, model)
    feats = {
        m: (torch.rand if m == "video" else torch.randn)(batch, steps, d, generator=g).to(dtype)
        for m, d in dims.items()
    }  # pool5 maps are >= 0
    model.train()
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        train_step(model, trainer, feats, None, cfg, generator=g, weights=weights)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    """Print forward+backward timing statistics per module and dtype."""
    parser = argparse.ArgumentParser(prog="python -m ablations.benchmarks.cmg", description=__doc__)
    parser.add_argument("--batch", type=int, default=80, help="batch size B (DCID: 80)")
    parser.add_argument("--steps", type=int, default=10, help="sequence length T (DCID: 10)")
    parser.add_argument("--width", type=int, default=2048, help="specific channels (DCID: 2048)")
    parser.add_argument("--dtypes", default="float32,float64", help="comma-separated dtypes")
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated modules")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repeats per case")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as found)")
    parser.add_argument(
        "--step", action="store_true", help="time the full AVT training step, not the modules"
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    bad = [d for d in dtypes if d not in DTYPES] + [m for m in modules if m not in MODULES]
    if bad or args.repeats < 1 or min(args.batch, args.steps, args.width) < 1:
        parser.error(f"unknown dtype/module {bad[0]!r}" if bad else "sizes must be >= 1")
    print(
        f"threads={torch.get_num_threads()} torch={torch.__version__} B={args.batch} "
        f"T={args.steps} width={args.width} repeats={args.repeats} warmup={args.warmup}"
    )
    if args.step:
        print(f"{'step':<9} {'dtype':<8} {'median s':>9} {'min s':>8} {'max s':>8} {'load1':>11}")
        for dtype in dtypes:
            load_before = os.getloadavg()[0]
            times = avt_step_times(
                dtype=DTYPES[dtype], batch=args.batch, steps=args.steps,
                repeats=args.repeats, warmup=args.warmup,
                overrides={"model.cmg_width": args.width},
            )  # fmt: skip
            load = f"{load_before:.2f}->{os.getloadavg()[0]:.2f}"
            print(
                f"{'avt':<9} {dtype:<8} {statistics.median(times):>9.3f} {min(times):>8.3f} "
                f"{max(times):>8.3f} {load:>11}",
                flush=True,
            )
        return 0
    print(f"{'module':<9} {'dtype':<8} {'median s':>9} {'min s':>8} {'max s':>8} {'load1':>11}")
    for dtype in dtypes:
        for name in modules:
            load_before = os.getloadavg()[0]
            times = fwd_bwd_times(
                name,
                batch=args.batch,
                steps=args.steps,
                width=args.width,
                dtype=DTYPES[dtype],
                repeats=args.repeats,
                warmup=args.warmup,
            )
            load = f"{load_before:.2f}->{os.getloadavg()[0]:.2f}"
            print(
                f"{name:<9} {dtype:<8} {statistics.median(times):>9.3f} {min(times):>8.3f} "
                f"{max(times):>8.3f} {load:>11}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
