"""kill -9 campaign for incremental ``ragline ingest``: does a kill at a random point ever
leave the index wrong, and does the next ingest always repair it?

A corpus of 40 files (Markdown, text, HTML), each version with its own marker sentence,
is indexed once. Each trial then modifies, adds and deletes 11-25 files, starts
``ragline ingest DIR --json``, sends SIGKILL to its process group after a random delay,
and checks, through the command line only:

* right after the kill: ``ragline query`` and ``ragline status`` answer without an
  error, and every stored document is exactly its old or its new version (chunk for
  chunk), never a mix, never missing when it was only modified;
* after ``ragline ingest DIR`` runs to completion: document and chunk counts equal a
  clean build of the same files, each file's chunks equal its clean-build chunks (no
  stale, duplicated or lost chunks), and every marker sentence ranks its file first
  (``ragline eval answers`` with the marker sentences as questions).

What a file's chunks must be comes from a clean build of every version the seeded
trials write (ten trials' worth at a time; chunking is per file, so a file's chunks do
not depend on its neighbours); the last trial's corpus is also rebuilt from scratch and compared whole.

Run: ``nice -n 10 .venv/bin/python bench/kill_ingest.py [--trials N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_ingest import (MB, RAGLINE, ROOT, WORDS, chunk_key, clean_index, cli_env, code_state, list_chunks,  # noqa: E402
                         log, nonce, run_capped, sentences, status, tail)

CORPUS = 40
EXTS = [".md", ".txt", ".html"]


def h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def make_version(rng: random.Random, name: str) -> tuple[bytes, str]:
    """A file body and its marker sentence (three made-up words: unique to this version)."""
    marker = f"The {nonce(rng, 'ka')} of {nonce(rng, 'mo')} keeps {nonce(rng, 'vu')} near the {rng.choice(WORDS)}."
    paras = [sentences(rng, rng.randint(3, 9)) for _ in range(rng.randint(1, 4))]
    paras.insert(rng.randrange(len(paras) + 1), marker)
    ext = os.path.splitext(name)[1]
    if ext == ".html":
        body = "".join(f"<p>{p}</p>" for p in paras)
        data = f"<html><head><title>{name}</title></head><body><h1>Notes</h1>{body}</body></html>\n"
    elif ext == ".md":
        data = "# Notes\n\n" + "\n\n".join(paras) + "\n"
    else:
        data = "\n\n".join(paras) + "\n"
    return data.encode(), marker


def plan(seed: int, trials: int) -> tuple[dict[str, tuple[bytes, str]], list[dict]]:
    """The whole campaign, decided up front from the seed: the first corpus, then per trial the
    operations and the corpus after them. Returns (versions by hash, states)."""
    rng = random.Random(seed)
    versions: dict[str, tuple[bytes, str]] = {}
    state: dict[str, str] = {}
    counter = 0

    def new(name: str) -> str:
        data, marker = make_version(rng, name)
        key = h(data)
        versions[key] = (data, marker)
        return key

    for _ in range(CORPUS):
        name = f"doc_{counter:04d}{EXTS[counter % len(EXTS)]}"
        counter += 1
        state[name] = new(name)
    states = [{"state": dict(state), "ops": {}}]
    for _ in range(trials):
        n = rng.randint(11, 25)
        d = rng.randint(2, n // 3)
        a = max(1, min(n - d - 1, d + rng.randint(-1, 1) + (CORPUS - len(state)) // 2))
        m = n - d - a
        names = sorted(state)
        rng.shuffle(names)
        deleted, modified = names[:d], names[d:d + m]
        added = []
        for _ in range(a):
            name = f"doc_{counter:04d}{EXTS[counter % len(EXTS)]}"
            counter += 1
            added.append(name)
        for name in deleted:
            del state[name]
        for name in modified + added:
            state[name] = new(name)
        states.append({"state": dict(state), "ops": {"deleted": deleted, "modified": modified, "added": added}})
    return versions, states


def apply(corpus: Path, old: dict[str, str], new: dict[str, str], versions: dict) -> None:
    for name in old:
        if name not in new:
            (corpus / name).unlink()
    for name, key in new.items():
        if old.get(name) != key:
            (corpus / name).write_bytes(versions[key][0])


def by_name(chunks: list[dict], folder: Path) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for c in chunks:
        src = c.get("source", "")
        name = src[len(str(folder)) + 1:] if src.startswith(str(folder) + "/") else "?" + src
        out[name][chunk_key(c)] += 1
    return out


CLEAN_BLOCK = 10  # trials whose new file versions one clean build covers


def clean_build(versions: dict, states: list[dict], which: range, work: Path, mem: int,
                expected: dict[str, Counter], info: dict) -> bool:
    """Index, in a fresh home, every version states ``which`` hold that has no expected chunks yet."""
    clean = work / f"clean_{which.start:04d}"
    paths: dict[str, str] = {}
    for i in which:
        for name, key in states[i]["state"].items():
            if key not in expected and key not in paths:
                p = clean / f"v{len(paths):05d}" / name  # the same file name: its title and chunks match
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(versions[key][0])
                paths[key] = str(p)
    if not paths:
        return True
    log(f"clean build of {len(paths)} file versions (states {which.start}..{which.stop - 1}) ...")
    home = work / "home_clean"
    chunks, r = clean_index(clean, home, 3600.0, mem)
    if chunks is None:
        return False
    src_key = {v: k for k, v in paths.items()}
    for c in chunks:
        expected[src_key[c["source"]]][chunk_key(c)] += 1
    info["versions"] += len(paths)
    info["chunks"] += len(chunks)
    info["seconds"] = round(info["seconds"] + r.seconds, 1)
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(clean, ignore_errors=True)
    return True


def newest_write(folder: Path) -> float:
    """The newest modification time of any file under ``folder`` (0 if none)."""
    newest = 0.0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                pass
    return newest


def kill_after(args: list[str], env: dict, delay: float,
               armed_by: Path | None = None) -> tuple[bool, float, int | None, int]:
    """Start ``args`` and, after ``delay`` seconds, SIGKILL its main process (what ``kill -9 PID``
    does). With ``armed_by``, the delay counts from the first write under that folder (the store),
    so the kill lands among the commits, not while the CLI still imports and loads the model.
    Returns (finished before the kill, seconds it ran, exit code if it finished, processes of its
    tree still alive two seconds after the kill; those are then killed too)."""
    t0 = time.perf_counter()
    before = newest_write(armed_by) if armed_by is not None else 0.0
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(args, env=env, stdout=null, stderr=null, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(ROOT))
        if armed_by is not None:
            while proc.poll() is None and newest_write(armed_by) <= before:
                time.sleep(0.01)
        try:
            rc = proc.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            rc, finished = None, False
        kids = []
        if not finished:
            try:
                kids = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                pass
            proc.kill()
        proc.wait()
    orphans = 0
    if kids:
        _, alive = psutil.wait_procs(kids, timeout=2.0)
        orphans = len(alive)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    return finished, time.perf_counter() - t0, rc, orphans


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=100, help="kill -9 trials (default 100)")
    ap.add_argument("--seed", type=int, default=46)
    ap.add_argument("--mem-gb", type=float, default=6.0, help="memory cap per CLI run (default 6)")
    ap.add_argument("--max-seconds", type=float, default=None, help="start no new trial after this many seconds")
    ap.add_argument("--max-delay", type=float, default=None,
                    help="kill delays uniform in [0, this] (default: [0.4, 1.1] x the median uninterrupted "
                         "incremental ingest, learnt as the trials go)")
    ap.add_argument("--batch-docs", type=int, default=2,
                    help="ingest.batch_docs of the killed runs (default 2: a commit every two files, so writes "
                         "span the run and a kill lands between or inside commits)")
    ap.add_argument("--after-write", type=float, default=None,
                    help="kill delays uniform in [0, this] seconds after the run's first write to the store "
                         "(default: the learnt delay range; 0 disables the arming)")
    ap.add_argument("--output", type=Path, default=None, help="results JSON (default bench/results/kill-ingest-<date>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args(argv)
    mem = int(args.mem_gb * 2**30)
    out_path = args.output or ROOT / "bench" / "results" / f"kill-ingest-{time.strftime('%Y-%m-%d-%H%M')}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ragline-kill-")).resolve()
    versions, states = plan(args.seed, args.trials)

    # every version the trials will write, indexed from scratch (ten trials' worth at a time)
    expected: dict[str, Counter] = defaultdict(Counter)
    clean_info = {"versions": 0, "chunks": 0, "seconds": 0.0}
    if not clean_build(versions, states, range(0, min(len(states), CLEAN_BLOCK + 1)), work, mem, expected, clean_info):
        return 2

    corpus = work / "corpus"
    corpus.mkdir()
    apply(corpus, {}, states[0]["state"], versions)
    home = work / "home"
    env = cli_env(home)
    kill_env = {**env, "RAGLINE_INGEST__BATCH_DOCS": str(args.batch_docs)}
    r = run_capped([str(RAGLINE), "ingest", str(corpus), "--json"], env, 1200.0, mem)
    if r.rc != 0:
        log(f"first ingest failed: rc={r.rc} {tail(r.stderr)}")
        return 2
    # kill delays: uniform in [0.4, 1.1] x D, D the median length of an uninterrupted incremental
    # ingest, learnt from trials whose ingest finished before its kill and from re-ingests that had to
    # do all of a trial's changes (the kill came before any work); until then, the first ingest's
    # length. Below 0.4 D most kills land while the CLI still imports and loads the model.
    typical = args.max_delay or r.seconds
    whole_runs: list[float] = []
    log(f"first ingest of {CORPUS} files: {r.seconds:.1f}s")

    fails = Counter()
    totals = Counter()
    trials: list[dict] = []
    problems: list[dict] = []
    krng = random.Random(args.seed + 1)
    for t in range(1, len(states)):
        if args.max_seconds and time.perf_counter() - t_start > args.max_seconds:
            log(f"time budget reached after {t - 1} trials")
            break
        if any(k not in expected for k in states[t]["state"].values()):
            if not clean_build(versions, states, range(t, min(len(states), t + CLEAN_BLOCK)), work, mem, expected,
                               clean_info):
                return 2
        t0 = time.perf_counter()
        old, new = states[t - 1]["state"], states[t]["state"]
        ops = states[t]["ops"]
        apply(corpus, old, new, versions)
        armed = args.after_write != 0
        if args.max_delay:
            delay = krng.uniform(0, args.max_delay)
        elif armed:  # from the first commit: writes take the last part of a run
            delay = krng.uniform(0, args.after_write or 0.5 * typical)
        else:
            delay = krng.uniform(0.4 * typical, 1.1 * typical)
        marks = {"start": time.perf_counter()}
        finished, ran, krc, orphans = kill_after([str(RAGLINE), "ingest", str(corpus), "--json"], kill_env, delay,
                                                 home / "lance" if armed else None)
        if finished and not args.max_delay:
            whole_runs.append(ran)
            typical = sorted(whole_runs)[len(whole_runs) // 2]
        row: dict = {"trial": t, "changed": {k: len(v) for k, v in ops.items()}, "delay_s": round(delay, 2),
                     "finished_before_kill": finished, "exit_if_finished": krc, "orphans": orphans}
        if orphans:
            fails["orphan_processes_after_kill"] += orphans
            problems.append({"trial": t, "what": "processes outlived the killed ingest", "count": orphans})

        marks["killed"] = time.perf_counter()
        # right after the kill: queries answer, and each document is its old or its new version
        chunks, lr = list_chunks(home, 300.0, mem)
        st, sr = status(home, 300.0, mem)
        marker_name = krng.choice(sorted(set(old) | set(new)))
        mkey = new.get(marker_name) or old[marker_name]
        q = run_capped([str(RAGLINE), "query", versions[mkey][1], "--mode", "sparse", "-k", "3", "--json"], env, 300.0, mem)
        errs = [what for what, ok in (("listing", chunks is not None), ("status", st is not None),
                                      ("query", q.json() is not None)) if not ok]
        totals["queries_after_kill"] += 3
        if errs:
            fails["query_error_after_kill"] += len(errs)
            problems.append({"trial": t, "what": "query after kill failed", "which": errs,
                             "stderr": [tail(x.stderr, 400) for x in (lr, sr, q)]})
        violations = []
        if chunks is not None:
            got = by_name(chunks, corpus)
            for name in sorted(set(got) | set(old) | set(new)):
                allowed = [expected[k] for k in (old.get(name), new.get(name)) if k]
                have = got.get(name)
                if have is None:
                    if name in old and name in new:  # modified or unchanged: must still be there
                        violations.append({"file": name, "why": "missing"})
                    continue
                if not any(have == a for a in allowed):
                    why = "not a file of the corpus" if not allowed else "neither the old nor the new version"
                    violations.append({"file": name, "why": why, "chunks": sum(have.values()),
                                       "allowed": [sum(a.values()) for a in allowed]})
            if st is not None and (st.get("chunks") != len(chunks) or st.get("documents") != len(got)):
                fails["status_vs_listing_after_kill"] += 1
                problems.append({"trial": t, "what": "status vs listing after kill",
                                 "status": [st.get("documents"), st.get("chunks")], "listing": [len(got), len(chunks)]})
            row["after_kill"] = {"documents": len(got), "chunks": len(chunks)}
        if violations:
            fails["document_not_old_or_new"] += len(violations)
            problems.append({"trial": t, "what": "after kill: document not its old or new version",
                             "violations": violations[:10]})
        row["after_kill_violations"] = len(violations)

        marks["checked_after_kill"] = time.perf_counter()
        # finish the ingest, then the index must equal a clean build of the same files
        r = run_capped([str(RAGLINE), "ingest", str(corpus), "--json"], env, 1200.0, mem)
        rep = r.json()
        row["reingest"] = {"rc": r.rc, "seconds": round(r.seconds, 1), "peak_rss_mb": round(r.peak_rss / MB),
                           **{k: (rep or {}).get(k) for k in ("added", "replaced", "skipped", "removed")}}
        if rep is not None and not finished and not args.max_delay and (
                sum(rep.get(k) or 0 for k in ("added", "replaced", "removed")) >= sum(row["changed"].values())):
            whole_runs.append(r.seconds)  # the killed run had done nothing: this one was the whole ingest
            typical = sorted(whole_runs)[len(whole_runs) // 2]
        row["work_left_for_reingest"] = None if rep is None else sum(rep.get(k) or 0 for k in ("added", "replaced", "removed"))
        if r.rc != 0 or rep is None:
            fails["reingest_failed"] += 1
            problems.append({"trial": t, "what": "re-ingest failed", "rc": r.rc, "cap": r.cap,
                             "stderr": tail(r.stderr, 800), "failed": (rep or {}).get("failed")})
        marks["reingested"] = time.perf_counter()
        chunks, lr = list_chunks(home, 300.0, mem)
        st, sr = status(home, 300.0, mem)
        want_docs = len(new)
        want_chunks = sum(sum(expected[k].values()) for k in new.values())
        stale = dup = lost = 0
        if chunks is None or st is None:
            fails["query_error_after_reingest"] += 1
            problems.append({"trial": t, "what": "listing/status after re-ingest failed",
                             "stderr": [tail(x.stderr, 400) for x in (lr, sr)]})
        else:
            got = by_name(chunks, corpus)
            for name, have in got.items():
                if name not in new:  # a deleted file (or no file at all) still has chunks
                    stale += sum(have.values())
                    continue
                want = expected[new[name]]
                olds = expected[old[name]] if name in old else Counter()
                extra = have - want
                stale += sum((extra & olds).values())  # extra chunks of the file's old version
                dup += sum((extra - olds).values())
                lost += sum((want - have).values())
            for name in new:
                if name not in got:
                    lost += sum(expected[new[name]].values())
            counts_ok = (st.get("documents") == want_docs and st.get("chunks") == want_chunks
                         and len(got) == want_docs and len(chunks) == want_chunks)
            row["final"] = {"documents": st.get("documents"), "chunks": st.get("chunks"), "expected_documents": want_docs,
                            "expected_chunks": want_chunks, "stale": stale, "duplicated": dup, "lost": lost}
            if not counts_ok:
                fails["counts_differ_from_clean_build"] += 1
                problems.append({"trial": t, "what": "counts differ from a clean build", **row["final"],
                                 "listing": [len(got), len(chunks)]})
            fails["stale_chunks"] += stale
            fails["duplicated_chunks"] += dup
            fails["lost_chunks"] += lost
            if stale or dup or lost:
                problems.append({"trial": t, "what": "stale/duplicated/lost chunks", "stale": stale, "dup": dup, "lost": lost})

        marks["checked_final"] = time.perf_counter()
        # every marker sentence finds its file first
        qa = work / "markers.jsonl"
        qa.write_text("".join(json.dumps({"id": name, "question": versions[key][1],
                                          "relevant_ids": [str(corpus / name)]}) + "\n"
                              for name, key in sorted(new.items())), "utf-8")
        ev_out = work / "markers-out.json"
        ev_out.unlink(missing_ok=True)
        e = run_capped([str(RAGLINE), "eval", "answers", str(qa), "--answerer", "extractive", "-k", "1",
                        "--output", str(ev_out), "--json"], env, 1200.0, mem)
        try:
            items = json.loads(ev_out.read_text("utf-8"))["items"]
        except (OSError, ValueError, KeyError):
            items = None
        if items is None:
            fails["marker_queries_failed"] += 1
            problems.append({"trial": t, "what": "marker queries failed", "rc": e.rc, "stderr": tail(e.stderr, 800)})
        else:
            not_first = [it["id"] for it in items
                         if not it["ranked_documents"] or it["ranked_documents"][0] != str(corpus / it["id"])]
            totals["markers_checked"] += len(items)
            fails["marker_not_rank1"] += len(not_first)
            row["markers"] = {"checked": len(items), "not_rank1": len(not_first)}
            if not_first:
                problems.append({"trial": t, "what": "markers not at rank 1", "files": not_first[:10]})
        marks["markers"] = time.perf_counter()
        steps = list(marks)
        row["step_seconds"] = {b: round(marks[b] - marks[a], 1) for a, b in zip(steps, steps[1:])}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["load1"] = round(os.getloadavg()[0], 1)
        trials.append(row)
        totals["trials"] += 1
        totals["killed_mid_run"] += int(not finished)
        log(f"trial {t}/{len(states) - 1}: {sum(row['changed'].values())} changes, kill at {delay:.1f}s"
            + (" (had finished)" if finished else "")
            + f", after kill {row.get('after_kill')}, violations {len(violations)}, re-ingest rc {r.rc} "
            f"{row['reingest']}, final {row.get('final')}, markers {row.get('markers')}, {row['seconds']:.0f}s "
            f"{row['step_seconds']}")
        write_results(out_path, args, clean_info, totals, fails, trials, problems, t_start, typical)

    # the last corpus rebuilt from scratch, compared whole with the index the trials left
    done = totals["trials"]
    final_state = states[done]["state"]
    fresh = work / "fresh_home"
    r = run_capped([str(RAGLINE), "ingest", str(corpus), "--json"], cli_env(fresh), 1200.0, mem)
    a, _ = list_chunks(fresh, 300.0, mem)
    b, _ = list_chunks(home, 300.0, mem)
    final_check = {"rc": r.rc, "files": len(final_state)}
    if a is not None and b is not None:
        same = by_name(a, corpus) == by_name(b, corpus)
        final_check.update({"fresh_chunks": len(a), "campaign_chunks": len(b), "identical": same})
        if not same:
            fails["final_rebuild_differs"] += 1
    else:
        final_check["error"] = "listing failed"
        fails["final_rebuild_differs"] += 1
    log(f"final rebuild check: {final_check}")
    data = write_results(out_path, args, clean_info, totals, fails, trials, problems, t_start, typical, final_check)
    summary = human_summary(data)
    print(summary)
    out_path.with_suffix(".txt").write_text(summary, "utf-8")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


CHECKS = ["query_error_after_kill", "document_not_old_or_new", "status_vs_listing_after_kill", "reingest_failed",
          "query_error_after_reingest", "counts_differ_from_clean_build", "stale_chunks", "duplicated_chunks",
          "lost_chunks", "marker_queries_failed", "marker_not_rank1", "orphan_processes_after_kill",
          "final_rebuild_differs"]


def write_results(path: Path, args, clean_info: dict, totals: Counter, fails: Counter, trials: list[dict],
                  problems: list[dict], t_start: float, typical: float, final_check: dict | None = None) -> dict:
    data = {
        "campaign": "kill_ingest", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": {"trials": args.trials, "seed": args.seed, "corpus": CORPUS, "changes_per_trial": [11, 25],
                     "typical_ingest_s_last": round(typical, 1), "mem_gb": args.mem_gb},
        "code": code_state(), "clean_build": clean_info, "seconds": round(time.perf_counter() - t_start, 1),
        "totals": dict(totals), "failures": {k: fails.get(k, 0) for k in CHECKS}, "final_rebuild": final_check,
        "trials": trials, "problems": problems[:300], "problems_total": len(problems),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), "utf-8")
    os.replace(tmp, path)
    return data


def human_summary(d: dict) -> str:
    t, f = d["totals"], d["failures"]
    idle = sum(1 for r in d["trials"] if not r["finished_before_kill"]
               and r.get("work_left_for_reingest") == sum(r["changed"].values()))
    lines = [f"kill_ingest: {t.get('trials', 0)} trials ({t.get('killed_mid_run', 0)} killed before finishing, "
             f"{idle} of them before any write), "
             f"{d['seconds'] / 60:.1f} min, seed {d['settings']['seed']}",
             f"  markers checked {t.get('markers_checked', 0)}, queries right after a kill {t.get('queries_after_kill', 0)}",
             "  failures: " + ", ".join(f"{k} {v}" for k, v in f.items()),
             f"  final rebuild: {d.get('final_rebuild')}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
