"""OpenAI-compatible HTTP serving of InternVL-Chat and InternVL-C/G checkpoints (needs the ``[serve]`` extra).

`create_app` (``internvl.serving.app``) builds the FastAPI app over a `ChatPipeline` or an `Embedder`;
``internvl serve MODEL_DIR`` runs it with uvicorn. Nothing here is imported by ``import internvl``.
"""
