"""Deterministic prompt builders for attnscope captures (the paper's four task families).

Each builder assembles a prompt of exactly ``n_tokens`` token ids from text that ships with
every Debian machine of this project (licence texts from base-files, zlib's example C sources
from zlib1g-dev), so the same command gives the same ids on any machine with the same
tokenizer. Work is done in token space: head + body + tail (+ the chat template around them),
where the body is haystack paragraphs, each tokenised on its own, truncated to the exact budget,
with planted facts inserted as whole paragraphs at fixed fractional depths.

Families
  document  long natural-language document (licences), then a summarisation question
  needle    needle-in-a-haystack: one fact planted in the licence text, asked for at the end
  multihop  three chained facts planted far apart in the licence text, a 3-hop question
  code      C source (zlib examples), then a question about one function

Usage as a script (prints the prompt text, for looking at it):
  python3 build_prompts.py needle --tokens 2048 --model DIR_OR_GGUF
"""
from __future__ import annotations

import hashlib
import os

LICENCE_DIR = "/usr/share/common-licenses"
# The long natural-language haystack: GPL-3 first (35 kB, about 8k tokens), then more licences
# so that 32k-token contexts need no repetition.
LICENCES = ["GPL-3", "GFDL-1.3", "LGPL-2.1", "MPL-2.0", "Apache-2.0", "GPL-2", "MPL-1.1",
            "LGPL-2", "GFDL-1.2", "GPL-1", "CC0-1.0", "Artistic", "BSD"]
CODE_DIR = "/usr/share/doc/zlib1g-dev/examples"
CODE_FILES = ["zpipe.c", "gun.c", "zran.c", "gzlog.c", "enough.c", "infcover.c", "gzappend.c",
              "gzjoin.c", "fitblk.c", "gznorm.c", "minigzip.c", "example.c"]

FAMILIES = ("document", "needle", "multihop", "code")

NEEDLE = ("Important note: the secret access code for the Hollow Creek archive is "
          "7-4-1-9-ORCHID. Keep it safe.")
NEEDLE_DEPTH = 0.4
# Chained facts, planted out of chain order so that answering needs all three hops.
HOPS = [
    (0.2, "Archivist's note: the Marlowe Institute is located in the city of Tessaly."),
    (0.5, "Archivist's note: the city of Tessaly lies on the banks of the river Quill."),
    (0.8, "Archivist's note: the original signed copy of this licence is kept in the vault "
          "of the Marlowe Institute."),
]

HEADS = {
    "document": "Read the following document carefully.\n\n",
    "needle": "Read the following document carefully. It contains one important note.\n\n",
    "multihop": "Read the following document carefully. It contains several archivist's notes.\n\n",
    "code": "Here is some C source code.\n\n",
}
TAILS = {
    "document": ("\n\n---\nQuestion: Summarize, in three sentences, the main obligations that the "
                 "text above places on someone who redistributes the work.\nAnswer:"),
    "needle": ("\n\n---\nQuestion: What is the secret access code for the Hollow Creek archive? "
               "Answer with the exact code from the text.\nAnswer:"),
    "multihop": ("\n\n---\nQuestion: On the banks of which river is the original signed copy of "
                 "this licence kept? Use the archivist's notes and reason step by step.\nAnswer:"),
    "code": ("\n\n---\nQuestion: In the code above, what does the function inf() in zpipe.c "
             "return when the compressed input data is invalid or incomplete?\nAnswer:"),
}


class PromptError(Exception):
    pass


def _read(path: str) -> str:
    try:
        with open(path, "r", encoding="utf-8", errors="strict") as f:
            return f.read()
    except OSError as e:
        raise PromptError(f"{path}: cannot read prompt source ({e.strerror}); "
                          "it ships with Debian's base-files / zlib1g-dev") from e


def source_texts(family: str) -> list[tuple[str, str]]:
    """(name, text) of the haystack sources of a family, in order."""
    if family == "code":
        out = []
        for name in CODE_FILES:
            text = _read(os.path.join(CODE_DIR, name))
            out.append((name, f"/* ===== file: {name} ===== */\n" + text))
        return out
    return [(name, _read(os.path.join(LICENCE_DIR, name))) for name in LICENCES]


def _paragraphs(text: str) -> list[str]:
    paras = [p.strip("\n") for p in text.split("\n\n")]
    return [p + "\n\n" for p in paras if p.strip()]


