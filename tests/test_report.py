#!/usr/bin/env python3
"""Test of `attnscope report` and `attnscope compare`, as a person would use them.

A synthetic trace with planted structure (an attention sink, a needle, a periodic head, low-rank
keys) is written with NumPy + safetensors. Then:
  - `attnscope report` writes one HTML file; parsed with html.parser: every section holds its
    figures, each an inline <svg> with drawn content (no section left with a "not in this
    build" note); nothing points outside the file (no scripts, no external URLs, no <img>/<link>);
  - the provenance's SHA-256 equals hashlib's checksum of the trace, the model and the command
    are shown; the report refuses to write over its input; --gpu-json adds the GPU section;
  - `attnscope report A B` on the two bundled samples (issue 19): the cross-trace table's row of
    each trace holds the numbers of that trace's own report and of `sparsity TRACE
    --summary-only`, each trace's part of the page is its own report (ids prefixed), one GPU
    section, every file's SHA-256, -o over any input refused;
  - `attnscope compare A B` in table, --json and --csv (one schema);
  - headless Chromium (Debian's chromium) opens the report and takes a screenshot
    ($AS_BUILD/report-screenshot.png, to look at); skipped with a reason when chromium is absent;
  - on the bundled real sample (when present): the report is made and holds every section (its
    time is printed, not asserted: timings belong in benchmarks, docs/benchmarks.md).

Exit 0: pass; 1: a check failed; 77: skipped (no report in this build, or numpy/safetensors
missing).
"""
import csv
import hashlib
import html.parser
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("AS_SRC") or os.path.dirname(HERE)
BUILD = os.environ.get("AS_BUILD") or os.path.join(SRC, "build")
BIN = os.environ.get("AS_BIN") or os.path.join(BUILD, "attnscope")
SAMPLE = os.path.join(SRC, "data", "samples", "smollm2-135m-needle-2k.safetensors")

try:
    import numpy as np
    from safetensors.numpy import save_file
except ImportError as e:
    print(f"SKIP: test_report needs numpy and safetensors ({e})")
    sys.exit(77)

if not os.path.exists(BIN):
    print(f"SKIP: {BIN} not built")
    sys.exit(77)
if subprocess.run([BIN, "help", "report"], capture_output=True).returncode != 0:
    print("SKIP: this attnscope was built without `report` (PLplot or OpenSSL missing)")
    sys.exit(77)

PASSED, FAILED = [], []


def check(name, ok, detail=""):
    (PASSED if ok else FAILED).append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def run(*args, timeout=600):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# a synthetic trace with planted structure

def make_trace(path, seed, layers=(0, 5, 11), hq=4, hkv=2, t=8, n=768, d=32, period=12.0):
    rng = np.random.default_rng(seed)
    tensors = {}
    pos = np.arange(n - t, n, dtype=np.int64)
    j = np.arange(n)
    w = 2 * np.pi / period
    for li, L in enumerate(layers):
        # low-rank keys (rank 6) plus a little noise
        basis = rng.standard_normal((hkv, 6, d))
        k = np.einsum("hnr,hrd->hnd", rng.standard_normal((hkv, n, 6)), basis) / np.sqrt(6)
        k += 0.05 * rng.standard_normal((hkv, n, d))
        # values share a mean direction, as real values do (outputs are not near zero)
        v = rng.standard_normal((hkv, n, d)) + 2.0 * rng.standard_normal((hkv, 1, d))
        q = 0.3 * rng.standard_normal((hq, t, d))
        # kv head 0: periodic in relative position through two rotating coordinates
        k[0, :, 0] = 3 * np.cos(w * j)
        k[0, :, 1] = 3 * np.sin(w * j)
        q[0, :, 0] = 3 * np.cos(w * pos)
        q[0, :, 1] = 3 * np.sin(w * pos)
        # kv head 1: a sink at position 0 and a needle at 300..309 along coordinate 2
        k[1, :, 2] = 0
        k[1, 0, 2] = 6 + li
        k[1, 300:310, 2] = 5
        q[hq - 1, :, 2] = 4
        dt = np.float32 if li % 2 == 0 else np.float16
        tensors[f"layers.{L}.q"] = q.astype(dt)
        tensors[f"layers.{L}.k"] = k.astype(dt)
        tensors[f"layers.{L}.v"] = v.astype(dt)
        tensors[f"layers.{L}.q_pos"] = pos
    meta = {"format": "attnscope-trace", "format_version": "1",
            "model": f"synthetic-planted-{seed}", "rope_applied": "true",
            "prompt_name": "synthetic", "prompt_fact_spans": "300-309"}
    save_file(tensors, path, metadata=meta)


