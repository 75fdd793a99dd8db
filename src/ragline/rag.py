"""The RAG flow, written once: question -> retrieve -> answer -> cite.

The command line, the HTTP API, ``eval answers`` and every loop built on top (query
transformations, reranking, corrective retrieval) run a question through ``RAG``; none of them
strings the steps together itself. A request is checked in one place (``RAG.request``, which
asks the retriever to check mode, depth, aggregation and filter) and refused with a clear
error before anything runs.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Callable, ContextManager, Iterator, Sequence

from ragline.generate.base import Answerer
from ragline.generate.citations import pinpoint
from ragline.generate.extractive import NOT_FOUND
from ragline.retrieve.fallback import FallbackPolicy, with_fallbacks
from ragline.retrieve.search import QueryError, Retriever, SearchRequest
from ragline.store.base import Store
from ragline.trace import Trace
from ragline.transform.base import QueryTransform
from ragline.types import Answer, Hit


@dataclass(frozen=True)
class Ask:
    """A checked question: the text to answer, the retrieval that feeds it, and the query
    transformation that rewrites it first (None: the question is searched as it is)."""

    question: str
    search: SearchRequest
    transform: QueryTransform | None = None


class RAG:
    def __init__(self, retriever: Retriever, answerer: Answerer, store: Store,
                 reading: Callable[[], ContextManager] | None = None, *, transform: QueryTransform | None = None,
                 transforms: Callable[[str], QueryTransform | None] | None = None,
                 fallbacks: FallbackPolicy | None = None) -> None:
        """``transform`` is the configured query transformation; ``transforms`` builds one by method
        name, for a request that asks for another (None: requests cannot choose); ``fallbacks`` says
        what to do when retrieval comes back weak (retrieve/fallback.py)."""
        self.retriever, self.answerer, self.store = retriever, answerer, store
        self._reading = reading or nullcontext
        self.transform, self._transforms = transform, transforms
        self.fallbacks = fallbacks

    def request(self, question: str, *, k: int | None = None, mode: str | None = None, filter: str | None = None,
                aggregate: str | None = None, principals: tuple[str, ...] | None = None,
                rerank: bool | None = None, rerank_depth: int | None = None, transform: str | None = None) -> Ask:
        """A question with its retrieval options, checked (``QueryError``, ``FilterError``; a
        transformation that needs an unconfigured LLM, ``ConfigError``); unset options take the
        configured defaults. ``principals`` restricts retrieval to what they may read; ``rerank`` False
        skips the configured reranker, True requires one; ``transform`` names a query transformation
        ("none" skips the configured one)."""
        from ragline.transform.base import METHODS

        search = self.retriever.request(question, k=k, mode=mode, filter=filter, aggregate=aggregate,
                                        rerank=rerank, rerank_depth=rerank_depth)
        chosen = self.transform
        if transform is not None:
            if transform not in METHODS:
                raise QueryError(f"transform must be one of {', '.join(METHODS)}, not '{transform}'")
            if self._transforms is None and transform != "none":
                raise QueryError("this flow takes no per-request query transformation")
            chosen = None if transform == "none" else self._transforms(transform)  # type: ignore[misc]
        return Ask(question, replace(search, principals=principals), chosen)

    def retrieve(self, ask: Ask, trace: Trace | None = None) -> list[Hit]:
        """The hits for ``ask`` (rewritten first by its transformation, if any), after the fallback
        steps when they come back weak; with ``trace``, every stage is recorded in it. A
        transformation's LLM call runs outside the ``reading`` guard."""
        hits = self._retrieve(ask, trace)
        if self.fallbacks is None or not self.fallbacks.steps:
            return hits
        return with_fallbacks(self.fallbacks, ask, hits, lambda a: self._retrieve(a, None),
                              self.rewriter(ask), trace)

    def _retrieve(self, ask: Ask, trace: Trace | None) -> list[Hit]:
        if ask.transform is None:
            with self._reading():
                return self.retriever.search(ask.search, trace)
        from ragline.retrieve.multi import transformed_search

        hits, _ = transformed_search(ask.transform, self.retriever, ask.search, trace, self._reading)
        return hits

    def rewriter(self, ask: Ask) -> Callable[[Ask], list[Hit]] | None:
        """The fallback's rewrite: the configured transformation when the ask did not use one, else
        the offline pseudo-relevance feedback (None when that is what the ask used already)."""
        if ask.transform is None and self.transform is not None:
            chosen = self.transform
        else:
            from ragline.transform.prf import PseudoRelevanceFeedback

            if isinstance(ask.transform, PseudoRelevanceFeedback):
                return None
            chosen = PseudoRelevanceFeedback()
        return lambda a: self._retrieve(replace(a, transform=chosen), None)

    def answer(self, ask: Ask, hits: Sequence[Hit] | None = None) -> Answer:
        """The cited answer from ``hits`` (retrieved for ``ask`` when not given); no hits at all is
        answered "not found" without calling the answerer."""
        hits = self.retrieve(ask) if hits is None else hits
        if not hits:
            return self.not_found()
        return self.cite(self.answerer.answer(ask.question, hits))

    def stream(self, ask: Ask, hits: Sequence[Hit] | None = None) -> Iterator[str | Answer]:
        """The answer's text in pieces as it is written, then the cited ``Answer``, last."""
        hits = self.retrieve(ask) if hits is None else hits
        if not hits:
            answer = self.not_found()
            yield answer.text
            yield answer
            return
        for item in self.answerer.stream(ask.question, hits):
            yield self.cite(item) if isinstance(item, Answer) else item

    def reading(self) -> ContextManager:
        """The guard every store read of this flow runs under (a serve collection's read lock)."""
        return self._reading()

    def not_found(self) -> Answer:
        return Answer(NOT_FOUND, (), grounded=False, generator=self.answerer.name)

    def cite(self, answer: Answer) -> Answer:
        """Each citation's own page and heading path, from its document's stored sections."""
        with self._reading():
            return pinpoint(answer, self.store)
