"""Reference numbers from PyTorch for Tests/NNCTests/GraphReferenceTests.swift: graph models
written in nnc's language and built the same way in PyTorch (float64), with the same weights and
running statistics; their evaluation-mode outputs, and the weights and running statistics after one
full-batch SGD step in training mode. Writes Tests/Data/graphs_torch.json.
Usage: python bench/reference/graphs_torch.py"""
import json, os
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)

RESIDUAL = """input 3x6x6
conv 3->4 3x3 pad 1
batchnorm
relu as a
conv 4->4 3x3 pad 1
batchnorm
add a
relu as b
from a
conv 4->4 1x1
concat b
globalavgpool
fc 5
loss crossentropy
train sgd lr 0.1
"""

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1); self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1); self.bn2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 4, 1)
        self.fc1 = nn.Linear(8, 5)
    def forward(self, x):
        a = F.relu(self.bn1(self.conv1(x)))
        b = F.relu(self.bn2(self.conv2(a)) + a)
        c = torch.cat([self.conv3(a), b], dim=1)
        return self.fc1(c.mean(dim=(2, 3)))

BRANCHING = """input 4x7x6
conv 4->6 3x2 stride 2x1 pad 1x0 groups 2 as c
batchnorm momentum 0.3 eps 1e-3
elu 0.5 as e
from c
conv 6->6 3x3 pad 2 dilation 2 groups 3
selu
add e
maxpool 3x3 stride 2 pad 1
avgpool 2x2 stride 1 pad 1
softplus
flatten
fc 8
batchnorm
gelu
fc 5
logsoftmax
loss nll
train sgd lr 0.1
"""

class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), groups=2)
        self.bn1 = nn.BatchNorm2d(6, momentum=0.3, eps=1e-3)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3)
        self.fc1 = nn.Linear(72, 8); self.bn2 = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 5)
    def forward(self, x):
        c = self.conv1(x)
        e = F.elu(self.bn1(c), alpha=0.5)
        y = F.selu(self.conv2(c)) + e
        y = F.max_pool2d(y, 3, stride=2, padding=1)
        y = F.avg_pool2d(y, 2, stride=1, padding=1)
        y = F.softplus(y).flatten(1)
        y = F.gelu(self.bn2(self.fc1(y)), approximate="tanh")
        return F.log_softmax(self.fc2(y), dim=1)

BORDERS = """input 3x5x6
pad 2x1 1x3 reflect
conv 3->4 3x3
prelu 4
pad 1 replicate
relu6
maxpool 2x2
prelu
pad 1x0 0x2 value 0.5
silu
reshape 5x28
hardtanh -0.5 0.7
softsign
abs
scale -0.7
exp
neg
flatten
fc 5
prelu 5
loss crossentropy
train sgd lr 0.1
"""

class Borders(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.prelu1 = nn.PReLU(4); self.prelu2 = nn.PReLU(); self.prelu3 = nn.PReLU(5)
        self.fc1 = nn.Linear(140, 5)
    def forward(self, x):
        y = F.pad(x, (1, 3, 2, 1), mode="reflect")  # (left, right, top, bottom)
        y = self.prelu1(self.conv1(y))
        y = F.max_pool2d(F.relu6(F.pad(y, (1, 1, 1, 1), mode="replicate")), 2)
        y = F.silu(F.pad(self.prelu2(y), (0, 2, 1, 0), value=0.5))
        y = F.hardtanh(y.reshape(-1, 5, 28), -0.5, 0.7)
        y = -torch.exp(F.softsign(y).abs() * -0.7)
        return self.prelu3(self.fc1(y.flatten(1)))

# Batch norms that fuse-batchnorm folds what follows into (with their gradients): relu and a 2×2 max
# pool on odd planes (7×9: the last row and column outside every window), tanh alone, and the residual
# add with leaky relu and a pool.
POOLED = """input 2x7x9
conv 2->3 3x3 pad 1 nobias
batchnorm
relu
maxpool 2x2 as a
conv 3->3 3x3 pad 1 nobias
batchnorm
tanh
conv 3->3 3x3 pad 1 nobias
batchnorm momentum 0.2
add a
leakyrelu 0.1
maxpool 2x2
flatten
fc 5
loss crossentropy
train sgd lr 0.1
"""

class Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=False); self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False); self.bn2 = nn.BatchNorm2d(3)
        self.conv3 = nn.Conv2d(3, 3, 3, padding=1, bias=False); self.bn3 = nn.BatchNorm2d(3, momentum=0.2)
        self.fc1 = nn.Linear(6, 5)
    def forward(self, x):
        a = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        y = self.bn3(self.conv3(torch.tanh(self.bn2(self.conv2(a))))) + a
        return self.fc1(F.max_pool2d(F.leaky_relu(y, 0.1), 2).flatten(1))

def tensors(model):
    """nnc's names and layouts: fc weights transposed to [in, out]."""
    out = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if name.endswith("num_batches_tracked"):
            continue
        v = t.detach()
        if name.startswith("fc") and name.endswith("weight"):
            v = v.t()
        out[name] = {"shape": list(v.shape), "values": v.contiguous().flatten().tolist()}
    return out

cases = []
for name, source, cls, loss_fn, in_shape in [("residual", RESIDUAL, Residual, F.cross_entropy, (3, 6, 6)),
                                             ("branching", BRANCHING, Branching, F.nll_loss, (4, 7, 6)),
                                             ("borders", BORDERS, Borders, F.cross_entropy, (3, 5, 6)),
                                             ("pooled", POOLED, Pooled, F.cross_entropy, (2, 7, 9))]:
    model = cls()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.startswith("bn"):
                p.copy_(torch.rand_like(p) + 0.5 if pname.endswith("weight") else torch.rand_like(p) * 0.4 - 0.2)
            else:
                p.copy_(torch.rand_like(p) - 0.5)
        for bname, b in model.named_buffers():
            if bname.endswith("running_mean"): b.copy_(torch.rand_like(b) - 0.5)
            if bname.endswith("running_var"): b.copy_(torch.rand_like(b) * 1.5 + 0.5)
    x = torch.randn(5, *in_shape)
    labels = torch.randint(0, 5, (5,))
    before = tensors(model)
    model.eval()
    with torch.no_grad():
        evaluation = model(x)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    loss = loss_fn(model(x), labels)
    loss.backward()
    opt.step()
    cases.append({"name": name, "source": source, "tensors": before,
                  "x": {"shape": list(x.shape), "values": x.flatten().tolist()},
                  "labels": labels.tolist(), "eval_output": evaluation.flatten().tolist(),
                  "loss": loss.item(), "after_step": tensors(model)})

path = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Data", "graphs_torch.json")
with open(path, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f)
print("wrote", os.path.normpath(path))
