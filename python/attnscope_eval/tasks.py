"""The offline task suite of `attnscope eval` (docs/eval.md describes each task and its scoring).

Every prompt is built in token space from text that ships with Debian (the licence texts of
base-files, /usr/share/common-licenses, through data/capture/prompts/build_prompts.py), seeded
by (task, length, sample index, --seed): the same command gives the same token ids on any
machine with the same tokenizer. A sample is

    ids          the prompt, exactly `length` token ids (chat template and answer prefix included)
    answer       the known answer (a list of strings for tasks with several)
    scoring      "contains" (every answer string occurs in the generation up to its first blank
                 line), "exact" (that text, stripped, equals the answer), or "nll" (perplexity task:
                 no answer, the metric is the NLL of `continuation`)
    max_new      decode steps allowed
    continuation token ids scored by teacher forcing (perplexity task only)
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _find_prompts_dir() -> str:
    env = os.environ.get("ATTNSCOPE_CAPTURE_DIR")
    cands = ([env] if env else []) + [os.path.join(HERE, "..", "..", "data", "capture")]
    for c in cands:
        if c and os.path.isfile(os.path.join(c, "attnscope_capture.py")):
            return os.path.abspath(c)
    raise ImportError("data/capture/attnscope_capture.py not found (set ATTNSCOPE_CAPTURE_DIR)")


CAPTURE_DIR = _find_prompts_dir()
sys.path.insert(0, os.path.join(CAPTURE_DIR, "prompts"))
import build_prompts as bp  # noqa: E402


class TaskError(Exception):
    """Bad task input: reported as one line, exit status 2."""


BUILTIN = ("niah-single", "niah-multikey", "niah-multivalue", "vartrack", "twohop", "cwe",
           "ppl")
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
PPL_CONT = 16  # tokens of held-out continuation scored in the perplexity task

# Words for keys, variable names and the common-word task (no external word list needed).
WORDS = ("amber anchor apple arrow aspen autumn badger bamboo banner basalt beacon birch bishop "
         "blossom bramble breeze bronze cactus canyon carbon castle cedar cherry cinder citrus "
         "clover cobalt comet copper coral cotton crystal cypress dagger dahlia delta desert "
         "dolphin dragon ember falcon feather fennel fern fjord flint forest fossil garnet "
         "ginger glacier granite harbor hazel heron hickory indigo iris island ivory jasmine "
         "juniper kettle lagoon lantern lemon lilac lotus magnet maple marble meadow mercury "
         "meteor mint mirror nectar nickel oasis obsidian olive onyx orchid otter oyster "
         "panther pebble pepper pigeon pillar pine planet plum prairie quartz quill raven "
         "reef ribbon river robin saffron salmon sapphire scarlet shadow silver sparrow "
         "spruce summit sunset thistle thunder timber topaz tulip tundra velvet violet walnut "
         "willow winter zephyr").split()
TOWNS = ("Brindlemoor Castavell Dunmarrow Elsworth Farrowdale Glenhallow Harrowgate Ivybridge "
         "Kestrelford Larkspur Marrowick Northwold Oakhaven Pellingham Quarrybrook Ravensmere "
         "Saltmarsh Thornbury Umberleigh Wrenfield").split()
PEOPLE = ("Marta Olsen|Tomas Reyes|Ingrid Halvorsen|Dmitri Volkov|Amara Nwosu|Lucia Ferreira|"
          "Kenji Watanabe|Priya Raman|Oskar Lindqvist|Nadia Haddad|Felix Brandt|Sofia Marchetti"
          ).split("|")
OBJECTS = ("red locker|brass chest|oak cabinet|north gate|blue safe|iron vault|cellar door|"
           "tower clock|garden shed|glass case").split("|")


class Tok:
    """Token-space helpers around a tokenizer (the same conventions as build_prompts)."""

    def __init__(self, tok, chat: str = "auto"):
        self.tok = tok
        self.encode = lambda t: tok(t, add_special_tokens=False).input_ids  # noqa: E731
        with_special = tok("x").input_ids
        plain = self.encode("x")
        self.bos = (with_special[:len(with_special) - len(plain)]
                    if with_special[-len(plain):] == plain else [])
        try:
            self.pre, self.post = bp.chat_wrapper(tok, chat)
        except bp.PromptError as e:
            raise TaskError(str(e))
        if self.pre and self.bos and self.encode(self.pre)[:len(self.bos)] == self.bos:
            self.bos = []
        self.eos = tok.eos_token_id

    def frame(self) -> tuple[list[int], list[int]]:
        """(ids before the user message, ids after it up to the assistant's turn)."""
        return (self.bos + (self.encode(self.pre) if self.pre else []),
                self.encode(self.post) if self.post else [])


_PARAS_CACHE: list[str] = []


def _paragraphs() -> list[str]:
    if not _PARAS_CACHE:
        try:
            for _, text in bp.source_texts("document"):
                _PARAS_CACHE.extend(bp._paragraphs(text))
        except bp.PromptError as e:
            raise TaskError(str(e))
    return _PARAS_CACHE


def _haystack(tk: Tok, rng: random.Random, n_tokens: int, facts: list[tuple[float, list[int]]]):
    """n_tokens ids of licence paragraphs starting at a seeded paragraph, with each fact (depth in
    [0, 1], ids) inserted between paragraphs at that fraction of the filler. Returns ids and the
    token spans of the facts."""
    fact_len = sum(len(f) for _, f in facts)
    filler_budget = n_tokens - fact_len
    if filler_budget < 0:
        raise TaskError(f"prompt does not fit: the planted facts alone take {fact_len} tokens, "
                        f"more than the {n_tokens} left for the document")
    paras = _paragraphs()
    start = rng.randrange(len(paras))
    filler: list[list[int]] = []
    got = 0
    i = start
    while got < filler_budget:
        p = tk.encode(paras[i % len(paras)])
        filler.append(p[:filler_budget - got])
        got += len(filler[-1])
        i += 1
    # insertion points: paragraph boundaries nearest to depth * filler_budget
    bounds = [0]
    for p in filler:
        bounds.append(bounds[-1] + len(p))
    order = sorted(range(len(facts)), key=lambda j: facts[j][0])
    at: dict[int, list[int]] = {}
    for j in order:
        want = facts[j][0] * filler_budget
        b = min(range(len(bounds)), key=lambda x: abs(bounds[x] - want))
        at.setdefault(b, []).append(j)
    ids: list[int] = []
    spans = [None] * len(facts)
    for b in range(len(filler) + 1):
        for j in at.get(b, []):
            spans[j] = (len(ids), len(ids) + len(facts[j][1]))
            ids.extend(facts[j][1])
        if b < len(filler):
            ids.extend(filler[b])
    assert len(ids) == n_tokens
    return ids, spans


def _assemble(tk: Tok, length: int, head: str, tail: str, answer_prefix: str, rng, facts):
    pre, post = tk.frame()
    h, t = tk.encode(head), tk.encode(tail)
    a = tk.encode(answer_prefix) if answer_prefix else []
    body = length - len(pre) - len(h) - len(t) - len(post) - len(a)
    if body < 16:
        raise TaskError(f"prompt does not fit: length {length} leaves {body} tokens for the "
                        f"document after the question and template")
    hay, spans = _haystack(tk, rng, body, facts)
    off = len(pre) + len(h)
    ids = pre + h + hay + t + post + a
    assert len(ids) == length
    return ids, [(s + off, e + off) for s, e in spans]


def _number(rng) -> str:
    return str(rng.randrange(1000000, 9999999))


def _key(rng) -> str:
    return f"{rng.choice(WORDS)}-{rng.choice(WORDS)}"


NEEDLE_HEAD = "Read the following document carefully. Some special magic numbers are hidden in it.\n\n"


def build_sample(task: str, length: int, index: int, tk: Tok, seed: int = 0) -> dict:
    """One sample of a built-in task. Deterministic in (task, length, index, seed)."""
    h = hashlib.sha256(f"{task}|{length}|{index}|{seed}".encode()).digest()
    rng = random.Random(int.from_bytes(h[:8], "little"))
    depth = DEPTHS[index % len(DEPTHS)]
    info = {"depth": depth}
    enc = tk.encode
    if task in ("niah-single", "niah-multikey", "niah-multivalue"):
        key, val = _key(rng), _number(rng)
        facts = [(depth, enc(f"One of the special magic numbers for {key} is: {val}.\n\n"))]
        answer = [val]
        if task == "niah-multikey":  # three distractor keys with their own numbers
            keys = {key}
            while len(keys) < 4:
                keys.add(_key(rng))
            for k in sorted(keys - {key}):
                facts.append((rng.random(),
                              enc(f"One of the special magic numbers for {k} is: {_number(rng)}.\n\n")))
        if task == "niah-multivalue":  # three more values for the same key, all asked for
            vals = [val]
            while len(vals) < 4:
                v = _number(rng)
                if v not in vals:
                    vals.append(v)
            facts = [(depth if j == 0 else rng.random(),
                      enc(f"One of the special magic numbers for {key} is: {v}.\n\n"))
                     for j, v in enumerate(vals)]
            answer = vals
            tail = (f"\n\n---\nQuestion: What are all the special magic numbers for {key} "
                    f"mentioned in the document? List all four.")
            prefix = f"The special magic numbers for {key} are:"
        else:
            tail = (f"\n\n---\nQuestion: What is the special magic number for {key} mentioned "
                    f"in the document?")
            prefix = f"The special magic number for {key} is:"
        ids, spans = _assemble(tk, length, NEEDLE_HEAD, tail, prefix, rng, facts)
        return dict(ids=ids, answer=answer, scoring="contains",
                    max_new=40 if task == "niah-multivalue" else 12,
                    spans=spans, info=info)
    if task == "vartrack":  # a chain of five assignments spread over the document
        names = rng.sample([w.upper() for w in WORDS if len(w) <= 6], 5)
        val = str(rng.randrange(10000, 99999))
        chain = [f"VAR {names[0]} = {val}"] + [f"VAR {names[i]} = {names[i - 1]}"
                                                for i in range(1, 5)]
        ds = sorted(rng.random() for _ in range(5))
        ds = [depth * 0.2 + d * 0.8 for d in ds]  # in order, starting near the sample's depth
        facts = [(d, enc(c + " .\n\n")) for d, c in zip(ds, chain)]
        tail = (f"\n\n---\nQuestion: The document contains variable assignments (VAR name = "
                f"value). Following the chain of assignments, what number is the variable "
                f"{names[4]} equal to?")
        prefix = f"The variable {names[4]} is equal to"
        ids, spans = _assemble(tk, length,
                               "Read the following document. It contains variable assignments.\n\n",
                               tail, prefix, rng, facts)
        return dict(ids=ids, answer=[val], scoring="contains", max_new=10, spans=spans, info=info)
    if task == "twohop":
        person, obj, town = rng.choice(PEOPLE), rng.choice(OBJECTS), rng.choice(TOWNS)
        d2 = (depth + 0.5) % 1.0
        facts = [(depth, enc(f"Note: the key to the {obj} is held by {person}.\n\n")),
                 (d2, enc(f"Note: {person} lives in the town of {town}.\n\n"))]
        tail = (f"\n\n---\nQuestion: In which town does the person who holds the key to the "
                f"{obj} live?")
        prefix = f"The person who holds the key to the {obj} lives in the town of"
        ids, spans = _assemble(tk, length, "Read the following document. It contains notes.\n\n",
                               tail, prefix, rng, facts)
        return dict(ids=ids, answer=[town], scoring="contains", max_new=8, spans=spans,
                    info=info)
    if task == "cwe":  # common-word extraction: 3 words repeated 30x among others 3x (RULER)
        vocab = rng.sample(WORDS, len(WORDS))
        common, rare = vocab[:3], vocab[3:]
        pre, post = tk.frame()
        head = enc("Below is a numbered list of words. Some words appear much more often than "
                   "the others.\n\n")
        tail = enc("\n\n---\nQuestion: What are the three most common words in the list above?")
        prefix = enc("The three most common words in the list are:")
        budget = length - len(pre) - len(head) - len(tail) - len(post) - len(prefix)
        words = []
        n_rare = 0
        body: list[int] = []
        # grow the list in rounds of (3 common x 10, 10 rare x 1) until it fills the budget
        while True:
            chunk = common * 10 + [rare[(n_rare + j) % len(rare)] for j in range(10)]
            n_rare += 10
            rng.shuffle(chunk)
            cand = words + chunk
            cb = enc("".join(f"{i + 1}. {w}\n" for i, w in enumerate(cand)))
            if len(cb) > budget:
                break
            words, body = cand, cb
        if not words:
            raise TaskError(f"prompt does not fit: length {length} is too short for cwe")
        body = body + enc("\n" * 1)  # pad with licence text to the exact length
        pad = budget - len(body)
        filler = _haystack(tk, rng, pad, [])[0] if pad > 0 else []
        ids = pre + head + body[:budget] + filler + tail + post + prefix
        if len(ids) != length:
            raise TaskError("cwe: internal length mismatch")
        return dict(ids=ids, answer=common, scoring="contains", max_new=16, spans=[],
                    info={"depth": None, "list_words": len(words)})
    if task == "ppl":  # licence text, then a held-out continuation scored by teacher forcing
        cont_len = PPL_CONT
        ids, _ = _haystack(tk, rng, length + cont_len, [])
        return dict(ids=ids[:length], continuation=ids[length:], answer=None, scoring="nll",
                    max_new=0, spans=[], info={"depth": None})
    raise TaskError(f"unknown task '{task}' (built-in: {', '.join(BUILTIN)}, or a .jsonl file)")


def load_jsonl(path: str, tk: Tok) -> list[dict]:
    """User tasks: one JSON object per line with `prompt` (text; wrapped in the chat template
    when the model has one), `answer` (string or list of strings), optional `scoring`
    (contains | exact, default contains), `max_new_tokens` (default 16), `answer_prefix`
    (text put at the start of the assistant's turn)."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: cannot read task file ({e})")
    pre, post = tk.frame()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}:{i + 1}: not JSON ({e.msg})")
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) \
                or "answer" not in obj:
            raise TaskError(f"{path}:{i + 1}: need an object with a string 'prompt' and 'answer'")
        ans = obj["answer"]
        ans = [ans] if isinstance(ans, str) else ans
        if not isinstance(ans, list) or not ans or not all(isinstance(a, str) for a in ans):
            raise TaskError(f"{path}:{i + 1}: 'answer' must be a string or a list of strings")
        scoring = obj.get("scoring", "contains")
        if scoring not in ("contains", "exact"):
            raise TaskError(f"{path}:{i + 1}: scoring '{scoring}' (contains or exact)")
        mx = obj.get("max_new_tokens", 16)
        if not isinstance(mx, int) or not 1 <= mx <= 512:
            raise TaskError(f"{path}:{i + 1}: max_new_tokens must be an integer in 1..512")
        prefix = obj.get("answer_prefix", "")
        ids = pre + tk.encode(obj["prompt"]) + post + (tk.encode(prefix) if prefix else [])
        out.append(dict(ids=ids, answer=ans, scoring=scoring, max_new=mx, spans=[],
                        info={"depth": None, "line": i + 1}))
    if not out:
        raise TaskError(f"{path}: no tasks in the file")
    return out


def answer_text(text: str) -> str:
    """The generation up to its first blank line, stripped (what is scored)."""
    return text.strip().split("\n\n", 1)[0].strip()


def score(text: str, answer: list[str], scoring: str) -> bool:
    line = answer_text(text)
    if scoring == "exact":
        return line == answer[0].strip()
    return all(a in line for a in answer)
