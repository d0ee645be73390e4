"""Trask's 2-layer network ("A neural network in 11 lines of Python", part 1; seed 002, Russian),
as the tutorial writes it, in float64 -- the reference for models/trask2.nn.

syn0 += l0.T . (l1_error * l1*(1-l1)) is the gradient of 1/2*SSE with learning rate 1: nnc's
`loss sse` with `lr 0.5`. The tutorial prints l1 = [0.00966449 0.00786506 0.99358898 0.99211957].
"""
import numpy as np


def show(label, value):
    value = np.asarray(value, dtype=float)
    print("%s [%s]: %s" % (label, ",".join(map(str, value.shape)), " ".join("%.17g" % v for v in value.ravel())))


# sigmoid function
def nonlin(x, deriv=False):
    if deriv == True:
        return x * (1 - x)
    return 1 / (1 + np.exp(-x))


# input dataset
X = np.array([[0, 0, 1],
              [0, 1, 1],
              [1, 0, 1],
              [1, 1, 1]])
# output dataset
y = np.array([[0, 0, 1, 1]]).T

# seed random numbers to make calculation deterministic (just a good practice)
np.random.seed(1)

# initialize weights randomly with mean 0
syn0 = 2 * np.random.random((3, 1)) - 1
show("start fc1.weight", syn0)

for iter in range(10000):
    # forward propagation
    l0 = X
    l1 = nonlin(np.dot(l0, syn0))
    # how much did we miss?
    l1_error = y - l1
    # multiply how much we missed by the slope of the sigmoid at the values in l1
    l1_delta = l1_error * nonlin(l1, True)
    # update weights
    syn0 += np.dot(l0.T, l1_delta)

print("Output After Training:")
print(l1)
show("final fc1.weight", syn0)
show("input", X)
show("predictions", nonlin(np.dot(X, syn0)))   # with the final weights
