"""Architecture search: searchers (LaNAS, regularized evolution, random), evaluators, the search loop
(`search.loop.run_search`) and the table benchmark (`search.bench.run_bench_search`)."""