def chat_wrapper(tokenizer, mode: str = "auto") -> tuple[str, str]:
    """(prefix, suffix) text that the tokenizer's chat template puts around one user message,
    ending with the assistant's turn; ("", "") when off or there is no template."""
    if mode == "off" or not getattr(tokenizer, "chat_template", None):
        if mode == "on":
            raise PromptError("--chat on: this tokenizer has no chat template")
        return "", ""
    sentinel = "\u2063ATTNSCOPE_PROMPT\u2063"
    text = tokenizer.apply_chat_template([{"role": "user", "content": sentinel}],
                                         add_generation_prompt=True, tokenize=False)
    if text.count(sentinel) != 1:
        raise PromptError("chat template does not contain the user message exactly once")
    pre, post = text.split(sentinel)
    return pre, post


def build(family: str, n_tokens: int, encode, prefix: str = "", suffix: str = "",
          bos_ids: list[int] | None = None) -> tuple[list[int], dict]:
    """Build exactly n_tokens ids. encode(text) -> list of ids without special tokens added
    (special tokens written as text, e.g. in a chat template prefix, are recognised).
    Returns (ids, info) where info holds string metadata (prompt name, planted-fact spans)."""
    if family not in FAMILIES:
        raise PromptError(f"unknown prompt family '{family}' (one of {', '.join(FAMILIES)})")
    bos = list(bos_ids or [])
    pre_ids = bos + (encode(prefix) if prefix else [])
    head_ids = encode(HEADS[family])
    tail_ids = encode(TAILS[family])
    post_ids = encode(suffix) if suffix else []
    budget = n_tokens - len(pre_ids) - len(head_ids) - len(tail_ids) - len(post_ids)
    facts = []
    if family == "needle":
        facts = [(NEEDLE_DEPTH, NEEDLE)]
    elif family == "multihop":
        facts = list(HOPS)
    fact_ids = [(depth, encode(_paragraphs(text)[0])) for depth, text in facts]
    filler_budget = budget - sum(len(ids) for _, ids in fact_ids)
    if filler_budget < 64:
        raise PromptError(f"{n_tokens} tokens is too short for the '{family}' prompt "
                          f"(head, tail, template and facts need {n_tokens - filler_budget})")

    # Haystack paragraphs, cycling through the sources if the context is longer than all of them.
    paras: list[list[int]] = []
    total = 0
    sources = source_texts(family)
    used = []
    rounds = 0
    while total < filler_budget:
        for name, text in sources:
            if total >= filler_budget:
                break
            used.append(name)
            for p in _paragraphs(text):
                ids = encode(p)
                paras.append(ids)
                total += len(ids)
                if total >= filler_budget:
                    break
        rounds += 1
    # Insert each fact at the last paragraph boundary at or before depth * filler_budget.
    boundaries = [0]
    for ids in paras:
        boundaries.append(boundaries[-1] + len(ids))
    inserts = {}
    for depth, ids in fact_ids:
        target = depth * filler_budget
        b = max(i for i, pos in enumerate(boundaries) if pos <= target)
        inserts.setdefault(b, []).append(ids)
    body: list[int] = []
    spans = []
    base = len(pre_ids) + len(head_ids)
    filler_used = 0
    for i in range(len(paras) + 1):
        for ids in inserts.get(i, []):
            spans.append((base + len(body), base + len(body) + len(ids)))
            body.extend(ids)
        if i < len(paras):
            take = min(len(paras[i]), filler_budget - filler_used)
            if take <= 0:
                continue
            body.extend(paras[i][:take])
            filler_used += take
    ids = pre_ids + head_ids + body + tail_ids + post_ids
    assert len(ids) == n_tokens, (len(ids), n_tokens)
    info = {
        "prompt_name": f"{family}-{n_tokens}",
        "prompt_family": family,
        "prompt_sources": ",".join(dict.fromkeys(used)),
        "prompt_sources_sha256": hashlib.sha256(
            "".join(t for n, t in sources if n in used).encode()).hexdigest(),
        "prompt_haystack_rounds": str(rounds),
        "prompt_question": TAILS[family].strip().split("\n")[1],
        "prompt_chat_template": "true" if prefix or suffix else "false",
    }
    if spans:
        info["prompt_fact_spans"] = ",".join(f"{a}-{b}" for a, b in spans)
    return ids, info


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("family", choices=FAMILIES)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--model", required=True, help="model dir or .gguf file (for its tokenizer)")
    ap.add_argument("--chat", choices=("auto", "on", "off"), default="auto")
    a = ap.parse_args(argv)
    from transformers import AutoTokenizer
    if a.model.endswith(".gguf"):
        tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(a.model)),
                                            gguf_file=os.path.basename(a.model))
    else:
        tok = AutoTokenizer.from_pretrained(a.model)
    pre, post = chat_wrapper(tok, a.chat)
    ids, info = build(a.family, a.tokens, lambda t: tok(t, add_special_tokens=False).input_ids,
                      pre, post)
    print(tok.decode(ids))
    for k, v in info.items():
        print(f"# {k}: {v}")


if __name__ == "__main__":
    main()
