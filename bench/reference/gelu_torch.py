"""Reference values of GELU with the tanh approximation from PyTorch, for
Tests/RuntimeTests/GELUTests.swift: torch.nn.functional.gelu(x, approximate='tanh') and its
derivative (autograd), in float64 and float32, at fixed points.
Usage: python bench/reference/gelu_torch.py  (prints the Swift arrays)"""
import torch

points = [-8.0, -5.5, -3.0, -2.25, -1.5, -1.0, -0.75, -0.5, -0.1, -1e-3, 0.0, 1e-3, 0.1, 0.5, 0.75, 1.0, 1.5,
          2.25, 3.0, 5.5, 8.0, 0.3333333333333333, -0.7071067811865476, 12.0, -12.0]
print("// torch", torch.__version__)
for dtype, name in [(torch.float64, "Double"), (torch.float32, "Float")]:
    x = torch.tensor(points, dtype=dtype, requires_grad=True)
    y = torch.nn.functional.gelu(x, approximate="tanh")
    (g,) = torch.autograd.grad(y.sum(), x)
    fmt = (lambda v: repr(float(v))) if dtype == torch.float64 else (lambda v: repr(float(v)))
    print(f"static let x{name}: [{name}] = [" + ", ".join(fmt(v) for v in x.detach()) + "]")
    print(f"static let y{name}: [{name}] = [" + ", ".join(fmt(v) for v in y.detach()) + "]")
    print(f"static let dy{name}: [{name}] = [" + ", ".join(fmt(v) for v in g) + "]")
