"""`run.py bench-nb201`: the one-shot pipeline on NAS-Bench-201, measured against the published table.

config (the options) <- train (supernets under a time budget) <- final (cells trained alone)
<- oneshot (the command: ranking quality and searches); bias scores a ranking's errors; compare and
fidelity are analysis tools (`python -m bench.nb201.compare ...`).
"""
