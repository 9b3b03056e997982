"""`attnscope eval`: task accuracy of a real model under sparse decode (docs/eval.md).

Usage: attnscope eval --model M -o eval.json [--tasks T,...] [--lengths 2k,4k] [--samples N]
       [--methods all|M,...] [--sparsities 2x,5x,...] [--eps E,...] [--eps-budget B]
       [--mode kv|q] [--dense-layers L,...] [--sinks S] [--page-size P] [--heavy-frac F]
       [--delta D] [--seed S] [--dtype f32|bf16|f64] [--chat auto|on|off] [--chunk C]
       [--threads N] [--perhead DIR [--perhead-samples K] [--perhead-layers L]
       [--perhead-t T] [--perhead-solved-only]] [--bench-reuse K] [--json|--csv] [--quiet]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import tempfile
import time

VERSION = os.environ.get("ATTNSCOPE_VERSION", "unknown")
DEFAULT_TASKS = "niah-single,niah-multikey,niah-multivalue,vartrack,twohop,cwe,ppl"
DEFAULT_SPARSITIES = "2x,5x,10x,20x,50x,100x"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_args(argv):
    ap = _Parser(prog="attnscope eval", description=__doc__.split("\n")[0],
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True,
                    help="smollm2-135m-instruct, gemma3-270m, a .gguf file or a model directory")
    ap.add_argument("-o", "--output", required=True, help="eval JSON (journal: OUTPUT.journal)")
    ap.add_argument("--tasks", default=DEFAULT_TASKS,
                    help="built-in task names and/or .jsonl files (default: %(default)s)")
    ap.add_argument("--lengths", default="2k", help="prompt lengths in tokens (2048, 2k, ...)")
    ap.add_argument("--samples", type=int, default=10, help="samples per task and length")
    ap.add_argument("--first-sample", type=int, default=0, metavar="F",
                    help="run only sample indices F..samples-1 (add samples to a run; "
                         "the samples' prompts depend on their index alone)")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--sparsities", default=DEFAULT_SPARSITIES,
                    help="N/k values (10x or 10); 1x = every key (checks the pipeline)")
    ap.add_argument("--eps", default="",
                    help="topk-sample at target relative errors eps (sample size from the bound)")
    ap.add_argument("--eps-budget", type=float, default=0.02,
                    help="budget fraction of the eps configurations (heavy part: --heavy-frac)")
    ap.add_argument("--mode", choices=("kv", "q"), default="kv",
                    help="selection per kv head (shared by its query group) or per query head")
    ap.add_argument("--dense-layers", default="", help="layers kept dense (comma list)")
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--heavy-frac", type=float, default=0.5)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("f32", "bf16", "f64"), default="f32")
    ap.add_argument("--chat", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--device", default="cpu",
                    help="torch device of the model (cpu, cuda); the selection always runs in "
                         "libattnscope on the CPU")
    ap.add_argument("--chunk", type=int, default=512, help="prefill chunk (tokens)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared CPU more threads are slower)")
    ap.add_argument("--perhead", metavar="DIR", default=None,
                    help="also capture one trace per task and length into DIR and compare "
                         "`attnscope sparsity`'s per-head tolerance with the model-level one")
    ap.add_argument("--perhead-layers", default="spread:6",
                    help="layers captured for --perhead (all | full | spread:K | list)")
    ap.add_argument("--perhead-t", type=int, default=8,
                    help="decode queries per --perhead trace")
    ap.add_argument("--perhead-samples", type=int, default=1, metavar="K",
                    help="--perhead: capture samples 0..K-1 of each task and length; the "
                         "per-head tolerance is the median over every head of every sample")
    ap.add_argument("--perhead-solved-only", action="store_true",
                    help="--perhead: capture nothing for a task and length whose dense "
                         "accuracy is below 0.5 (its model-level tolerance measures nothing)")
    ap.add_argument("--bench-reuse", type=int, default=0, metavar="K",
                    help="only time the sweep of the first sample (8 decode steps per "
                         "configuration) against re-running the prompt for K of its "
                         "configurations (docs/benchmarks.md); no task records")
    ap.add_argument("--summarise-only", action="store_true",
                    help="run nothing: write OUTPUT from the records already in the journal")
    ap.add_argument("--shard", default=None, metavar="K/N",
                    help="run only the samples at positions K, K+N, K+2N, ... of the run's "
                         "ordered work (K in 0..N-1), to spread one run over N processes, each "
                         "with its own -o; --merge joins their journals")
    ap.add_argument("--merge", default=None, metavar="J,...",
                    help="run nothing: append the records of these journals (of the same run) "
                         "to OUTPUT.journal, skipping those already there, then summarise it")
    fmt = ap.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def parse_length(s: str) -> int:
    s = s.strip().lower()
    try:
        v = int(float(s[:-1]) * 1024) if s.endswith("k") else int(s)
    except ValueError:
        raise UsageError(f"--lengths: '{s}' is not a token count (2048 or 2k)")
    if v < 64:
        raise UsageError(f"--lengths: {v} is too short (at least 64 tokens)")
    return v


def parse_sparsity(s: str) -> float:
    t = s.strip().lower().rstrip("x")
    try:
        v = float(t)
    except ValueError:
        raise UsageError(f"--sparsities: '{s}' is not a sparsity (10x or 10)")
    if not math.isfinite(v) or v < 1:
        raise UsageError(f"--sparsities: '{s}' must be at least 1 (1x keeps every key)")
    return v


class Progress:
    def __init__(self, total: int, quiet: bool):
        self.total, self.done = total, 0
        self.on = not quiet and sys.stderr.isatty() and total > 0
        self.t0 = time.time()

    def step(self, label: str = ""):
        self.done += 1
        if not self.on:
            return
        el = time.time() - self.t0
        eta = el / self.done * (self.total - self.done)
        w = 30
        f = int(w * self.done / self.total)
        sys.stderr.write(f"\r[{'#' * f}{'.' * (w - f)}] {self.done}/{self.total} "
                         f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s {label[:30]:30s}")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def atomic_write(path: str, text: str):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".attnscope-eval-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def csv_text(records: list[dict]) -> str:
    import csv
    import io
    cols = ["record"]
    for r in records:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in records:
        row = []
        for c in cols:
            v = r.get(c)
            row.append("" if v is None else json.dumps(v) if isinstance(v, (list, dict, bool))
                       else v)
        w.writerow(row)
    return buf.getvalue()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv)
    except UsageError as e:
        print(f"attnscope eval: {e}", file=sys.stderr)
        return 2


def _main(argv) -> int:
    args = parse_args(argv)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise UsageError(f"needs PyTorch and transformers ({e.name} is not installed: "
                         f"pip install torch transformers gguf accelerate)")
    try:
        import attnscope
    except ImportError as e:
        raise UsageError(f"the attnscope Python binding is not importable ({e}); "
                         f"pip install ./python or set PYTHONPATH")
    from . import runner, stats
    from . import sparse as sp
    from . import tasks as tk

    methods = list(attnscope.METHODS) if args.methods == "all" else \
        [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in attnscope.METHODS:
            raise UsageError(f"--methods: unknown method '{m}' (one of "
                             f"{', '.join(attnscope.METHODS)})")
    sparsities = [parse_sparsity(s) for s in args.sparsities.split(",") if s.strip()]
    eps_list = []
    for s in [x for x in args.eps.split(",") if x.strip()]:
        try:
            e = float(s)
        except ValueError:
            raise UsageError(f"--eps: '{s}' is not a number")
        if not 0 < e < 1:
            raise UsageError(f"--eps: {e} must be in (0, 1)")
        eps_list.append(e)
    if eps_list and "topk-sample" not in attnscope.METHODS:
        raise UsageError("--eps needs the topk-sample method")
    if not 0 < args.eps_budget <= 1:
        raise UsageError("--eps-budget must be in (0, 1]")
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    if not 0 <= args.first_sample < args.samples:
        raise UsageError("--first-sample must be in 0..samples-1")
    if args.perhead_samples < 1 or args.perhead_t < 1:
        raise UsageError("--perhead-samples and --perhead-t must be at least 1")
    if not 0 < args.heavy_frac <= 1 or not 0 < args.delta < 1 or args.page_size < 1 \
            or args.sinks < 0 or args.chunk < 1:
        raise UsageError("bad --heavy-frac/--delta/--page-size/--sinks/--chunk")
    lengths = [parse_length(s) for s in args.lengths.split(",") if s.strip()]
    task_names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    inputs = []
    for t in task_names:
        if t.endswith(".jsonl"):
            if not os.path.isfile(t):
                raise UsageError(f"{t}: task file not found")
            inputs.append(t)
        elif t not in tk.BUILTIN:
            raise UsageError(f"--tasks: unknown task '{t}' (built-in: {', '.join(tk.BUILTIN)}, "
                             f"or a .jsonl file)")
    if os.path.exists(args.model):
        inputs.append(args.model)
    out = args.output
    for i in inputs:
        if same_file(i, out) or same_file(i, out + ".journal"):
            raise UsageError(f"{out}: output path is an input ({i})")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise UsageError(f"{out}: directory does not exist")
    dense_layers = set()
    for s in [x for x in args.dense_layers.split(",") if x.strip()]:
        try:
            dense_layers.add(int(s))
        except ValueError:
            raise UsageError(f"--dense-layers: '{s}' is not a layer index")

    shard = parse_shard(args.shard) if args.shard else None
    if args.merge:
        merge_journals(out + ".journal", [j for j in args.merge.split(",") if j.strip()])
        return summarise_journal(args, out, methods, sparsities, eps_list)
    if args.summarise_only and not args.perhead:
        return summarise_journal(args, out, methods, sparsities, eps_list)
    try:
        dev = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device: '{args.device}' is not a torch device (cpu, cuda)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available to this torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, tok, mid = runner.load_model(args.model, args.dtype, device=args.device)
    except runner.EvalError as e:
        raise UsageError(str(e))
    info = runner.model_info(model)
    for L in dense_layers:
        if not 0 <= L < info["n_layers"]:
            raise UsageError(f"--dense-layers: layer {L} out of range (model has "
                             f"{info['n_layers']})")
    sparse_layers = [L for L in info["full_layers"] if L not in dense_layers]
    for n in (lengths if any(t in tk.BUILTIN for t in task_names) else []):
        if info["context"] and n > info["context"]:
            raise UsageError(f"--lengths: {n} tokens is above the model's context "
                             f"({info['context']})")
    if tok is None and any(t in tk.BUILTIN for t in task_names):
        raise UsageError(f"{args.model}: no tokenizer; the built-in tasks need one")
    tkz = tk.Tok(tok, args.chat) if tok is not None else None

    configs = [sp.Config(m, s) for m in methods for s in sparsities]
    configs += [sp.Config("topk-sample", None, eps=e, budget=args.eps_budget) for e in eps_list]
    sp.CTL.sparse_layers = set(sparse_layers)
    sp.CTL.mode = args.mode
    sp.CTL.params = dict(sinks=args.sinks, page_size=args.page_size,
                         heavy_frac=args.heavy_frac, delta=args.delta, seed=args.seed)

    # the work: (task, length, index) -> sample builder; sample index outermost, so that a run
    # stopped early has about as many samples of every task and length
    work = []
    for t in task_names:
        if t.endswith(".jsonl"):
            try:
                user = tk.load_jsonl(t, tkz) if tkz else None
            except tk.TaskError as e:
                raise UsageError(str(e))
            if user is None:
                raise UsageError(f"{args.model}: no tokenizer; .jsonl tasks need one")
            for i, s in enumerate(user[:args.samples]):
                if info["context"] and len(s["ids"]) > info["context"]:
                    raise UsageError(f"{t}:{s['info']['line']}: prompt of {len(s['ids'])} "
                                     f"tokens does not fit the context ({info['context']})")
                work.append((i, os.path.basename(t), len(s["ids"]), lambda s=s: s))
        else:
            for n in lengths:
                if t == "ppl" and info["context"] and n + tk.PPL_CONT > info["context"]:
                    raise UsageError(f"ppl at {n}: prompt + {tk.PPL_CONT}-token continuation "
                                     f"exceeds the context ({info['context']})")
                # build the first sample now: a prompt that does not fit fails before any work
                try:
                    tk.build_sample(t, n, 0, tkz, args.seed)
                except tk.TaskError as e:
                    raise UsageError(f"{t} at {n} tokens: {e}")
                for i in range(args.first_sample, args.samples):
                    work.append((i, t, n, lambda t=t, n=n, i=i: tk.build_sample(
                        t, n, i, tkz, args.seed)))
    work = [(t, n, i, b) for i, t, n, b in sorted(work, key=lambda w: w[0])]
    if shard:
        work = work[shard[0]::shard[1]]
        if not work:
            raise UsageError(f"--shard {args.shard}: no samples in this shard")

    run_rec = dict(record="run", attnscope=VERSION, model=args.model, model_id=mid,
                   dtype=args.dtype, mode=args.mode, seed=args.seed, chat=args.chat,
                   sparse_layers=sparse_layers, dense_layers=sorted(dense_layers),
                   n_layers=info["n_layers"], n_heads=info["n_heads"],
                   n_kv_heads=info["n_kv_heads"], context=info["context"],
                   params=sp.CTL.params, eps_budget=args.eps_budget, device=args.device)
    journal = out + ".journal"
    done: dict[tuple, set] = {}
    samples: list[dict] = []
    if os.path.exists(journal):
        r, samples = _read_journal(journal)
        for k in RUN_IDENT:
            if r is not None and r.get(k) != run_rec.get(k):
                raise UsageError(f"{journal}: journal of a different run ({k} = "
                                 f"{r.get(k)!r}, now {run_rec.get(k)!r}); remove it or "
                                 f"use another -o")
        for r in samples:
            done.setdefault((r["task"], r["length"], r["sample"]), set()).add(r["config"])
        if samples:
            runner.log(f"resuming from {journal}: {len(samples)} finished records")
    keys = {"dense"} | {c.key for c in configs}
    todo = [] if args.summarise_only else \
        [w for w in work if not keys <= done.get(w[:3], set())]
    jf = open(journal, "a")
    if os.path.getsize(journal) == 0:
        jf.write(json.dumps(run_rec) + "\n")
        jf.flush()
    # a journal cut mid-line by a kill: start the next record on its own line
    elif not open(journal, "rb").read()[-1:] == b"\n":
        jf.write("\n")

    def emit(rec):
        samples.append(rec)
        jf.write(json.dumps(rec) + "\n")
        jf.flush()
        os.fsync(jf.fileno())

    bar = Progress(len(todo), args.quiet)
    timing = {}
    bench = None
    if args.bench_reuse:  # the benchmark alone, on the first sample of the work
        bench = benchmark_reuse(runner, sp, model, tok, work[0][3](), configs, args.bench_reuse,
                                args.chunk)
        bench.update(task=work[0][0], length=work[0][1])
        todo = []
    for t, n, i, build in todo:
        s = build()
        meta = dict(task=t, length=n, sample=i, depth=s["info"].get("depth"),
                    ids_sha256=hashlib.sha256(struct.pack(f"<{len(s['ids'])}i",
                                                          *s["ids"])).hexdigest())
        runner.run_sample(runner.Session(model, tok, args.chunk), s, configs, meta,
                          done.get((t, n, i), set()), emit, timing)
        bar.step(f"{t} {n} #{i}")
    jf.close()

    # this command's tasks and configurations (as summarise_journal selects them)
    names = {os.path.basename(t) if t.endswith(".jsonl") else t for t in task_names}
    samples = [r for r in samples if r["config"] in keys and r["task"] in names]
    summary = stats.summarise(samples)
    tol = stats.tolerance(summary)
    records = [run_rec] + sorted(samples, key=sample_order)
    records += summary + tol
    if bench:
        records.append(bench)
    if args.perhead:
        from . import perhead
        try:
            records += perhead.run(args, work, tol, info)
        except perhead.PerHeadError as e:
            raise UsageError(str(e))
    return write_document(args, out, records, summary)


def sample_order(r: dict) -> tuple:
    """Order of the sample records in the document: task, length, sample, dense first."""
    return (r["task"], r["length"], r["sample"], r["config"] != "dense", r["config"])


def write_document(args, out: str, records: list[dict], summary: list[dict]) -> int:
    """The eval document (atomically), then --json / --csv / the table on stdout."""
    doc = {"attnscope": VERSION, "command": "eval", "model": args.model, "records": records}
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    atomic_write(out, text)
    if args.json:
        sys.stdout.write(text)
    elif args.csv:
        sys.stdout.write(csv_text(records))
    elif not args.quiet:
        print_table(summary)
    return 0


def parse_shard(s: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in s.split("/"))
    except ValueError:
        raise UsageError(f"--shard: '{s}' is not K/N (e.g. 0/4)")
    if n < 1 or not 0 <= k < n:
        raise UsageError(f"--shard: '{s}' needs 0 <= K < N")
    return k, n


RUN_IDENT = ("model", "dtype", "mode", "seed", "chat", "sparse_layers", "params")


def _read_journal(path: str) -> tuple[dict | None, list[dict]]:
    """(run record, sample records) of a journal; a line cut by a kill (last line) is dropped."""
    run, samples = None, []
    with open(path) as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise UsageError(f"{path}:{i + 1}: corrupt journal line")
        if r.get("record") == "run" and run is None:
            run = r
        elif r.get("record") == "sample":
            samples.append(r)
    return run, samples


def merge_journals(journal: str, parts: list[str]) -> int:
    """Append to `journal` the sample records of `parts` (journals of the same run: identical
    run settings) that it does not hold yet (key: task, length, sample, configuration); the
    same prompt must have the same token ids. Returns the number of records added."""
    have_run, have = _read_journal(journal) if os.path.exists(journal) else (None, [])
    seen = {(r["task"], r["length"], r["sample"], r["config"]) for r in have}
    ids = {(r["task"], r["length"], r["sample"]): r.get("ids_sha256") for r in have}
    ref = have_run
    add = []
    for p in parts:
        if not os.path.isfile(p):
            raise UsageError(f"{p}: journal not found")
        if same_file(p, journal):
            raise UsageError(f"{p}: is the output's own journal")
        run, recs = _read_journal(p)
        if run is None:
            raise UsageError(f"{p}: no run record")
        ref = ref or run
        for k in RUN_IDENT:
            if run.get(k) != ref.get(k):
                raise UsageError(f"{p}: journal of a different run ({k} = {run.get(k)!r}, "
                                 f"{journal} has {ref.get(k)!r})")
        for r in recs:
            sk = (r["task"], r["length"], r["sample"])
            if ids.setdefault(sk, r.get("ids_sha256")) != r.get("ids_sha256"):
                raise UsageError(f"{p}: {sk[0]} {sk[1]} #{sk[2]} has other token ids than "
                                 f"the records before it (a different prompt)")
            key = sk + (r["config"],)
            if key not in seen:
                seen.add(key)
                add.append(r)
    text = "" if have_run is not None else json.dumps(ref) + "\n"
    text += "".join(json.dumps(r) + "\n" for r in add)
    if text:
        with open(journal, "a") as f:
            if os.path.getsize(journal) and not open(journal, "rb").read()[-1:] == b"\n":
                f.write("\n")
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    log_line = f"merged {len(add)} records from {len(parts)} journals into {journal}"
    print(f"attnscope eval: {log_line}", file=sys.stderr)
    return len(add)


def summarise_journal(args, out, methods, sparsities, eps_list) -> int:
    """--summarise-only without --perhead: the document from the journal alone (no model
    load); the configurations of this command select the records."""
    from . import sparse as sp
    from . import stats
    journal = out + ".journal"
    if not os.path.exists(journal):
        raise UsageError(f"{journal}: no journal to summarise")
    run_rec, samples = _read_journal(journal)
    if run_rec is None:
        raise UsageError(f"{journal}: no run record")
    keys = {"dense"} | {sp.Config(m, s).key for m in methods for s in sparsities}
    keys |= {sp.Config("topk-sample", None, eps=e, budget=args.eps_budget).key for e in eps_list}
    tasks = {os.path.basename(t) if t.endswith(".jsonl") else t
             for t in args.tasks.split(",") if t.strip()}
    samples = [r for r in samples if r["config"] in keys and r["task"] in tasks]
    summary = stats.summarise(samples)
    records = [run_rec] + sorted(samples, key=sample_order)
    records += summary + stats.tolerance(summary)
    return write_document(args, out, records, summary)


def print_table(summary):
    print(f"{'task':16s} {'len':>6s} {'config':24s} {'n':>4s} {'acc':>6s} {'95% CI':>13s} "
          f"{'dense':>6s} {'agree':>6s} {'top1':>6s} {'KL':>9s} {'ppl x':>7s}")
    for s in summary:
        acc = f"{s['accuracy']:.3f}" if s["accuracy"] is not None else "-"
        ci = f"{s['ci_low']:.2f}-{s['ci_high']:.2f}" if s["ci_low"] is not None else "-"
        da = f"{s['dense_accuracy']:.3f}" if s["dense_accuracy"] is not None else "-"
        ag = f"{s['agree_dense']:.3f}" if s["agree_dense"] is not None else "-"
        pr = f"{s['ppl_ratio']:.4f}" if s["ppl_ratio"] is not None else "-"
        print(f"{s['task']:16s} {s['length']:6d} {s['config']:24s} {s['samples']:4d} {acc:>6s} "
              f"{ci:>13s} {da:>6s} {ag:>6s} {s['top1']:6.3f} {s['kl_mean']:9.3g} {pr:>7s}")


def benchmark_reuse(runner, sp, model, tok, sample, configs, k, chunk):
    """Time, on one sample, the sweep over all configurations with one prefill (the tool's way)
    against re-running the whole prompt for each of k configurations (extrapolated to all),
    and the selection's share of a sparse decode step against the dense attention it
    replaces."""
    import copy
    import torch
    sess = runner.Session(model, tok, chunk)
    ids = sample["ids"]
    first = ids[-1]
    inputs = [first] + [first] * 7  # 8 teacher-forced decode steps
    t0 = time.perf_counter()
    pre = sess.prefill(ids)
    t_prefill = time.perf_counter() - t0
    t_reuse = t_prefill
    for cfg in configs:
        sp.CTL.cfg = cfg
        t1 = time.perf_counter()
        sess.teacher(copy.deepcopy(pre), inputs)
        t_reuse += time.perf_counter() - t1
    sp.CTL.cfg = None
    t_rerun = 0.0
    for cfg in configs[:k]:
        t1 = time.perf_counter()
        c = sess.prefill(ids)
        sp.CTL.cfg = cfg
        sess.teacher(c, inputs)
        sp.CTL.cfg = None
        t_rerun += time.perf_counter() - t1
    t_rerun_all = t_rerun / min(k, len(configs)) * len(configs)
    # per decode step: dense attention time vs selection + sparse attention time
    c = copy.deepcopy(pre)
    sp.CTL.time_dense = True
    sp.CTL.reset_stats()
    with torch.inference_mode():
        for _ in range(4):
            runner._forward(model, torch.tensor([[first]], device=sess.device), c, 1)
    dense_attn = sp.CTL.t_dense_attn / 4
    sp.CTL.time_dense = False
    per = {}
    for cfg in configs:
        if cfg.method in per:
            continue
        sp.CTL.cfg = cfg
        sp.CTL.reset_stats()
        c = copy.deepcopy(pre)
        with torch.inference_mode():
            for _ in range(4):
                runner._forward(model, torch.tensor([[first]], device=sess.device), c, 1)
        per[cfg.method] = dict(sparsity=cfg.sparsity, select_s=sp.CTL.t_select / 4,
                               sparse_attn_s=sp.CTL.t_attend / 4)
    sp.CTL.cfg = None
    return dict(record="bench", n=len(ids), configs=len(configs), decode_steps=len(inputs),
                prefill_s=t_prefill, sweep_reuse_s=t_reuse, rerun_configs_timed=min(k, len(configs)),
                sweep_rerun_s=t_rerun_all, speedup=t_rerun_all / t_reuse,
                dense_attn_per_step_s=dense_attn, per_method=per)


if __name__ == "__main__":
    sys.exit(main())
