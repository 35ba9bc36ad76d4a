"""`python -m l2p.bench`: latent versus pixel cost per step, VAE decode, text encoding and peak memory.

For each image size (the model's native size, 1K, 2K, 4K, 8K and any size on the command line) one run
measures, side by side:

- "pixel": the L2P model at its own patch (16), one denoising step (one DiT + Detailer Head forward, batch 1,
  no CFG): median of `--steps` timed calls after `--warmup` untimed ones;
- "pixel_hr": the same DiT with the high-resolution patch (64 at 4K, 128 at 8K; see `l2p.bench.cases.hr_patch_size`)
  and a Detailer Head with the release's extra outer levels, where that patch applies;
- "source": the latent Z-Image DiT, one step, and the VAE decode of its latents;
- for every pipeline: text encoding time, FLOPs per step (counted with `torch.utils.flop_counter` on one real
  step, attention included) and the achieved rate as a fraction of this device's measured matmul peak, and the
  peak memory of a whole `--generation-steps` generation (text encoding, steps, decode), weights included:
  CUDA: `torch.cuda.max_memory_allocated`, reset per case; CPU: peak RSS of a fresh subprocess per case.

Before a case runs, an analytic estimate of its peak memory (parameters + activations) is compared with the
device's memory (CUDA: total; CPU: available RAM); a case that would not fit is recorded as "does not fit"
with the estimate instead of being run. On CPU a case whose predicted run time exceeds `--time-budget` is
skipped and listed as such (the prediction comes from the sizes already measured).

Two scales: `--scale tiny` loads the embedded tiny models (`--source`, `--pixel` folders) and runs on the CPU;
`--scale full` builds the default Z-Image and L2P configs with random weights (speed and memory do not depend
on weight values), the 16-channel FLUX-style VAE and a Qwen3-4B text encoder, in bf16 on a GPU.

Output, under `--out` (docs/benchmarks): `<scale>-<device>.json` (records, one per size and pipeline, plus the
device, versions and command), `.md` (the table) and `.png` (the plot). `l2p.bench.costs.CostModel.from_benchmarks`
fits the app's time and memory estimates to the JSON.

Modules: `cases` (the pipelines, sizes and models measured), `measure` (one case, and its memory estimate), `run`
(the run and the CLI), `report` (JSON, Markdown, PNG), `costs` (the app's estimates, fitted to the JSON) and
`app_overhead` (the demo's own cost over the bare pipeline). Names load on first use, so `l2p.bench.costs` can be
imported without the CLI.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "analytic_peak_memory": ".measure",
    "build_pipeline": ".cases",
    "count_flops": ".measure",
    "hr_detailer_channels": ".cases",
    "main": ".run",
    "markdown_table": ".report",
    "measure_case": ".measure",
    "measure_in_process": ".measure",
    "native_size": ".cases",
    "parse_size": ".cases",
    "plan_cases": ".cases",
    "run_benchmark": ".run",
    "write_outputs": ".report",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
