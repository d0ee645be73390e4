"""The "matrix" tutorial (seed 000, French; habr), in float64 -- the reference for models/habr.nn.

3-4-1 without biases: A = X.w1, B = A**2, C = B.w2, Y = C**3, cost Y.T . Y (= SSE against 0).
deltaW1 and deltaW2 are the tutorial's formulas, i.e. the gradients of that cost. The tutorial
stops at the gradients; we take 100 steps w -= lr*delta with lr = 1e-24 (`lr 1e-24 epochs 100`).

Draw order: the tutorial draws X, then w1, then w2 from one stream. nnc draws the weights from a
fresh generator seeded with the model's seed (and reads X from data/habr.csv, written by
make_data.py with seed 1), so this script reseeds with 1 before w1 -- that is the only change.
"""
import numpy as np


def show(label, value):
    value = np.asarray(value, dtype=float)
    print("%s [%s]: %s" % (label, ",".join(map(str, value.shape)), " ".join("%.17g" % v for v in value.ravel())))


def f1(x):  # x**2
    return np.power(x, 2)


def gradf1(x):
    return 2 * x


def f2(x):  # x**3
    return np.power(x, 3)


def gradf2(x):
    return 3 * np.power(x, 2)


np.random.seed(1)
X = np.random.randint(0, 50, (10, 3))
np.random.seed(1)  # not in the tutorial: nnc's weights come from a fresh generator (see above)
w1 = 2 * np.random.rand(3, 4) - 1  # -1 .. +1
w2 = 2 * np.random.rand(4, 1) - 1
show("start fc1.weight", w1)
show("start fc2.weight", w2)

learning_rate = 1e-24
for epoch in range(100):
    A = np.dot(X, w1)
    B = f1(A)
    C = np.dot(B, w2)
    Y = f2(C)
    if epoch % 20 == 0:
        print("epoch", epoch, "cost", np.dot(Y.T, Y).item())
    deltaW2 = 2 * np.dot(B.T, Y * gradf2(C))
    deltaW1 = 2 * np.dot(X.T, np.dot(Y * gradf2(C), w2.T) * gradf1(A))
    w1 -= learning_rate * deltaW1
    w2 -= learning_rate * deltaW2

show("final fc1.weight", w1)
show("final fc2.weight", w2)
show("input", X)
show("predictions", f2(np.dot(f1(np.dot(X, w1)), w2)))
