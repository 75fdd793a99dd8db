"""Query transformations: the question rewritten into the searches that feed one answer.

``build_transform`` is the one place a method name becomes a transformation; the retrieval of a
``Rewrite`` lives in ``ragline.retrieve.multi``.
"""

from __future__ import annotations

from ragline.config import ConfigError
from ragline.generate.llm import ChatClient
from ragline.transform.base import LLM_METHODS, METHODS, Identity, QueryTransform, Rewrite

__all__ = ["METHODS", "LLM_METHODS", "QueryTransform", "Rewrite", "build_transform"]


def build_transform(method: str, client: ChatClient | None = None, *, n_queries: int = 3, hyde_passages: int = 1,
                    max_tokens: int = 256, temperature: float = 0.2, prf_feedback: int = 3,
                    prf_terms: int = 5) -> QueryTransform:
    """The transformation ``method`` names (``transform.method``). The LLM ones need ``client``
    (the configured ``[llm]`` endpoint); without one the error names the setting to fix."""
    if method not in METHODS:
        raise ConfigError(f"transform.method must be one of {', '.join(METHODS)}, not '{method}'")
    if method == "none":
        return Identity()
    if method == "prf":
        from ragline.transform.prf import PseudoRelevanceFeedback

        return PseudoRelevanceFeedback(prf_feedback, prf_terms)
    if client is None:
        raise ConfigError(f"query transformation '{method}' needs an LLM but none is configured: set "
                          "llm.base_url (RAGLINE_LLM__BASE_URL=http://host:port/v1), or use transform.method "
                          "prf (no LLM) or none")
    from ragline.transform import llm

    if method == "hyde":
        return llm.HyDE(client, hyde_passages, max_tokens, temperature)
    if method == "multi-query":
        return llm.MultiQuery(client, n_queries, max_tokens, temperature)
    if method == "decompose":
        return llm.Decompose(client, n_queries, max_tokens, temperature)
    return llm.StepBack(client, min(max_tokens, 96), temperature)
