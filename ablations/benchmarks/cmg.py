"""Sections ``cmg`` and ``cmg_modules``: DCID at the original code's audio-video-text shapes.

``cmg``: one full training step of our model at the original DCID's shapes (dcid_reference
1.1-1.2): batch 80, T = 10, video as VGG19 pool5 maps ``[80, 10, 7*7*512]`` through the CMG front
end (``model.video_frontend=cmg``, width 2048), audio ``[80, 10, 128]``, text ``[80, 10, 768]``,
D = 256, 400 codes, method DCID without COMET (the original is DCID), 5 CLUB inner steps as the
original, in float32 and float64, against the original's float64 step (dcid_reference 5.3:
222.8 s median on this 2-core machine at 2 threads; the original code is not run here). Text goes
straight into its encoder (the original first runs a 2-layer BiLSTM 768 -> 256, about 1 % of its
parameters).

``cmg_modules``: forward + backward of each video module alone (``CMGVideoSemantic``,
``CMGVideoSpecificEncoder``, ``CMGVideoDecoder``) at the same shapes in float32: the mean square
of the outputs and its backward (parameter gradients, plus input gradients for the decoder,
whose inputs come from trainable modules in training).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from ablations.benchmarks.common import (
    num,
    peak_rss_mib,
    progress,
    reset_peak_rss,
    rss_mib,
    stat,
    table,
)
from ablations.benchmarks.step import count_flops, make_step, peak_matmul

__all__ = [
    "AVT_DIMS",
    "CONV_LAYOUTS",
    "MODULES",
    "ORIGINAL_STEP_S",
    "REFERENCE_F64_STEP_S",
    "avt_config",
    "avt_step",
    "avt_step_flops",
    "avt_step_times",
    "fwd_bwd_times",
    "section_cmg",
    "section_cmg_modules",
]

ORIGINAL_STEP_S = 222.8  # the original DCID's float64 step, B=80, 2 threads (dcid_reference 5.3)
# Our float64 step at the same shapes and threads on the machine the original was timed on (a
# 2-core AMD EPYC; daa40bc, README then: 187 s [186, 187]). On another machine, the original's
# step is estimated as ORIGINAL_STEP_S * (our float64 step here) / REFERENCE_F64_STEP_S: both
# are float64 convolution stacks of the same sizes, so they scale alike (an estimate, not a run).
REFERENCE_F64_STEP_S = 187.0
AVT_DIMS = {"audio": 128, "video": 7 * 7 * 512, "text": 768}  # the original's input widths
MODULES = ("semantic", "encoder", "decoder")
CONV_LAYOUTS = ("contiguous", "channels_last", "matmul", "auto")  # the layouts cmg_modules times


def avt_config(**overrides: object):
    """The paper preset at the original's shapes: DCID, CMG video front end, 5 CLUB steps."""
    from comet_model.config import preset

    flat = {"comet": False, "method": "dcid", "model.video_frontend": "cmg"}
    flat |= {"club.inner_steps": 5, "train.batch_size": 80, "data.steps": 10}
    return preset("paper").override(flat | overrides)


