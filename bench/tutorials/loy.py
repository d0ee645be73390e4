"""James Loy's 2-layer network ("How to build your own Neural Network from scratch in Python",
named in seed 000), as the tutorial writes it, in float64 -- the reference for models/loy.nn.

The tutorial's update adds 2*(y - output)*sigmoid'(...) back-propagated: the gradient of SSE itself
with learning rate 1, i.e. nnc's `loss sse` with `lr 1`. It sets no seed: we call
np.random.seed(1) (models/loy.nn says `seed 1`); weights1 then weights2 is nnc's draw order.
"""
import numpy as np


def show(label, value):
    value = np.asarray(value, dtype=float)
    print("%s [%s]: %s" % (label, ",".join(map(str, value.shape)), " ".join("%.17g" % v for v in value.ravel())))


def sigmoid(x):
    return 1.0 / (1 + np.exp(-x))


def sigmoid_derivative(x):
    return x * (1.0 - x)


class NeuralNetwork:
    def __init__(self, x, y):
        self.input = x
        self.weights1 = np.random.rand(self.input.shape[1], 4)
        self.weights2 = np.random.rand(4, 1)
        self.y = y
        self.output = np.zeros(self.y.shape)

    def feedforward(self):
        self.layer1 = sigmoid(np.dot(self.input, self.weights1))
        self.output = sigmoid(np.dot(self.layer1, self.weights2))

    def backprop(self):
        # application of the chain rule to find derivative of the loss function with respect to weights2 and weights1
        d_weights2 = np.dot(self.layer1.T, (2 * (self.y - self.output) * sigmoid_derivative(self.output)))
        d_weights1 = np.dot(self.input.T, (np.dot(2 * (self.y - self.output) * sigmoid_derivative(self.output),
                                                  self.weights2.T) * sigmoid_derivative(self.layer1)))

        # update the weights with the derivative (slope) of the loss function
        self.weights1 += d_weights1
        self.weights2 += d_weights2


if __name__ == "__main__":
    X = np.array([[0, 0, 1],
                  [0, 1, 1],
                  [1, 0, 1],
                  [1, 1, 1]])
    y = np.array([[0], [1], [1], [0]])
    np.random.seed(1)   # not in the tutorial
    nn = NeuralNetwork(X, y)
    show("start fc1.weight", nn.weights1)
    show("start fc2.weight", nn.weights2)

    for i in range(1500):
        nn.feedforward()
        nn.backprop()

    print(nn.output)   # the tutorial's print: the outputs of the last feedforward, before the last update
    show("final fc1.weight", nn.weights1)
    show("final fc2.weight", nn.weights2)
    nn.feedforward()
    show("input", X)
    show("predictions", nn.output)   # with the final weights
