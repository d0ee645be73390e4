"""The layer library's XOR network ("Math + neural network from scratch in Python"; seed 003,
Chinese), as the tutorial writes it (one file instead of layer.py, fc_layer.py, ...), in float64
-- the reference for models/xor.nn.

FCLayer draws weights then bias as rand - 0.5 (nnc: `init uniform(-0.5,0.5)`, same order);
fit() is per-sample SGD in data order (`batch 1 shuffle off`) on mse (one output, so
mse_prime = 2*(y_pred - y_true)). The tutorial sets no seed: we call np.random.seed(1).
It prints error=0.000242 at epoch 1000 and outputs ~[0.00077, 0.9776, 0.9785, -0.0013] (for
its own unseeded weights).
"""
import numpy as np


def show(label, value):
    value = np.asarray(value, dtype=float)
    print("%s [%s]: %s" % (label, ",".join(map(str, value.shape)), " ".join("%.17g" % v for v in value.ravel())))


# Base class
class Layer:
    def __init__(self):
        self.input = None
        self.output = None
        self.input_shape = None
        self.output_shape = None

    def forward_propagation(self, input):
        raise NotImplementedError

    def backward_propagation(self, output_error, learning_rate):
        raise NotImplementedError


# inherit from base class Layer
class FCLayer(Layer):
    # input_shape = (1,i) i the number of input neurons
    # output_shape = (1,j) j the number of output neurons
    def __init__(self, input_shape, output_shape):
        self.input_shape = input_shape
        self.output_shape = output_shape
        self.weights = np.random.rand(input_shape[1], output_shape[1]) - 0.5
        self.bias = np.random.rand(1, output_shape[1]) - 0.5

    # returns output for a given input
    def forward_propagation(self, input):
        self.input = input
        self.output = np.dot(self.input, self.weights) + self.bias
        return self.output

    # computes dE/dW, dE/dB for a given output_error=dE/dY. Returns input_error=dE/dX.
    def backward_propagation(self, output_error, learning_rate):
        input_error = np.dot(output_error, self.weights.T)
        dWeights = np.dot(self.input.T, output_error)
        # dBias = output_error

        # update parameters
        self.weights -= learning_rate * dWeights
        self.bias -= learning_rate * output_error
        return input_error


# inherit from base class Layer
class ActivationLayer(Layer):
    # input_shape = (1,i) i the number of input neurons
    def __init__(self, input_shape, activation, activation_prime):
        self.input_shape = input_shape
        self.output_shape = input_shape
        self.activation = activation
        self.activation_prime = activation_prime

    # returns the activated input
    def forward_propagation(self, input):
        self.input = input
        self.output = self.activation(self.input)
        return self.output

    # Returns input_error=dE/dX for a given output_error=dE/dY.
    # learning_rate is not used because there is no "learnable" parameters.
    def backward_propagation(self, output_error, learning_rate):
        return self.activation_prime(self.input) * output_error


# activation function and its derivative
def tanh(x):
    return np.tanh(x)


def tanh_prime(x):
    return 1 - np.tanh(x) ** 2


# loss function and its derivative
def mse(y_true, y_pred):
    return np.mean(np.power(y_true - y_pred, 2))


def mse_prime(y_true, y_pred):
    return 2 * (y_pred - y_true) / y_true.size


class Network:
    def __init__(self):
        self.layers = []
        self.loss = None
        self.loss_prime = None

    # add layer to network
    def add(self, layer):
        self.layers.append(layer)

    # set loss to use
    def use(self, loss, loss_prime):
        self.loss = loss
        self.loss_prime = loss_prime

    # predict output for given input
    def predict(self, input):
        # sample dimension first
        samples = len(input)
        result = []

        # run network over all samples
        for i in range(samples):
            # forward propagation
            output = input[i]
            for layer in self.layers:
                output = layer.forward_propagation(output)
            result.append(output)

        return result

    # train the network
    def fit(self, x_train, y_train, epochs, learning_rate):
        # sample dimension first
        samples = len(x_train)

        # training loop
        for i in range(epochs):
            err = 0
            for j in range(samples):
                # forward propagation
                output = x_train[j]
                for layer in self.layers:
                    output = layer.forward_propagation(output)

                # compute loss (for display purpose only)
                err += self.loss(y_train[j], output)

                # backward propagation
                error = self.loss_prime(y_train[j], output)
                # loop from the end of the network to the beginning
                for layer in reversed(self.layers):
                    # backpropagate the error
                    error = layer.backward_propagation(error, learning_rate)

            # calculate average error on all samples
            err /= samples
            if (i + 1) % 100 == 0:
                print('epoch %d/%d   error=%f' % (i + 1, epochs, err))
        return err


# training data
x_train = np.array([[[0, 0]], [[0, 1]], [[1, 0]], [[1, 1]]])
y_train = np.array([[[0]], [[1]], [[1]], [[0]]])

np.random.seed(1)  # not in the tutorial
# network
net = Network()
net.add(FCLayer((1, 2), (1, 3)))
net.add(ActivationLayer((1, 3), tanh, tanh_prime))
net.add(FCLayer((1, 3), (1, 1)))
net.add(ActivationLayer((1, 1), tanh, tanh_prime))
fc1, fc2 = net.layers[0], net.layers[2]
show("start fc1.weight", fc1.weights)
show("start fc1.bias", fc1.bias[0])
show("start fc2.weight", fc2.weights)
show("start fc2.bias", fc2.bias[0])

# train
net.use(mse, mse_prime)
net.fit(x_train, y_train, epochs=1000, learning_rate=0.1)

# test
out = net.predict(x_train)
print(out)
show("final fc1.weight", fc1.weights)
show("final fc1.bias", fc1.bias[0])
show("final fc2.weight", fc2.weights)
show("final fc2.bias", fc2.bias[0])
show("input", x_train[:, 0, :])
show("predictions", np.array(out)[:, 0, :])
