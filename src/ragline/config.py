"""One typed settings model, read once at start (file + environment).

Precedence, lowest to highest: defaults, ``$RAGLINE_HOME/config.toml``,
environment variables ``RAGLINE_<SECTION>__<FIELD>`` (e.g.
``RAGLINE_LLM__BASE_URL``), then explicit overrides from the CLI.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"


class EmbedSettings(BaseModel):
    provider: Literal["local", "openai"] = "local"
    # "bundled:all-MiniLM-L6-v2" (shipped in site-packages), a local
    # sentence-transformers directory, or the model name for an OpenAI-compatible endpoint.
    model: str = BUNDLED_MODEL
    base_url: str | None = None  # provider=openai: e.g. http://localhost:8080/v1
    api_key: str | None = None
    batch_size: int = Field(32, ge=1, le=4096)
    # auto: bfloat16 autocast where the CPU has native bf16 (measured: 1.9x faster,
    # cosine 0.99998 to fp32); fp32 everywhere else.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    max_tokens: int | None = None  # provider=openai: the endpoint model's input limit
    timeout_s: float = 60.0


class ChunkSettings(BaseModel):
    strategy: Literal["recursive", "fixed", "structure"] = "recursive"
    size: int = Field(256, ge=16, description="max tokens per chunk (embedding tokenizer); capped at the model limit")
    overlap: int = Field(0, ge=0)
    # Prefix later chunks of a document with its title, so each chunk stands alone.
    title_prefix: bool = True

    @field_validator("overlap")
    @classmethod
    def _overlap_lt_size(cls, v: int, info: Any) -> int:
        size = info.data.get("size", 256)
        if v >= size:
            raise ValueError(f"chunk.overlap ({v}) must be smaller than chunk.size ({size})")
        return v


class RetrieveSettings(BaseModel):
    mode: Literal["hybrid", "dense", "sparse"] = "hybrid"
    k: int = Field(10, ge=1, le=1000)
    fusion: Literal["minmax", "rrf"] = "minmax"
    dense_weight: float = Field(0.5, ge=0.0, le=1.0)  # minmax fusion: weight of the dense scores
    rrf_k: int = Field(60, ge=1)
    candidates: int = Field(100, ge=1, description="hits fetched per mode before fusion")
    # Build an HNSW index once the store holds this many chunks; below it, exact search.
    ann_min_rows: int = Field(50_000, ge=0)
    hnsw_m: int = Field(20, ge=4)
    hnsw_ef_construction: int = Field(300, ge=16)
    hnsw_ef: int = Field(100, ge=1, description="search-time candidate list size")
    aggregate: Literal["chunk", "document"] = "chunk"


class RerankSettings(BaseModel):
    """The second stage (rerank/): ``depth`` first-stage candidates are re-scored and the best k kept."""

    # none | minilm (the bundled MiniLM, no other model) | cross-encoder (a local sentence-transformers
    # CrossEncoder directory, or a hub id where there is network) | http (a /rerank endpoint) |
    # llm (the configured [llm] chat model, pointwise)
    method: Literal["none", "minilm", "cross-encoder", "http", "llm"] = "none"
    model: str | None = None  # cross-encoder: model directory; http: the model name sent to the endpoint
    url: str | None = None  # http: the endpoint, e.g. https://api.cohere.com/v2/rerank or http://host:8080/rerank
    # http wire format: "cohere" (Cohere v2, Jina, Infinity, llama.cpp --reranking, ragline's own
    # /v1/rerank) or "tei" (Hugging Face text-embeddings-inference)
    api: Literal["cohere", "tei"] = "cohere"
    api_key: str | None = None  # http: sent as a bearer token (Cohere, Jina)
    depth: int = Field(50, ge=1, le=1000, description="first-stage candidates reranked")
    batch_size: int = Field(32, ge=1, le=1024, description="pairs per model call or HTTP request")
    max_tokens: int = Field(512, ge=16, description="token limit of one query-document pair")
    timeout_s: float = Field(60.0, gt=0)


class TransformSettings(BaseModel):
    """Query transformation before retrieval (transform/, retrieve/multi.py)."""

    # none | hyde | multi-query | decompose | step-back (these four call the [llm] model) | prf (offline)
    method: Literal["none", "hyde", "multi-query", "decompose", "step-back", "prf"] = "none"
    n_queries: int = Field(3, ge=1, le=10, description="multi-query: rewrites; decompose: most sub-questions")
    hyde_passages: int = Field(1, ge=1, le=5, description="hypothetical passages (one LLM call each)")
    max_tokens: int = Field(256, ge=16)
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    prf_feedback: int = Field(3, ge=1, le=50, description="top passages read by prf")
    prf_terms: int = Field(5, ge=1, le=50, description="terms prf adds to the sparse query")


class RouteSettings(BaseModel):
    """What to do when retrieval comes back weak (retrieve/fallback.py); off unless steps are listed."""

    # in order, until the results are not weak: drop-filter | rewrite | not-found
    fallbacks: list[Literal["drop-filter", "rewrite", "not-found"]] = Field(default_factory=list)
    min_hits: int = Field(1, ge=1, description="fewer hits than this are weak")
    weak_below: float = Field(0.25, ge=-1.0, le=1.0, description="a best dense cosine under this is weak")


class StrategySettings(BaseModel):
    """How a question becomes an answer (agentic/): ``standard`` retrieves once and answers;
    ``corrective`` grades the retrieval and refines, falls back or says not found; ``self-check``
    checks each sentence against the passages and drops what they do not support; ``agent`` lets
    the configured LLM call ragline's tools. Loops stop at these budgets."""

    strategy: Literal["standard", "corrective", "self-check", "agent"] = "standard"
    max_steps: int = Field(6, ge=1, le=50, description="LLM turns (agent) or retrievals (corrective)")
    max_tokens: int = Field(20_000, ge=100, description="tokens the loop's LLM calls may spend")
    max_seconds: float = Field(120.0, gt=0, description="wall-clock limit of one loop")
    # agent: make the first turn a search (for small models that answer without calling a tool)
    agent_search_first: bool = False


