"""Second-stage rerankers: score (query, passage) pairs and re-order a first-stage candidate list.

Every reranker speaks one protocol (``base.Reranker``); ``app.Engine.reranker`` builds the
configured one (``[rerank]`` in config.toml) and the retriever runs it as a stage.
"""
