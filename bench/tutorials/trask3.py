"""Trask's 3-layer network ("A neural network in 11 lines of Python", part 2; seed 002, Russian),
as the tutorial writes it, in float64 -- the reference for models/trask3.nn.

Both updates are the gradient of 1/2*SSE with learning rate 1 (l1_delta uses syn1 before its
update): nnc's `loss sse` with `lr 0.5`. The tutorial prints the mean absolute error every 10000
iterations: 0.496410031903, 0.00858452565325, 0.00578945986251, 0.00462917677677,
0.00395876528027, 0.00350012256786.
"""
import numpy as np


def show(label, value):
    value = np.asarray(value, dtype=float)
    print("%s [%s]: %s" % (label, ",".join(map(str, value.shape)), " ".join("%.17g" % v for v in value.ravel())))


def nonlin(x, deriv=False):
    if deriv == True:
        return x * (1 - x)
    return 1 / (1 + np.exp(-x))


X = np.array([[0, 0, 1],
              [0, 1, 1],
              [1, 0, 1],
              [1, 1, 1]])

y = np.array([[0],
              [1],
              [1],
              [0]])

np.random.seed(1)

# randomly initialize our weights with mean 0
syn0 = 2 * np.random.random((3, 4)) - 1
syn1 = 2 * np.random.random((4, 1)) - 1
show("start fc1.weight", syn0)
show("start fc2.weight", syn1)

for j in range(60000):
    # Feed forward through layers 0, 1, and 2
    l0 = X
    l1 = nonlin(np.dot(l0, syn0))
    l2 = nonlin(np.dot(l1, syn1))

    # how much did we miss the target value?
    l2_error = y - l2

    if (j % 10000) == 0:
        print("Error:" + str(np.mean(np.abs(l2_error))))

    # in what direction is the target value?
    # were we really sure? if so, don't change too much.
    l2_delta = l2_error * nonlin(l2, deriv=True)

    # how much did each l1 value contribute to the l2 error (according to the weights)?
    l1_error = l2_delta.dot(syn1.T)

    # in what direction is the target l1?
    # were we really sure? if so, don't change too much.
    l1_delta = l1_error * nonlin(l1, deriv=True)

    syn1 += l1.T.dot(l2_delta)
    syn0 += l0.T.dot(l1_delta)

show("final fc1.weight", syn0)
show("final fc2.weight", syn1)
show("input", X)
show("predictions", nonlin(np.dot(nonlin(np.dot(X, syn0)), syn1)))   # with the final weights
