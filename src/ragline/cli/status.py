"""`ragline status`: a summary of the index in the home."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.table import Table

from ragline.cli import app
from ragline.cli.common import CollectionOpt, HomeOpt, JsonOpt, emit_json, engine_for, guard, out, settings_for


def count_by(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


@app.command()
def status(collection: Optional[str] = CollectionOpt, home: Optional[Path] = HomeOpt,
           as_json: bool = JsonOpt) -> None:
    """Summarise the index: documents, chunks, model, store, size (with --collection, that collection's)."""

    def go() -> None:
        settings = settings_for(home, collection=collection)
        engine = engine_for(settings)
        store = engine.existing_store()
        backend = settings.store.backend
        info: dict[str, Any] = {"home": str(settings.home.resolve()), "documents": 0, "chunks": 0,
                                "store": "lancedb" if backend == "lance" else backend, "size_bytes": 0}
        if collection is not None:
            from ragline.collections import read_profile

            prof = read_profile(settings.home)
            info.update({"collection": collection, "description": prof.description, "metadata": dict(prof.metadata),
                         "mode": settings.retrieve.mode})
        if store is not None:
            st, recs = store.stats(), store.documents()
            info.update({
                "documents": len(recs), "chunks": st.chunks, "dimension": store.dim,
                "store": st.backend,
                # the home's files, and for an index in a database its tables and indexes too
                "size_bytes": sum(f.stat().st_size for f in settings.home.rglob("*") if f.is_file())
                + (st.size_bytes if st.backend != "lancedb" else 0),
                "ann_index": st.ann_index, "fts_index": st.fts_index,
                "types": count_by(r.type for r in recs.values()),
            })
            if st.backend == "postgres":
                info["store"] = f"postgres ({st.extra['server']}, schema {st.extra['schema']})"
                info["database"] = st.extra
        from ragline.ingest.sync import SourceRegistry

        info["sources"] = SourceRegistry(settings.home / "sources.json").load()
        info["embedding_model"] = settings.embed.model
        built = engine.index_info()
        if built:
            info["index"] = built
            info["embedding_model"] = built["embedding_model"]
            if store is not None:
                info["documents_pending"] = sum(1 for r in recs.values() if r.fingerprint != built["fingerprint"])
            info["settings_changed"] = built["chunking"] != settings.chunk.model_dump()
        info["chunking"] = settings.chunk.model_dump()
        info["llm"] = settings.llm.base_url or "none (extractive answers)"
        if as_json:
            emit_json(info)
            return
        t = Table(show_header=False, box=None)
        if info.get("settings_changed"):
            out.print("chunk settings changed since the last ingest: run `ragline ingest` to re-chunk")
        if info.get("documents_pending"):
            out.print(f"{info['documents_pending']} documents wait for re-indexing: run `ragline ingest`")
        for key in ("collection", "description", "mode", "home", "documents", "chunks", "embedding_model", "store",
                    "size_bytes", "sources", "llm"):
            if key not in info:
                continue
            val = info.get(key)
            if key == "size_bytes":
                key, val = "size", f"{(val or 0) / 2**20:.1f} MB"
            t.add_row(key, ", ".join(val) if isinstance(val, list) else str(val))
        out.print(t)

    guard(go)
