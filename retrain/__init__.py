"""Retraining from scratch (`run.py retrain`), evaluation and export (`run.py export`)."""
