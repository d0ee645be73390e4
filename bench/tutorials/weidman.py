"""Weidman's computational graph for two matrices ("Deep Learning from Scratch", chapter 1; seed
001, Russian), in float64 -- the reference for models/weidman.nn.

L = sum(sigma(X.W)); the backward pass is the book's chain rule, extended to W
(dN/dW = X.T). models/weidman.nn takes one SGD step with lr 1, so its trained W is W - dL/dW.

Differences from the book:
- the book draws X = randn(3,3) then W = randn(3,2) from one stream seeded with 190203; nnc reads
  X from data/weidman.csv (the same X, make_data.py) and draws W from a fresh generator seeded
  with 190203, so this script reseeds before W.
- the book's deriv(sigma, N) is a central difference with delta 0.001; the exact derivative
  sigma(N)*(1 - sigma(N)) is used here (the difference is printed; it is ~1e-8).
"""
import numpy as np
from numpy import ndarray


def show(label, value):
    value = np.asarray(value, dtype=float)
    print("%s [%s]: %s" % (label, ",".join(map(str, value.shape)), " ".join("%.17g" % v for v in value.ravel())))


def sigmoid(x: ndarray) -> ndarray:
    return 1 / (1 + np.exp(-x))


def deriv(func, input_: ndarray, delta: float = 0.001) -> ndarray:
    return (func(input_ + delta) - func(input_ - delta)) / (2 * delta)


def matrix_function_forward_sum(X: ndarray, W: ndarray, sigma) -> float:
    assert X.shape[1] == W.shape[0]
    N = np.dot(X, W)
    S = sigma(N)
    L = np.sum(S)
    return L


def matrix_function_backward_sum_W(X: ndarray, W: ndarray, sigma, exact=True) -> ndarray:
    assert X.shape[1] == W.shape[0]
    N = np.dot(X, W)
    S = sigma(N)
    L = np.sum(S)
    dLdS = np.ones_like(S)
    dSdN = S * (1 - S) if exact else deriv(sigma, N)
    dLdN = dLdS * dSdN
    dNdW = np.transpose(X, (1, 0))
    dLdW = np.dot(dNdW, dLdN)
    return dLdW


np.random.seed(190203)
X = np.random.randn(3, 3)
np.random.seed(190203)  # not in the book (see above)
W = np.random.randn(3, 2)
show("start fc1.weight", W)
print("L =", matrix_function_forward_sum(X, W, sigmoid))
dLdW = matrix_function_backward_sum_W(X, W, sigmoid)
print("dL/dW =", dLdW.ravel())
print("max |exact - book's finite difference| =",
      np.abs(dLdW - matrix_function_backward_sum_W(X, W, sigmoid, exact=False)).max())
learning_rate = 1
W = W - learning_rate * dLdW
show("final fc1.weight", W)
show("input", X)
show("predictions", sigmoid(np.dot(X, W)))
