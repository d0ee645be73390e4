"""Trask's single neuron in 9 lines ("How to build a simple neural network in 9 lines of Python";
seed 002, Russian), as the tutorial writes it, in float64 -- the reference for models/neuron.nn.

The update  w += X.T . ((y - out) * out * (1 - out))  is the gradient of 1/2*SSE with learning
rate 1; nnc says `loss sse` with `lr 0.5`, the same update. The tutorial prints
[-0.16595599 0.44064899 -0.99977125] before, [9.67299303 -0.2078435 -4.62963669] after, and
predicts 0.99993704 for [1, 0, 0].
"""
from numpy import exp, array, random, dot


def show(label, value):
    value = array(value, dtype=float)
    print("%s [%s]: %s" % (label, ",".join(map(str, value.shape)), " ".join("%.17g" % v for v in value.ravel())))


training_set_inputs = array([[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1]])
training_set_outputs = array([[0, 1, 1, 0]]).T
random.seed(1)
synaptic_weights = 2 * random.random((3, 1)) - 1
show("start fc1.weight", synaptic_weights)
for iteration in range(10000):
    output = 1 / (1 + exp(-(dot(training_set_inputs, synaptic_weights))))
    synaptic_weights += dot(training_set_inputs.T, (training_set_outputs - output) * output * (1 - output))
show("final fc1.weight", synaptic_weights)
new_situation = array([[1, 0, 0]])
show("input", new_situation)
show("predictions", 1 / (1 + exp(-(dot(new_situation, synaptic_weights)))))
