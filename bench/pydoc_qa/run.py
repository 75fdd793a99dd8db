"""Ask every question of bench/pydoc_qa/questions.jsonl of an index built from
Debian's Python tutorial and HOWTO pages, with the extractive answerer, and
write one JSON line per question (answer, citations, heading paths) for
judging by hand.

    python bench/pydoc_qa/run.py --home /tmp/pydoc-home --out bench/pydoc_qa/answers-after.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ragline.cli.common import engine_for, settings_for

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True, help="index directory built from the pages")
    ap.add_argument("--questions", type=Path, default=HERE / "questions.jsonl")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("-k", type=int, default=5, help="passages given to the answerer (the CLI default)")
    args = ap.parse_args()
    rag = engine_for(settings_for(args.home)).rag()
    with args.out.open("w", encoding="utf-8") as out:
        for line in args.questions.read_text(encoding="utf-8").splitlines():
            q = json.loads(line)
            request = rag.request(q["question"], k=args.k)
            answer = rag.answer(request, rag.retrieve(request))
            out.write(json.dumps({
                "id": q["id"], "question": q["question"], "answer": answer.text, "grounded": answer.grounded,
                "citations": [{"n": c.n, "source": Path(c.chunk.source).name,
                               "heading_path": list(c.heading_path or c.chunk.heading_path)}
                              for c in answer.citations]}, ensure_ascii=False) + "\n")
            print(q["id"], "|", answer.text[:150].replace("\n", " "))


if __name__ == "__main__":
    main()
