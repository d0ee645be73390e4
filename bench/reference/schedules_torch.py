"""Learning rates (and momenta) from PyTorch's schedulers, for Tests/NNCTests/ScheduleTests.swift:
OneCycleLR with its defaults over SGD (momentum cycled) and Adam (beta1 cycled), stepped every
batch; StepLR and CosineAnnealingLR stepped every epoch; a linear warmup (LinearLR with
start_factor 1/(N+1), total_iters N) chained with cosine annealing. Writes Tests/Data/schedules_torch.json.
Usage: python bench/reference/schedules_torch.py"""
import json, os
import torch

EPOCHS, STEPS, LR = 7, 5, 0.2

def optimizer(kind):
    p = torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([p], lr=LR, momentum=0.9) if kind == "sgd" else torch.optim.Adam([p], lr=LR)

cases = {}
for kind in ["sgd", "adam"]:
    opt = optimizer(kind)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, epochs=EPOCHS, steps_per_epoch=STEPS)
    rates, momenta = [], []
    for _ in range(EPOCHS * STEPS):
        group = opt.param_groups[0]
        rates.append(group["lr"])
        momenta.append(group["momentum"] if kind == "sgd" else group["betas"][0])
        opt.step(); sched.step()
    cases[f"onecycle_{kind}"] = {"rates": rates, "momenta": momenta}

def per_epoch(make):
    opt = optimizer("sgd")
    sched = make(opt)
    rates = []
    for _ in range(EPOCHS):
        rates.append(opt.param_groups[0]["lr"])
        opt.step(); sched.step()
    return rates

cases["step_3_0.5"] = {"rates": per_epoch(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5))}
cases["cosine"] = {"rates": per_epoch(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=EPOCHS))}
cases["warmup_3_cosine"] = {"rates": per_epoch(lambda o: torch.optim.lr_scheduler.ChainedScheduler([
    torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 4, total_iters=3),
    torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=EPOCHS)]))}
# Training under onecycle (float64, no shuffle): the weights after 3 epochs of 3 steps, for SGD with
# momentum and for Adam, from the same start.
torch.manual_seed(3)
torch.set_default_dtype(torch.float64)
x, y = torch.randn(6, 3), torch.randn(6, 2)
runs = {}
for kind in ["sgd", "adam"]:
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    start = {f"fc{i + 1}.{n}": (p.detach().t() if n == "weight" else p.detach()).flatten().tolist()
             for i, layer in enumerate([model[0], model[2]]) for n, p in layer.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if kind == "sgd" else torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], epochs=3, steps_per_epoch=3)
    for epoch in range(3):
        for step in range(3):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x[2 * step:2 * step + 2]), y[2 * step:2 * step + 2]).backward()
            opt.step(); sched.step()
    after = {f"fc{i + 1}.{n}": (p.detach().t() if n == "weight" else p.detach()).flatten().tolist()
             for i, layer in enumerate([model[0], model[2]]) for n, p in layer.named_parameters()}
    runs[kind] = {"start": start, "after": after}
training = {"x": x.flatten().tolist(), "y": y.flatten().tolist(), "runs": runs}

path = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Data", "schedules_torch.json")
with open(path, "w") as f:
    json.dump({"torch": torch.__version__, "epochs": EPOCHS, "steps": STEPS, "lr": LR, "cases": cases, "training": training}, f)
print("wrote", os.path.normpath(path))