class LLMSettings(BaseModel):
    base_url: str | None = None  # OpenAI-compatible, e.g. http://127.0.0.1:8080/v1; unset = extractive
    model: str = "default"
    api_key: str | None = None
    context_window: int = Field(8192, ge=256)
    max_tokens: int = Field(512, ge=16, description="tokens reserved for the answer")
    temperature: float = 0.1
    timeout_s: float = 120.0
    # price per 1,000 tokens, for the cost estimates of `eval answers --judge llm`; 0 = unknown (cost null)
    price_input_per_1k: float = Field(0.0, ge=0.0)
    price_output_per_1k: float = Field(0.0, ge=0.0)


class IngestSettings(BaseModel):
    max_file_mb: float = Field(50.0, gt=0)
    # what one file may expand to (ingest/parsers/base.py Limits): a file over either fails, never cut short
    max_text_chars: int = Field(20_000_000, ge=1_000, description="parsed text per file, in characters")
    max_unpacked_mb: float = Field(256.0, gt=0, description="bytes decompressed from one file (DOCX parts, PDF pages)")
    batch_docs: int = Field(64, ge=1, description="documents per write batch (bounds memory)")
    batch_chunks: int = Field(512, ge=1, description="a batch commits once it holds this many chunks")
    # each file is parsed in a worker process that is killed past these limits (the file fails);
    # 0 workers parses in the ingesting process, without limits (tests, debugging)
    parse_workers: int = Field(1, ge=0, le=1)
    parse_timeout_s: float = Field(120.0, gt=0)
    parse_memory_mb: int = Field(2048, ge=256, description="address-space limit of the parse worker")


