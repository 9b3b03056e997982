#!/usr/bin/env python3
"""The Python package installs from the checkout and finds libattnscope in the documented order:
`pip install ./python` (a copy of python/, offline: --no-build-isolation) gives an importable
`attnscope`; it loads the library named by $ATTNSCOPE_LIB; from the checkout (PYTHONPATH=python)
without it, a build directory of the checkout; installed elsewhere, the libdir of
`pkg-config attnscope`; nothing found: LibraryNotFoundError listing the places tried. Exit 77
(skip) without NumPy; the pip part is skipped (said so) without pip or setuptools."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import py_attnscope_util as u  # noqa: E402

u.import_attnscope()  # skips without NumPy or the shared library
LIB = os.environ["ATTNSCOPE_LIB"]
fails = []
tmp = tempfile.mkdtemp(prefix="as_py_install_")
PROBE = ("import attnscope, sys; attnscope.budget_keys('2%', 100); "
         "print(attnscope.__file__); print(attnscope.library_path())")


def run(env_extra, drop=("ATTNSCOPE_LIB", "PYTHONPATH", "PKG_CONFIG_PATH")):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          cwd=tmp)


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL: " + what)


# 1. from the checkout, with $ATTNSCOPE_LIB (a file, then its directory)
for val in (LIB, os.path.dirname(LIB)):
    r = run({"PYTHONPATH": os.path.join(u.SRC, "python"), "ATTNSCOPE_LIB": val})
    check(r.returncode == 0 and r.stdout.split("\n")[1] == os.path.join(os.path.dirname(LIB), "libattnscope.so"),
          "ATTNSCOPE_LIB=%s: %s %s" % (val, r.stdout, r.stderr[-300:]))
# 2. from the checkout without it: a build directory of the checkout (when one holds the library)
src = os.path.realpath(u.SRC)
import glob  # noqa: E402
if glob.glob(os.path.join(src, "build*", "libattnscope.so")):
    r = run({"PYTHONPATH": os.path.join(u.SRC, "python")})
    check(r.returncode == 0 and os.path.realpath(r.stdout.split("\n")[1]).startswith(os.path.join(src, "build")),
          "checkout build dir: %s %s" % (r.stdout, r.stderr[-300:]))
else:
    print("no build*/libattnscope.so inside the checkout: the checkout-search part is skipped")

# 3. pip install ./python (a copy, so that the checkout gets no build/ or egg-info)
site = os.path.join(tmp, "site")
pkg = os.path.join(tmp, "python")
shutil.copytree(os.path.join(u.SRC, "python"), pkg,
                ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
have_pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0
try:
    import setuptools  # noqa: F401
    have_st = True
except ImportError:
    have_st = False
if not (have_pip and have_st):
    print("pip or setuptools missing: the pip install part is skipped")
else:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                        "--disable-pip-version-check", "--target", site, pkg],
                       capture_output=True, text=True)
    check(r.returncode == 0, "pip install ./python: " + r.stderr[-500:])
    if r.returncode == 0:
        r = run({"PYTHONPATH": site, "ATTNSCOPE_LIB": LIB})
        check(r.returncode == 0 and r.stdout.startswith(os.path.join(site, "attnscope")),
              "installed copy: %s %s" % (r.stdout, r.stderr[-300:]))
        # installed outside the checkout: pkg-config's libdir
        pc = os.path.join(tmp, "pc")
        os.mkdir(pc)
        with open(os.path.join(pc, "attnscope.pc"), "w") as f:
            f.write("libdir=%s\n\nName: attnscope\nDescription: test\nVersion: 0.1.0\n"
                    "Libs: -L${libdir} -lattnscope\n" % os.path.dirname(LIB))
        if shutil.which("pkg-config"):
            r = run({"PYTHONPATH": site, "PKG_CONFIG_PATH": pc})
            check(r.returncode == 0 and r.stdout.split("\n")[1] == os.path.join(os.path.dirname(LIB), "libattnscope.so"),
                  "pkg-config: %s %s" % (r.stdout, r.stderr[-300:]))
        else:
            print("pkg-config missing: that part is skipped")
        # nothing: one clear error naming what was tried (unless a system-wide library exists)
        r = run({"PYTHONPATH": site, "PKG_CONFIG_PATH": os.path.join(tmp, "none")})
        if r.returncode == 0:
            print("a system-wide libattnscope is installed (%s): the not-found case is skipped"
                  % r.stdout.split("\n")[1])
        else:
            check("LibraryNotFoundError" in r.stderr and "ATTNSCOPE_LIB" in r.stderr and
                  "pkg-config" in r.stderr, "not found: " + r.stderr[-500:])
shutil.rmtree(tmp, ignore_errors=True)
print("%d failures" % len(fails))
sys.exit(1 if fails else 0)
