"""attnscope_eval: task accuracy of a real model under sparse decode (`attnscope eval`).

Built on the attnscope binding (python/attnscope: the selections of libattnscope), PyTorch and
transformers. See docs/eval.md."""
