"""Peer: models/fashion_resnet.nn in PyTorch eager on the CPU (the same network: a stem, a residual block
with batch norm, max pooling, a dropout-regularised fc head; SGD momentum 0.9 nesterov, lr 0.05, weight
decay 5e-4, batch 128, cosine schedule). Prints training samples/s and the test accuracy.
Usage: PYTHON bench/resnet_torch.py  (EPOCHS, LIMIT and THREADS from the environment; the data from
../shared/bench/peers/fmnist.py)."""
import os, sys, time
import numpy as np, torch
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "shared", "bench", "peers")); import fmnist
EPOCHS = int(os.environ.get("EPOCHS", "1")); LIMIT = int(os.environ.get("LIMIT", "60000")); B = 128
if "THREADS" in os.environ: torch.set_num_threads(int(os.environ["THREADS"]))
torch.manual_seed(0)
x, y = fmnist.load("train"); xt, yt = fmnist.load("test")
x = torch.from_numpy(x[:LIMIT]).reshape(-1, 1, 28, 28); y = torch.from_numpy(y[:LIMIT]); xt = torch.from_numpy(xt).reshape(-1, 1, 28, 28)
nn = torch.nn

class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                   nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(1568, 128), nn.ReLU(),
                                  nn.Dropout(0.3), nn.Linear(128, 10))
    def forward(self, x):
        a = self.stem(x)
        return self.head(torch.relu(self.block(a) + a))

model = ResNet()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, EPOCHS))
lossf = nn.CrossEntropyLoss()
n = len(x)
t = time.perf_counter()
for ep in range(EPOCHS):
    model.train()
    perm = torch.from_numpy(np.random.default_rng(ep).permutation(len(x)))
    for s in range(0, n, B):
        idx = perm[s:s + B]
        opt.zero_grad(set_to_none=True); loss = lossf(model(x[idx]), y[idx]); loss.backward(); opt.step()
    sched.step()
dt = time.perf_counter() - t
model.eval()
with torch.no_grad(): acc = float((torch.cat([model(xt[i:i + 1000]) for i in range(0, len(xt), 1000)]).argmax(1).numpy() == yt).mean())
print(f"torch resnet: {EPOCHS * n / dt:.0f} samples/s train, {dt:.2f} s, test accuracy {acc:.4f}")
