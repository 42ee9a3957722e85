"""Architecture search: searchers (LaNAS, regularized evolution, random), evaluators and the search loop
(`search.loop.run_search`)."""
