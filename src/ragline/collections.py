"""Collections on the command line: several indexes under one home, and routed search over them.

A collection is a home of its own under the main home, ``$RAGLINE_HOME/collections/<NAME>/``:
its own index, an optional ``config.toml`` (its retrieval defaults, e.g. ``[retrieve] mode =
"sparse"`` for code) and a ``profile.json`` (``description`` and ``metadata``, read by the router).
Its settings are layered: the main home's config.toml, then the collection's config.toml, then the
environment, then the command's options (``collection_settings``).

A question over several collections is routed (``ragline.route.router``), each chosen collection
is searched through its own Engine's RAG flow with its own retrieval defaults, and the lists are
fused by reciprocal rank fusion, each hit labelled with its collection (``Collections.search``).
This module knows no command-line framework; ``ragline.cli.collections`` presents it.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from pydantic import ValidationError

from ragline.app import Engine
from ragline.config import ConfigError, Settings, _deep_merge, load_settings
from ragline.generate.base import Answerer
from ragline.generate.extractive import NOT_FOUND, ExtractiveAnswerer
from ragline.rag import RAG
from ragline.retrieve.multi import fuse_rrf
from ragline.retrieve.search import MODES
from ragline.route.router import DescriptionVectors, Routing, Target, centroid, document_sums, parse_rules, route
from ragline.trace import Trace, maybe
from ragline.types import Answer, Hit

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


class CollectionError(ValueError):
    """A collection that cannot be used as asked (a bad name, an unknown or empty collection)."""


# --------------------------------------------------------------------------- names and homes
def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise CollectionError(f"invalid collection name '{name}': use 1 to 64 letters, digits, '-' or '_'")
    return name


def collections_dir(main_home: Path) -> Path:
    return Path(main_home) / "collections"


def collection_home(main_home: Path, name: str) -> Path:
    """Where collection ``name`` lives (the name is checked; the directory may not exist yet)."""
    return collections_dir(main_home) / check_name(name)


def names(main_home: Path) -> list[str]:
    """The collections under ``main_home``, sorted."""
    root = collections_dir(main_home)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME.match(p.name))


def require(main_home: Path, name: str) -> Path:
    """The home of an existing collection; an unknown one is an error that lists the existing ones."""
    home = collection_home(main_home, name)
    if not home.is_dir():
        known = names(main_home)
        listing = ", ".join(known) if known else "none yet"
        raise CollectionError(f"unknown collection '{name}' (collections: {listing}); create one with "
                              f"`ragline ingest PATH --collection {name}`")
    return home


def collection_settings(main_home: Path, name: str, overrides: dict[str, Any] | None = None,
                        create: bool = False) -> Settings:
    """A collection's settings: the main home's config.toml, then the collection's config.toml, then
    the environment, then ``overrides`` (the command's options). ``create`` allows a collection
    that does not exist yet (ingest makes it)."""
    home = collection_home(main_home, name) if create else require(main_home, name)
    base = load_settings(None, home=main_home).model_dump(exclude_unset=True)  # main file + environment
    top = load_settings(overrides, home=home).model_dump(exclude_unset=True)  # its file + environment + options
    base.pop("home", None)
    top.pop("home", None)
    try:
        return Settings.model_validate({**_deep_merge(base, top), "home": home})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings for collection '{name}': {problems}") from None


# --------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class Profile:
    """What the router reads about a collection: what it holds, and fields for rules routing."""

    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


def read_profile(home: Path) -> Profile:
    path = Path(home) / "profile.json"
    if not path.exists():
        return Profile()
    try:
        data = json.loads(path.read_text("utf-8"))
        return Profile(str(data.get("description", "")), dict(data.get("metadata", {})))
    except (ValueError, AttributeError, TypeError) as exc:
        raise CollectionError(f"{path}: not a valid profile ({exc}); rewrite it with "
                              "`ragline collections describe NAME --description TEXT`") from None


def write_profile(home: Path, profile: Profile) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / "profile.json.tmp"
    tmp.write_text(json.dumps({"description": profile.description, "metadata": dict(profile.metadata)}, indent=1),
                   "utf-8")
    os.replace(tmp, home / "profile.json")


def parse_value(text: str) -> Any:
    """A metadata or rule value from the command line: true/false and numbers as such, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (bool, int, float)) else text


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, Any]:
    """``key=value`` pairs (``--meta``, ``--rule``) as a mapping."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CollectionError(f"{option} takes key=value, e.g. {option} language=python; not '{pair}'")
        out[key.strip()] = parse_value(value.strip())
    return out


def write_mode(home: Path, mode: str) -> None:
    """Set ``[retrieve] mode`` in the collection's config.toml, keeping everything else in it."""
    if mode not in MODES:
        raise CollectionError(f"mode must be one of {', '.join(MODES)}, not '{mode}'")
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    text = path.read_text("utf-8") if path.exists() else ""
    line = f'mode = "{mode}"'
    section = re.search(r"(?m)^\[retrieve\][ \t]*$", text)
    if section is None:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + f"[retrieve]\n{line}\n"
    else:
        end = re.search(r"(?m)^\[", text[section.end():])
        stop = section.end() + end.start() if end else len(text)
        body = text[section.end():stop]
        body, n = re.subn(r"(?m)^mode[ \t]*=.*$", line, body)
        text = text[:section.end()] + (body if n else "\n" + line + body) + text[stop:]
    try:
        ok = tomllib.loads(text).get("retrieve", {}).get("mode") == mode
    except tomllib.TOMLDecodeError:
        ok = False
    if not ok:
        raise CollectionError(f"{path}: could not set [retrieve] mode; edit the file and set mode = \"{mode}\"")
    path.write_text(text, "utf-8")


