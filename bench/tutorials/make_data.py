"""Writes the data files of the tutorials that draw their data at random:

  models/data/habr.csv     X = np.random.randint(0, 50, (10, 3)) after np.random.seed(1), and a
                           target column of zeros (the tutorial's cost is Y.T . Y = sum of Y**2,
                           i.e. the sum of squared errors against 0)
  models/data/weidman.csv  X = np.random.randn(3, 3) after np.random.seed(190203) (the seed of
                           Weidman's chapter-1 code; X[0] = [0.4723 0.6151 -1.7262] as the book
                           prints); features only, the model's loss is `sum`

Run from anywhere: python3 bench/tutorials/make_data.py. Values are written in their shortest
round-trip form, so the CSV holds exactly the float64 values NumPy drew.
"""
import os
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "models", "data")


def habr_data():
    np.random.seed(1)
    X = np.random.randint(0, 50, (10, 3))
    return X, np.zeros((10, 1), dtype=X.dtype)


def weidman_data():
    np.random.seed(190203)
    return np.random.randn(3, 3)


def write(name, header, rows):
    path = os.path.normpath(os.path.join(DATA, name))
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for row in rows:
            f.write(",".join(repr(v.item()) for v in row) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    X, Y = habr_data()
    write("habr.csv", ["x1", "x2", "x3", "y"], np.hstack([X, Y]))
    write("weidman.csv", ["x1", "x2", "x3"], weidman_data())
