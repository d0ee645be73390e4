"""Peer: models/fashion_resnet.nn in PyTorch eager on the CPU (the same network: a stem, two residual
blocks with batch norm, the second with a strided 1x1 projection shortcut, global average pooling;
Adam lr 0.002, batch 128). Prints training samples/s and the test accuracy.
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
        self.block1 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                    nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.block2 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                    nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64))
        self.shortcut = nn.Sequential(nn.Conv2d(32, 64, 1, stride=2, bias=False), nn.BatchNorm2d(64))
        self.fc = nn.Linear(64, 10)
    def forward(self, x):
        a = self.stem(x)
        b = torch.relu(self.block1(a) + a)
        c = torch.relu(self.block2(b) + self.shortcut(b))
        return self.fc(c.mean(dim=(2, 3)))

model = ResNet()
opt = torch.optim.Adam(model.parameters(), lr=0.002); lossf = nn.CrossEntropyLoss()
n = len(x)
t = time.perf_counter()
for ep in range(EPOCHS):
    model.train()
    perm = torch.from_numpy(np.random.default_rng(ep).permutation(len(x)))
    for s in range(0, n, B):
        idx = perm[s:s + B]
        opt.zero_grad(set_to_none=True); loss = lossf(model(x[idx]), y[idx]); loss.backward(); opt.step()
dt = time.perf_counter() - t
model.eval()
with torch.no_grad(): acc = float((torch.cat([model(xt[i:i + 1000]) for i in range(0, len(xt), 1000)]).argmax(1).numpy() == yt).mean())
print(f"torch resnet: {EPOCHS * n / dt:.0f} samples/s train, {dt:.2f} s, test accuracy {acc:.4f}")