# --------------------------------------------------------------------------- routed search
@dataclass(frozen=True)
class RouteChoice:
    """How a question over several collections picks them (``ragline.route.router.route``)."""

    method: str = "embedding"
    rules: Mapping[str, Any] = field(default_factory=dict)  # field -> value it must equal
    max_collections: int = 2
    min_score: float | None = None


@dataclass
class Searched:
    """A search over collections: the routing (None for one collection, which is not routed), the
    hits, each as (the hit shown, the collection's own hit, its collection), and each searched
    collection's RAG flow (for citations)."""

    routing: Routing | None
    hits: list[tuple[Hit, Hit, str]]
    rags: dict[str, RAG]


class Collections:
    """The collections of one main home, opened on demand with the command's ``overrides``; they
    share the main engine's embedding model when their ``[embed]`` settings are the same."""

    def __init__(self, main: Engine, overrides: dict[str, Any] | None = None) -> None:
        self.main, self.overrides = main, overrides or {}
        self.home = main.home
        self._engines: dict[str, Engine] = {}

    def engine(self, name: str) -> Engine:
        """Collection ``name``'s engine (an unknown or empty collection is an error)."""
        if name not in self._engines:
            settings = collection_settings(self.home, name, self.overrides)
            shared = self.main.embedder if settings.embed == self.main.settings.embed else None
            engine = Engine(settings, embedder=shared)
            if not engine.has_index():
                raise CollectionError(f"collection '{name}' has no index yet: run "
                                      f"`ragline ingest PATH --collection {name}`")
            self._engines[name] = engine
        return self._engines[name]

    def target(self, name: str) -> Target:
        """Collection ``name`` as the router sees it: its profile, and its centroid (the mean of its
        chunk vectors from its embedding cache, built only when embedding routing needs it)."""
        engine = self.engine(name)
        prof = read_profile(engine.home)

        def mean() -> np.ndarray | None:
            if engine.settings.embed != self.main.settings.embed:
                return None  # another model's vectors do not compare with the question's
            model = engine.embedder.model_id
            return centroid(document_sums(engine.store.iter_chunks(),
                                          lambda hashes: engine.cache.get_many(model, hashes)))

        return Target(name, prof.description, prof.metadata, mean)

    def decide(self, text: str, picks: Sequence[str], how: RouteChoice, trace: Trace | None) -> Routing:
        """The route stage: which of ``picks`` to search (a malformed choice is a ``RouteError``)."""
        targets = [self.target(n) for n in picks]
        rules = parse_rules([{"field": f, "equals": v} for f, v in how.rules.items()]) if how.method == "rules" else []
        chat = self.main.chat_client() if how.method == "llm" else None
        with maybe(trace, "route", len(targets), method=how.method) as st:
            routing = route(text, targets, how.method, embedder=self.main.embedder,
                            describe=DescriptionVectors(self.main.embedder), rules=rules, chat=chat,
                            max_collections=how.max_collections, min_score=how.min_score)
            st.outputs = len(routing.chosen)
            st.detail.update(routing.json())
        return routing

    def search(self, text: str, picks: Sequence[str], how: RouteChoice, *, k: int | None = None,
               mode: str | None = None, filter: str | None = None, aggregate: str | None = None,
               trace: Trace | None = None) -> Searched:
        """Search ``picks``: one collection directly, several routed, each chosen one through its own
        RAG flow and retrieval defaults, the lists fused by reciprocal rank fusion (ties in routing
        order) and cut to ``k`` (default: the main home's ``retrieve.k``)."""
        picks = [check_name(n) for n in dict.fromkeys(picks)]
        for name in picks:
            self.engine(name)  # every listed collection is checked before anything runs
        routing = self.decide(text, picks, how, trace) if len(picks) > 1 else None
        chosen = routing.chosen if routing is not None else picks
        rags, lists = {}, {}
        for name in chosen:
            engine = self.engine(name)
            rags[name] = engine.rag(ExtractiveAnswerer(engine.embedder))  # the answer is written elsewhere
            ask = rags[name].request(text, k=k, mode=mode, filter=filter, aggregate=aggregate)
            sub = Trace() if trace is not None else None
            with maybe(trace, "retrieve", None, collection=name, mode=ask.search.mode, k=ask.search.k) as st:
                lists[name] = rags[name].retrieve(ask, sub)
                st.outputs = len(lists[name])
                if sub is not None:
                    st.detail["stages"] = sub.json()
        if routing is None:
            return Searched(None, [(h, h, name) for name, hits in lists.items() for h in hits], rags)
        own = {h.chunk.id: (h, name) for name, hits in lists.items() for h in hits}
        with maybe(trace, "fuse-collections", len(own), method="rrf", lists=len(lists)) as st:
            place = {name: i for i, name in enumerate(chosen)}  # the same rank in two lists ties: routing order
            fused = sorted(fuse_rrf(lists, self.main.settings.retrieve.rrf_k),
                           key=lambda h: (-h.score, place[own[h.chunk.id][1]]))[: k or self.main.settings.retrieve.k]
            st.outputs = len(fused)
        return Searched(routing, [(f, *own[f.chunk.id]) for f in fused], rags)


# --------------------------------------------------------------------------- one answer over several
def cite_all(answer: Answer, rags: Mapping[str, RAG]) -> Answer:
    """Each collection pinpoints its own citations (doc ids hash source paths, so they do not
    collide; a collection leaves other collections' citations as they are)."""
    for rag in rags.values():
        answer = rag.cite(answer)
    return answer


def answer_stream(answerer: Answerer, question: str, found: Searched) -> Iterator[str | Answer]:
    """One answer over the fused hits: its text in pieces as it is written, then the cited Answer."""
    hits = [h for h, _, _ in found.hits]
    if not hits:
        yield NOT_FOUND
        yield Answer(NOT_FOUND, (), grounded=False, generator=answerer.name)
        return
    for item in answerer.stream(question, hits):
        yield cite_all(item, found.rags) if isinstance(item, Answer) else item


def answer(answerer: Answerer, question: str, found: Searched) -> Answer:
    """The cited answer over the fused hits, written at once."""
    hits = [h for h, _, _ in found.hits]
    if not hits:
        return Answer(NOT_FOUND, (), grounded=False, generator=answerer.name)
    return cite_all(answerer.answer(question, hits), found.rags)
