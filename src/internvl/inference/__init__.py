"""Pipelines that combine models and data: inspection, embedding, captioning, chat."""
