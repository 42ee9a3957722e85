"""Helpers for the reliability tests: tiny command lines, fault injection, run comparison."""