class ServeSettings(BaseModel):
    """`ragline serve` (docs/serve.md). Data lives under ``$RAGLINE_HOME/serve``."""

    host: str = "127.0.0.1"
    port: int = Field(8321, ge=0, le=65535)
    # the admin key (tenant management, trusted upstreams); unset: one is generated on first
    # start and written to $RAGLINE_HOME/serve/admin.key (mode 600)
    admin_key: str | None = None
    max_request_mb: float = Field(100.0, gt=0, description="largest request body (uploads)")
    max_json_kb: float = Field(256.0, gt=0, description="largest JSON request body")
    rate_limit_per_minute: int = Field(600, ge=1, description="requests per API key per minute")
    rate_limit_burst: int = Field(60, ge=1)
    llm_timeout_s: float = Field(60.0, gt=0, description="an ask gives up on the LLM after this long")
    answer_cache_size: int = Field(256, ge=0, description="cached answers per collection (0: off)")
    # background jobs (serve/jobs.py): tenants are served in turn, one job per tenant and lane
    job_workers: int = Field(2, ge=1, le=16, description="jobs (uploads, evaluations) run at once")
    max_jobs_per_tenant: int = Field(20, ge=1, description="jobs queued or running per tenant; more answer 429")
    # durable jobs (serve/jobstore.py): a running job's lease; a replica that stops renewing it
    # (it died) has its job run again by another after this long
    job_lease_s: float = Field(30.0, ge=0.5, le=3600)


class StoreSettings(BaseModel):
    """Where the index lives: the embedded LanceDB store beside the home (default), or PostgreSQL
    with pgvector, shared by every process pointed at it (docs/scale.md)."""

    backend: Literal["lance", "postgres"] = "lance"
    # postgres: a libpq connection string or URI, e.g. postgresql://ragline@db:5432/ragline
    dsn: str | None = None
    # postgres: the name of this index in the database (one schema per index, docs/adr/0010); by
    # default derived from the home's path; the server names each collection "<tenant>/<collection>"
    namespace: str | None = None
    pool_size: int = Field(8, ge=1, le=256, description="postgres: most connections a process opens")
    connect_timeout_s: float = Field(10.0, gt=0)

    @field_validator("dsn")
    @classmethod
    def _dsn_shape(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("store.dsn is empty; give a PostgreSQL connection string or leave it unset")
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGLINE_", env_nested_delimiter="__", extra="forbid")

    home: Path = Path(".ragline")
    embed: EmbedSettings = EmbedSettings()
    chunk: ChunkSettings = ChunkSettings()
    retrieve: RetrieveSettings = RetrieveSettings()
    store: StoreSettings = StoreSettings()
    rerank: RerankSettings = RerankSettings()
    transform: TransformSettings = TransformSettings()
    route: RouteSettings = RouteSettings()
    llm: LLMSettings = LLMSettings()
    answer: StrategySettings = StrategySettings()
    ingest: IngestSettings = IngestSettings()
    serve: ServeSettings = ServeSettings()


class ConfigError(Exception):
    """Settings that cannot be used; the message names the setting and the fix."""


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(overrides: dict[str, Any] | None = None, home: Path | None = None) -> Settings:
    """Build settings from defaults, the home's config.toml, env, and ``overrides``.

    ``overrides`` uses nested dicts: ``{"retrieve": {"k": 5}}``.
    """
    home = Path(home or os.environ.get("RAGLINE_HOME") or ".ragline")
    file_values: dict[str, Any] = {}
    cfg = home / "config.toml"
    if cfg.exists():
        try:
            file_values = tomllib.loads(cfg.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cfg}: not valid TOML ({exc})") from None
    try:
        env_values = Settings().model_dump(exclude_defaults=True)  # environment only
        merged = _deep_merge(_deep_merge(file_values, env_values), overrides or {})
        merged["home"] = home
        return Settings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


def settings_json(settings: Settings) -> str:
    data = settings.model_dump(mode="json")
    for section, key in (("embed", "api_key"), ("rerank", "api_key"), ("llm", "api_key"), ("serve", "admin_key")):
        if data[section].get(key):
            data[section][key] = "***"
    if data["store"].get("dsn"):
        data["store"]["dsn"] = mask_dsn(data["store"]["dsn"])
    return json.dumps(data, indent=2)


def mask_dsn(dsn: str) -> str:
    """A connection string fit to print: its password (URI ``user:secret@`` or ``password=secret``)
    replaced by ``***``."""
    import re

    dsn = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", dsn)
    dsn = re.sub(r"([?&]password=)[^&#]*", r"\1***", dsn)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)
