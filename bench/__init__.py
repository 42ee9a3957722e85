"""Benchmarks that measure the product; the product packages never import this one."""