# ---------------------------------------------------------------------------------------------
# HTML: figures (with their SVG content), sections, notes, and anything pointing outside

class Scan(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.section = None
        self.figures = {}        # data-plot id -> dict(section, elements, texts)
        self.fig = None
        self.in_svg = 0
        self.notes = []          # (section, text)
        self.in_note = False
        self.external = []       # offending tags / attributes
        self.sections = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id")
            self.sections.append(self.section)
        if tag in ("script", "iframe", "object", "embed", "link", "img", "base"):
            self.external.append(f"<{tag}>")
        for k, val in attrs:
            if val is None:
                continue
            if k in ("src", "href", "xlink:href", "action", "srcset", "poster") and \
                    not val.startswith("#"):
                self.external.append(f"{tag} {k}={val}")
            if k == "style" and re.search(r"url\((?!\s*['\"]?#)", val):
                self.external.append(f"{tag} style url()")
            if k.startswith("on"):
                self.external.append(f"{tag} {k} handler")
        if tag == "figure":
            self.fig = {"section": self.section, "elements": 0, "svg": False, "texts": 0}
            self.figures[a.get("data-plot", f"anon{len(self.figures)}")] = self.fig
        if tag == "svg":
            self.in_svg += 1
            if self.fig is not None:
                self.fig["svg"] = True
        if self.in_svg and self.fig is not None:
            if tag in ("polyline", "path", "polygon", "rect", "line", "circle"):
                self.fig["elements"] += 1
            if tag == "text":
                self.fig["texts"] += 1
        if tag == "div" and a.get("class") == "note":
            self.in_note = True
            self.notes.append([self.section, ""])

    def handle_endtag(self, tag):
        if tag == "svg":
            self.in_svg -= 1
        if tag == "figure":
            self.fig = None
        if tag == "div" and self.in_note:
            self.in_note = False
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        if self.in_note:
            self.notes[-1][1] += data
        self.text.append(data)


def scan_html(text):
    s = Scan()
    s.feed(text)
    s.close()
    s.alltext = "".join(s.text)
    return s


# every section and the figures it must hold (a prefix "sparsity-" means at least one)
EXPECTED = {
    "where": ["profile", "sink"],
    "entropy": ["entropy-heatmap", "erank-heatmap"],
    "distributions": ["entropy-box", "topk-box"],
    "sparsity": ["sparsity-0"],
    "bottleneck": ["collision-heatmap", "tv-heatmap", "absorption"],
    "spectrum": ["spectrum"],
}


def check_report(name, text, gpu=False):
    s = scan_html(text)
    check(f"{name}: no external resources", not s.external, "; ".join(s.external[:5]))
    check(f"{name}: no scripts", "<script" not in text.lower())
    check(f"{name}: no remote URL outside SVG namespaces",
          not re.search(r"(?:https?:)?//(?!www\.w3\.org/)", re.sub(r'xmlns(:\w+)?="[^"]*"', "", text)))
    for sec, figs in EXPECTED.items():
        check(f"{name}: section {sec} present", sec in s.sections)
        for fid in figs:
            f = s.figures.get(fid)
            ok = f is not None and f["svg"] and f["section"] == sec and f["elements"] >= 10 \
                and f["texts"] >= 3
            check(f"{name}: figure {fid} drawn with data", ok,
                  "missing" if f is None else f"{f['elements']} shapes, {f['texts']} labels")
    if gpu:
        f = s.figures.get("gpu-speedup")
        check(f"{name}: GPU speedup figure", f is not None and f["elements"] >= 10)
    for sec, note in s.notes:
        check(f"{name}: no empty section ({sec})", False, note.strip()[:160])
    check(f"{name}: summary table per layer", "Summary per layer" in text and
          "heads needing dense attention" in text)
    return s


def png_size(path):
    """Width and height from a PNG's IHDR chunk (0, 0 if it is not a PNG)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return 0, 0
    return struct.unpack(">II", head[16:24])

# ---------------------------------------------------------------------------------------------
# several traces: `attnscope report A B -o study.html` (issue 19)

def tol_text(v, levels=(2, 100)):
    """A tolerated sparsity as the report prints it (put_tol): '< 2x', '&ge; 100x', '2.5x'."""
    if v is None or not v > 1:
        return f"&lt; {levels[0]:g}x"
    return ("&ge; " if v >= levels[1] else "") + f"{v:.3g}x"


def across_rows(text):
    """The cross-trace table's rows: {k: [cell, ...]} (cells as HTML, the link's text for #)."""
    i = text.index('<table class="across">')
    table = text[i:text.index("</table>", i)]
    rows = {}
    for m in re.finditer(r'<tr><td><a href="#t(\d+)">\d+</a></td>(.*?)</tr>', table):
        rows[int(m.group(1))] = re.findall(r"<td[^>]*>(.*?)</td>", m.group(2))
    return rows


def own_method_cells(text):
    """A one-trace page's 'Per method, over all heads': [(1%, 5%, dense heads)] per method."""
    i = text.index("Per method, over all heads")
    table = text[i:text.index("</table>", i)]
    return [tuple(re.findall(r"<td[^>]*>(.*?)</td>", r)[1:4])
            for r in re.findall(r"<tr><td class=\"l\">.*?</tr>", table)]


def as_part(text, k, n):
    """A one-trace page's content as trace k's part of a page of n traces: ids prefixed
    'tK-', its heading 'Trace K of N'; the clock, the command and PLplot's figure counter
    (SVG clip ids) left out of the comparison."""
    h = text[text.index("<header>"):text.index("<footer>")]
    for pat in (r'(<section id=")', r'(<figure data-plot=")', r'(<a href="#)'):
        h = re.sub(pat, rf"\1t{k}-", h)
    return h.replace("<h1>Attention sparsity report</h1>", f"<h1>Trace {k} of {n}</h1>")


def unclocked(h):
    h = re.sub(r"asp\d+-", "aspN-", h)
    return re.sub(r"<tr><td>(generated|analysis time|command)</td><td>.*?</td></tr>\n", "", h)


def study_part(text, k):
    i = text.index(f'<article id="t{k}">\n') + len(f'<article id="t{k}">\n')
    return text[i:text.index("</article>", i)]


def npy_study(tmp):
    """report A D with D an .npy directory: the provenance lists each of D's files with its
    SHA-256 (hashlib's)."""
    from safetensors.numpy import load_file
    from safetensors import safe_open
    a = os.path.join(tmp, "a.safetensors")
    d = os.path.join(tmp, "b-npy")
    os.makedirs(d)
    for name, x in load_file(os.path.join(tmp, "b.safetensors")).items():
        np.save(os.path.join(d, name + ".npy"), x)
    with safe_open(os.path.join(tmp, "b.safetensors"), "np") as f:
        json.dump(f.metadata(), open(os.path.join(d, "metadata.json"), "w"))
    out = os.path.join(tmp, "study-npy.html")
    r = run("report", a, d, "--witness", "none", "-o", out, "--quiet")
    if not check("report A D (.npy directory): exit 0", r.returncode == 0, r.stderr.strip()):
        return
    text = open(out, encoding="utf-8").read()
    prov = text[text.index('<section id="provenance">'):]
    files = sorted(os.listdir(d))
    missing = [f for f in files if f"<code>{d}/{f}</code></td><td class=\"l\"><code>"
               f"{hashlib.sha256(open(os.path.join(d, f), 'rb').read()).hexdigest()}</code>"
               not in prov]
    check(f"report A D: provenance lists D's {len(files)} files with their SHA-256", not missing,
          ("missing: " + ", ".join(missing)) if missing else "")
    shutil.rmtree(d)
    os.unlink(out)


def multi_trace(tmp, gj):
    """report A B: the cross-trace table holds each trace's numbers of its own report and of
    `sparsity TRACE --summary-only`; each trace's part is its own report; one GPU section;
    every file's SHA-256; -o over any input refused."""
    samples = [SAMPLE, os.path.join(SRC, "data", "samples", "smollm2-135m-code-1k.safetensors")]
    if not all(os.path.exists(t) for t in samples):
        print("SKIP several traces: the bundled samples are not present")
        return
    out = os.path.join(tmp, "study.html")
    r = run("report", *samples, "--witness", "none", "--gpu-json", gj, "-o", out, "--quiet")
    if not check("report A B: exit 0, nothing printed", r.returncode == 0 and r.stderr == "",
                 r.stderr.strip()[-300:]):
        return
    text = open(out, encoding="utf-8").read()
    s = scan_html(text)
    check("report A B: no external resources", not s.external, "; ".join(s.external[:5]))
    ids = re.findall(r'<(?:section|article) id="([^"]+)"', text)
    plots = re.findall(r'<figure data-plot="([^"]+)"', text)
    check("report A B: no section id twice, no figure id twice",
          len(ids) == len(set(ids)) and len(plots) == len(set(plots)))
    check("report A B: the cross-trace section first", s.sections[0] == "across",
          str(s.sections[:3]))
    for f in ("across-sparsity-1", "across-sparsity-5"):
        g = s.figures.get(f)
        check(f"report A B: figure {f} drawn", g is not None and g["elements"] >= 10)
    check("report A B: one GPU section, after the traces", s.sections.count("gpu") == 1 and
          text.index('<section id="gpu">') > text.index('<article id="t2">'))
    rows = across_rows(text)
    check("report A B: a row per trace", sorted(rows) == [1, 2], str(sorted(rows)))
    for k, t in enumerate(samples, 1):
        name = os.path.basename(t)
        one = os.path.join(tmp, f"one{k}.html")
        r = run("report", t, "--witness", "none", "-o", one, "--quiet")
        if not check(f"report {name} alone", r.returncode == 0, r.stderr.strip()):
            continue
        own = open(one, encoding="utf-8").read()
        check(f"report A B: trace {k}'s part is its own report ({name})",
              unclocked(as_part(own, k, 2)) == unclocked(study_part(text, k)))
        cells = rows.get(k, [])
        got = [tuple(cells[4 + 3 * m:7 + 3 * m]) for m in range((len(cells) - 4) // 3)]
        check(f"report A B: row {k} = its own report's per-method table ({name})",
              got == own_method_cells(own) and got, f"{got} vs {own_method_cells(own)}")
        r = run("sparsity", t, "--summary-only", "--json", "--quiet")
        ms = [x for x in json.loads(r.stdout)["records"] if x["record"] == "model_summary"] \
            if r.returncode == 0 else []
        want = [(tol_text(x["median_sparsity_1pct"]), tol_text(x["median_sparsity_5pct"]),
                 str(x["dense_heads_5pct"])) for x in ms]
        check(f"report A B: row {k} = sparsity {name} --summary-only", got == want and got,
              f"{got} vs {want}")
        info = json.loads(run("info", t, "--json").stdout)
        lay = [x for x in info["records"] if x["record"] == "layer"]
        check(f"report A B: row {k}'s N and layers ({name})",
              cells[2:4] == [str(max(x["n"] for x in lay)), str(len(lay))], str(cells[:4]))
        sha = hashlib.sha256(open(t, "rb").read()).hexdigest()
        prov = text[text.index('<section id="provenance">'):]
        check(f"report A B: provenance lists {name} with its SHA-256", sha in prov and t in prov)
    npy_study(tmp)
    before = open(samples[1], "rb").read()
    r = run("report", *samples, "-o", samples[1], "--quiet")
    check("report A B -o B: refused, B unchanged", r.returncode == 2 and
          open(samples[1], "rb").read() == before, r.stderr.strip())


def main():
    tmp = tempfile.mkdtemp(prefix="as_report_")
    try:
        a = os.path.join(tmp, "a.safetensors")
        b = os.path.join(tmp, "b.safetensors")
        make_trace(a, 1)
        make_trace(b, 2, period=20.0)
        out = os.path.join(tmp, "report.html")

        t0 = time.time()
        r = run("report", a, "-o", out, "--quiet")
        el = time.time() - t0
        check("report exits 0", r.returncode == 0, r.stderr.strip()[-400:])
        check("--quiet prints nothing", r.stdout == "" and r.stderr == "", r.stderr[-200:])
        if r.returncode != 0:
            return
        text = open(out, encoding="utf-8").read()
        print(f"     synthetic report: {len(text) / 1024:.0f} KiB in {el:.2f} s")
        check_report("synthetic", text)
        sha = hashlib.sha256(open(a, "rb").read()).hexdigest()
        check("provenance: SHA-256 matches hashlib", sha in text, sha)
        check("provenance: model", "synthetic-planted-1" in text)
        check("provenance: command", f"attnscope report {a} -o {out} --quiet" in text)
        check("provenance: version", "attnscope version" in text)

        # never over an input; atomically (no temporary left behind)
        before = open(a, "rb").read()
        r = run("report", a, "-o", a, "--quiet")
        check("refuses to overwrite the trace", r.returncode == 2 and open(a, "rb").read() == before,
              r.stderr.strip())
        check("no temporary files left", sorted(os.listdir(tmp)) ==
              ["a.safetensors", "b.safetensors", "report.html"], str(os.listdir(tmp)))
        check("help report", run("help", "report").returncode == 0)
        r = run("report", os.path.join(tmp, "missing.safetensors"), "-o", out)
        check("missing trace: exit 2, one line", r.returncode == 2 and
              r.stderr.count("\n") == 1 and "missing.safetensors" in r.stderr, r.stderr)

        # GPU results
        gj = os.path.join(tmp, "gpu.json")
        recs = [{"record": "gpu_bench", "method": "copy", "batch": 8, "hq": 32, "hkv": 8,
                 "d": 128, "n": 262144, "sparsity": 1, "us": 100.0}]
        for m, base in (("dense", 900.0), ("flashinfer_dense", 1000.0)):
            recs.append({"record": "gpu_bench", "method": m, "batch": 8, "hq": 32, "hkv": 8,
                         "d": 128, "n": 262144, "sparsity": 1, "us": base})
        for sp in (10, 20, 50, 100):
            recs.append({"record": "gpu_bench", "method": "sparse_idx", "batch": 8, "hq": 32,
                         "hkv": 8, "d": 128, "n": 262144, "sparsity": sp, "us": 1000.0 / sp * 1.4,
                         "gbps": 3000.0, "pct_copy": 85.0})
            recs.append({"record": "gpu_bench", "method": "e2e_pages", "batch": 8, "hq": 32,
                         "hkv": 8, "d": 128, "n": 262144, "sparsity": sp, "us": 1000.0 / sp * 2})
        json.dump({"attnscope": "test", "command": "gpu bench", "device": "NVIDIA H100 (test)",
                   "records": recs}, open(gj, "w"))
        out2 = os.path.join(tmp, "report-gpu.html")
        r = run("report", a, "-o", out2, "--gpu-json", gj, "--quiet")
        check("report --gpu-json exits 0", r.returncode == 0, r.stderr.strip())
        if r.returncode == 0:
            s = scan_html(open(out2, encoding="utf-8").read())
            f = s.figures.get("gpu-speedup")
            check("GPU section: speedup figure", f is not None and f["elements"] >= 10)
            check("GPU section: device named", "NVIDIA H100 (test)" in s.alltext)
        for dev in ("h100", "h200"):  # the bench driver's schema ("rows", fi_* baselines)
            real_gpu = os.path.join(SRC, "gpu", "bench", "results", dev + "-bench.json")
            if not os.path.exists(real_gpu):
                continue
            r = run("report", a, "-o", out2, "--gpu-json", real_gpu, "--quiet", "--witness", "none")
            s = scan_html(open(out2, encoding="utf-8").read()) if r.returncode == 0 else None
            check(f"GPU section from the {dev.upper()} bench results", s is not None and all(
                s.figures.get(f) and s.figures[f]["elements"] >= 10
                for f in ("gpu-speedup", "gpu-shapes")), r.stderr.strip())
        r = run("report", a, "-o", gj, "--gpu-json", gj, "--quiet")
        check("refuses to overwrite the GPU JSON", r.returncode == 2 and
              json.load(open(gj))["records"] == recs, r.stderr.strip())
        multi_trace(tmp, gj)

        # compare: table, JSON, CSV share one schema
        r = run("compare", a, b)
        check("compare (table) exits 0", r.returncode == 0 and "entropy_norm" in r.stdout,
              r.stderr.strip())
        r = run("compare", a, b, "--json")
        ok = r.returncode == 0
        doc = json.loads(r.stdout) if ok else {}
        kinds = {}
        for rec in doc.get("records", []):
            kinds.setdefault(rec["record"], []).append(rec)
        check("compare --json: records trace/layer_summary/compare",
              ok and len(kinds.get("trace", [])) == 2 and len(kinds.get("layer_summary", [])) == 6
              and len(kinds.get("compare", [])) == 30, str({k: len(v) for k, v in kinds.items()}))
        cmp_ok = all(c["a"] is not None and c["b"] is not None
                     for c in kinds.get("compare", []))
        check("compare --json: every quantity has a value for both traces", ok and cmp_ok,
              str([c["quantity"] for c in kinds.get("compare", []) if c["a"] is None][:10]))
        ent = [c for c in kinds.get("compare", []) if c["quantity"] == "entropy_norm"]
        check("compare: delta = b - a", bool(ent) and all(
            c["delta"] is None or abs(c["delta"] - (c["b"] - c["a"])) < 1e-12 for c in ent))
        page = os.path.join(tmp, "compare.html")
        r = run("compare", a, b, "-o", page, "--quiet")
        check("compare -o: exit 0", r.returncode == 0, r.stderr.strip())
        if r.returncode == 0:
            s = scan_html(open(page, encoding="utf-8").read())
            check("compare page: no external resources", not s.external, "; ".join(s.external[:5]))
            need = ["cmp-entropy_norm", "cmp-k90_frac", "cmp-erank_k", "cmp-tv_witness",
                    "cmp-tol_5", "profile-a", "profile-b", "cmp-sparsity-0"]
            bad = [f for f in need if not (s.figures.get(f) and s.figures[f]["elements"] >= 10)]
            check("compare page: figures drawn", not bad, "missing: " + ", ".join(bad))
            check("compare page: both checksums", hashlib.sha256(open(b, "rb").read()).hexdigest()
                  in s.alltext and sha in s.alltext)
        r = run("compare", a, b, "-o", b)
        check("compare -o refuses to overwrite an input", r.returncode == 2, r.stderr.strip())
        r = run("compare", a, b, "--csv")
        rows = list(csv.DictReader(io.StringIO(r.stdout))) if r.returncode == 0 else []
        check("compare --csv: same records", len(rows) == len(doc.get("records", [])) and
              rows and list(rows[0].keys())[0] == "record")

        # Chromium
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if not chromium:
            print("SKIP screenshot: chromium is not installed (Debian: apt-get install chromium;"
                  " `make check` installs it)")
        else:
            shot = os.path.join(BUILD, "report-screenshot.png")
            if os.path.exists(shot):
                os.unlink(shot)
            prof = os.path.join(tmp, "chromium-profile")
            cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--no-first-run", f"--user-data-dir={prof}", f"--screenshot={shot}",
                   "--window-size=1400,5000", "file://" + out]
            try:
                c = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
                rc = c.returncode
            except subprocess.TimeoutExpired:
                rc = -1
            ok = rc == 0 and os.path.exists(shot)
            check("chromium renders a screenshot", ok, f"rc {rc}")
            if ok:
                w, h = png_size(shot)
                size = os.path.getsize(shot)
                # a blank page of this size compresses to a few KiB; figures make it far larger
                check("screenshot: 1400 x 5000, not blank", w == 1400 and h == 5000 and
                      size > 150 * 1024, f"{w}x{h}, {size / 1024:.0f} KiB")
                print(f"     screenshot: {shot}")

        # the real sample: the `make demo` job (its time is printed for the reader only)
        if os.path.exists(SAMPLE):
            out3 = os.path.join(tmp, "sample.html")
            t0 = time.time()
            r = run("report", SAMPLE, "-o", out3, "--quiet")
            el = time.time() - t0
            check("real sample: report exits 0", r.returncode == 0, r.stderr.strip()[-300:])
            print(f"     real sample: {el:.2f} s")
            if r.returncode == 0:
                check_report("real sample", open(out3, encoding="utf-8").read())
        else:
            print(f"SKIP real sample: {SAMPLE} not present")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main()
print(f"\n{len(PASSED)} passed, {len(FAILED)} failed")
sys.exit(1 if FAILED else 0)