def avt_step(*, dtype=None, batch: int = 80, steps: int = 10, seed: int = 0,
             overrides: dict[str, object] | None = None):  # fmt: skip
    """One full training step (forward, CLUB inner steps, backward, clip, Adam, MM-EMA,
    dead-code reset) of DCID at the original's audio-video-text shapes per call."""
    import torch

    cfg = avt_config(**{"data.steps": steps, **(overrides or {})})
    dims = {m: d for m, d in AVT_DIMS.items() if m != "video"}
    dims["video"] = cfg.model.cmg_grid**2 * cfg.model.cmg_channels

    def draw(m: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        return (torch.rand if m == "video" else torch.randn)(*shape, generator=g)  # pool5 >= 0

    return make_step(cfg, dims=dims, dtype=dtype or torch.float32, seed=seed, batch=batch,
                     inputs=draw)  # fmt: skip


def avt_step_times(*, repeats: int = 3, warmup: int = 1, **kw: object) -> list[float]:
    """Seconds of ``repeats`` steps of :func:`avt_step` (keywords as there) after ``warmup``."""
    step = avt_step(**kw)  # type: ignore[arg-type]
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def avt_step_flops(**kw: object) -> int:
    """Matmul/convolution/attention FLOPs of one :func:`avt_step` (keywords as there)."""
    return count_flops(avt_step(**kw))  # type: ignore[arg-type]


def _case(name: str, batch: int, steps: int, width: int, dim: int, dtype, seed: int,
          layout: str = "auto"):  # fmt: skip
    """The module ``name`` in ``dtype`` and a closure giving its scalar loss on fixed inputs."""
    import torch

    from comet_model.nn.cmg_video import CMGVideoDecoder, CMGVideoSemantic, CMGVideoSpecificEncoder

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if name == "decoder":
        module = CMGVideoDecoder(dim, width, 512, layout=layout).to(dtype)
        vq = torch.randn(batch, steps, dim, generator=g).to(dtype).requires_grad_(True)
        spec = torch.rand(batch, steps, 3, 3, width, generator=g).to(dtype).requires_grad_(True)
        return module, lambda: module(vq, spec).pow(2).mean()
    video = torch.rand(batch, steps, 7, 7, 512, generator=g).to(dtype)  # pool5 maps are >= 0
    if name == "semantic":
        module = CMGVideoSemantic(512, 7).to(dtype)
        return module, lambda: module(video).pow(2).mean()
    encoder = CMGVideoSpecificEncoder(512, width, layout=layout).to(dtype)

    def loss() -> torch.Tensor:  # both outputs, as in training (decoder path and CLUB path)
        spec, club = encoder(video)
        return spec.pow(2).mean() + club.pow(2).mean()

    return encoder, loss


def fwd_bwd_times(
    name: str,
    *,
    batch: int = 80,
    steps: int = 10,
    width: int = 2048,
    dim: int = 256,
    dtype=None,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    layout: str = "auto",
) -> list[float]:
    """Seconds of ``repeats`` forward+backward passes of module ``name`` after ``warmup``
    (``layout``: the convolutions' layout of the encoder and decoder, see ``nn/cmg_video.py``)."""
    import torch

    if name not in MODULES:
        raise ValueError(f"unknown module {name!r} (known: {MODULES})")
    module, run = _case(name, batch, steps, width, dim, dtype or torch.float32, seed, layout)
    times = []
    for i in range(warmup + repeats):
        module.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        run().backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


#: The precisions of the cmg section: (label, model dtype, train.precision).
PRECISIONS = (("float32", "float32", "fp32"), ("bf16 autocast", "float32", "bf16"),
              ("float64", "float64", "fp32"))  # fmt: skip


def section_cmg(args: argparse.Namespace, repeats: int) -> None:
    """Our DCID step at the original's shapes in float32, bf16 (autocast) and float64 against
    the original's float64 step."""
    import torch

    threads = torch.get_num_threads()
    runs, medians, memory = [], {}, {}
    for name, dtype, precision in PRECISIONS:
        if dtype == "float64" and not args.cmg_float64:
            continue
        progress(f"cmg: {name}: 1 warm-up + {repeats} steps (minutes each at full size)")
        gc.collect()  # the previous precision's model and batches are gone before the reset
        peak_reset, before = reset_peak_rss(), rss_mib()
        times = avt_step_times(dtype=getattr(torch, dtype), repeats=repeats, warmup=1,
                               overrides={"train.precision": precision})  # fmt: skip
        memory[name] = (before, peak_rss_mib()) if peak_reset and before is not None else None
        medians[name] = statistics.median(times)
        runs.append((name, times))
        progress(f"cmg: {name}: {num(medians[name])} s")
    # the original's step on this machine, estimated through our float64 step (see the constants)
    estimate = None
    if "float64" in medians:
        estimate = ORIGINAL_STEP_S * medians["float64"] / REFERENCE_F64_STEP_S
    rows = []
    for name, times in runs:
        row = [name, stat(times), f"{ORIGINAL_STEP_S / medians[name]:.2f}x"]
        if estimate is not None:
            row.append(f"{estimate / medians[name]:.2f}x")
        mem = memory[name]  # (RSS before the set-up, peak over set-up and steps), MiB
        row += ["n/a", "n/a"] if mem is None else [f"{mem[1]:.0f}", f"{mem[1] - mem[0]:.0f}"]
        rows.append(row)
    print(
        f"one training step of DCID (no COMET) at the original's shapes: B=80, T=10, video "
        f"[80,10,7*7*512] through the CMG front end (width 2048), audio [80,10,128], text "
        f"[80,10,768] (no BiLSTM), D=256, 400 codes, 5 CLUB inner steps; {threads} threads; "
        f"after 1 warm-up step; n={repeats}. bf16: train.precision=bf16 (autocast; codebook and "
        f"losses in float32). Original: float64 only, 2 threads, {ORIGINAL_STEP_S} s, the median "
        f"of 5 steps measured on the 2-core machine of dcid_reference 5.3 (not rerun here; on "
        f"that machine our float64 step took {REFERENCE_F64_STEP_S:.0f} s)"
    )
    headers = ["precision", "our step s", f"{ORIGINAL_STEP_S} s / ours"]
    if estimate is not None:
        print(
            f"estimated original step on this machine: {ORIGINAL_STEP_S} x our float64 step "
            f"here / {REFERENCE_F64_STEP_S:.0f} = {num(estimate)} s (not a run)"
        )
        headers.append(f"estimate {num(estimate)} s / ours")
    print(
        "memory: peak resident set size of this process over each precision's set-up (model, "
        "Adam, 4 input batches) and steps (Linux VmHWM, reset before each precision; n/a "
        "where it cannot be reset), and that peak minus the resident size before the set-up"
    )
    headers += ["peak RSS MiB", "peak - before MiB"]
    table(headers, rows)
    ratio = medians["float32"] / medians["bf16 autocast"]
    speed = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
    print(f"bf16 / float32 step time: {1 / ratio:.2f} (bf16 {speed})")
    # how far the float32 step is from this machine's matmul rate, and what 10x would need
    progress("cmg: counting the float32 step's FLOPs (one more step) and the matmul rate")
    flops = avt_step_flops(dtype=torch.float32, overrides={"train.precision": "fp32"})
    size, rates = peak_matmul(3)
    peak = statistics.median(rates) * 1e9
    achieved = flops / medians["float32"]
    original = ORIGINAL_STEP_S if estimate is None else estimate
    print(
        f"FLOPs of the float32 step: {num(flops / 1e9)} GFLOP (matmul, convolution and "
        f"attention only), "
        f"{num(achieved / 1e9)} GFLOP/s = {100 * achieved / peak:.0f} % of this machine's dense "
        f"float32 matmul rate ({peak / 1e9:.1f} GFLOP/s at {size}x{size}, {threads} threads); "
        f"at that full rate the step would take {num(flops / peak)} s; 10x the original "
        f"({num(original)} s{'' if estimate is None else ', estimated'}) is {num(original / 10)} s"
    )


def section_cmg_modules(args: argparse.Namespace, repeats: int) -> None:
    """Forward + backward of each CMG video module alone, float32, at the original's shapes."""
    import torch

    rows = []
    for name in MODULES:
        for layout in ("auto",) if name == "semantic" else CONV_LAYOUTS:
            label = name if name == "semantic" else f"{name} ({layout})"
            progress(f"cmg_modules: {label}: 1 warm-up + {repeats} passes")
            times = fwd_bwd_times(name, dtype=torch.float32, repeats=repeats, warmup=1,
                                  layout=layout)  # fmt: skip
            rows.append([label, stat(times)])
    print(
        f"forward + backward of one CMG video module (B=80, T=10, 7x7x512 maps, specific width "
        f"2048, D=256), float32, {torch.get_num_threads()} threads, after 1 warm-up; n={repeats}; "
        f"the encoder and decoder in each convolution layout (nn/cmg_video.py; auto, the default, "
        f"mixes matmul and NCHW layers)"
    )
    table(("module", "fwd+bwd s"), rows)
