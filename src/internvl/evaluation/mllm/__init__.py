"""Multimodal benchmarks for chat models: readers, reference prompts, official scoring, a resumable sharded runner."""
