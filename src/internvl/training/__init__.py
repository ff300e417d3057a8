"""Training: stage-2 retrieval fine-tuning (losses, optimizer groups, recipes, the engine).

Imports evaluation, inference, models, data and core; never serving or cli (tests/unit/test_layering.py).
"""
