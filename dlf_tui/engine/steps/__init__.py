"""One training update, several ways: fused MLP, C kernel, autograd, stacked members; and choosing one."""
