"""Benchmarks: zero-shot retrieval (clip_benchmark protocol) and captioning (pycocoevalcap)."""
