"""`run.py pipeline`: supernet training, search and retraining in one resumable run directory."""
