"""The Table 2 benchmark (``lowres bench``): 79 / 151 / 299 stems plus naive-79 and upsample-79, trained
and evaluated alike, reported beside the paper (report.md, report.json, PNG plots).

``load_bench_preset('cpu')`` reads configs/bench_cpu.yaml; ``run_bench(spec, out_dir, data=...)`` runs it.
"""
from .runner import BenchError, run_bench
from .variants import PAPER_TABLE2, VARIANTS, BenchSpec, Variant, load_bench_preset, variant_config

__all__ = ["run_bench", "BenchError", "load_bench_preset", "BenchSpec", "Variant", "VARIANTS", "PAPER_TABLE2",
           "variant_config"]
