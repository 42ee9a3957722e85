"""Benchmarks that measure the product; the product packages never import this one.

`COMMANDS` are the `run.py` commands of the benchmarks, in the form of `run.py`'s own table
(name: config class, entry function, one-line description); `run.py` adds them when this package
is importable. The analysis tools run as modules: `python -m bench.demo_vs_random ...`.
"""

COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench-supernet": (
        "bench.supernet_cost:BenchSupernetConfig",
        "bench.supernet_cost:main",
        "supernet vs standalone cost",
    ),
    "bench-throughput": (
        "bench.throughput:BenchThroughputConfig",
        "bench.throughput:main",
        "supernet training images/s per strategy",
    ),
    "bench-search": (
        "bench.search_table:BenchSearchConfig",
        "bench.search_table:run_bench_search",
        "searchers on a table",
    ),
    "bench-nb201": ("bench.nb201.config:BenchNB201Config", "bench.nb201.oneshot:main", "one-shot NAS-Bench-201"),
    "bench-latency": ("bench.latency:BenchLatencyConfig", "bench.latency:main", "latency table against measurement"),
    "bench-gpu": ("bench.gpu:BenchGpuConfig", "bench.gpu:main", "AMP parity, GPU training throughput, loader rate"),
    "bench-data": ("bench.data:BenchDataConfig", "bench.data:main", "input path images/s against the standard loader"),
}
