"""PyTorch models exported by torch.onnx.export, for Tests/NNCTests/ONNXImportTests.swift: each
model with random weights (and random running statistics for batch norm), exported by both of
PyTorch's exporters (TorchScript, and the dynamo exporter, which needs onnxscript), and ONNX
Runtime's output on a fixed input. The TorchScript exports keep batch norm as a node; the dynamo
exporter folds it into the conv or fc before it. Writes Tests/Data/onnx/NAME-EXPORTER.onnx and
Tests/Data/onnx/onnx_torch_models.json. Usage: python bench/reference/onnx_torch_models.py"""
import json, os, warnings
import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

warnings.filterwarnings("ignore")
torch.manual_seed(0)

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 16); self.bn = nn.BatchNorm1d(16); self.fc2 = nn.Linear(16, 5)
    def forward(self, x):
        return F.softmax(self.fc2(F.relu(self.bn(self.fc1(x)))), dim=1)

class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1); self.conv2 = nn.Conv2d(4, 6, (3, 2), stride=(1, 2))
        self.fc = nn.Linear(6, 5)
    def forward(self, x):
        y = F.max_pool2d(F.leaky_relu(self.conv1(x), 0.1), 2)
        y = F.avg_pool2d(torch.sigmoid(self.conv2(y)), 2)
        return self.fc(torch.flatten(y, 1))

class CNNBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False); self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, groups=2, padding=2, dilation=2); self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 4)
    def forward(self, x):
        y = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        y = F.elu(self.bn2(self.conv2(y)))
        return F.log_softmax(self.fc(y.flatten(1)), dim=1)

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 6, 3, padding=1); self.bn0 = nn.BatchNorm2d(6)
        self.conv1 = nn.Conv2d(6, 6, 3, padding=1); self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1); self.bn2 = nn.BatchNorm2d(6)
        self.side = nn.Conv2d(6, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1); self.fc = nn.Linear(10, 3)
    def forward(self, x):
        a = F.relu(self.bn0(self.stem(x)))
        b = F.relu(self.bn1(self.conv1(a)))
        b = F.relu(self.bn2(self.conv2(b)) + a)
        c = torch.cat([b, self.side(a)], dim=1)
        return self.fc(torch.flatten(self.pool(c), 1))

class Conv1D(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 5, 3, padding=1); self.bn = nn.BatchNorm1d(5); self.prelu = nn.PReLU(5)
        self.fc = nn.Linear(5 * 5, 2)
    def forward(self, x):
        y = F.max_pool1d(self.prelu(self.bn(self.conv(x))), 2)
        return self.fc(y.flatten(1))

class MobileStyle(nn.Module):
    """ReLU6, hardtanh, SiLU, x.view(x.size(0), -1) (shape arithmetic in the TorchScript export), a mean over H and W."""
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1); self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, groups=6); self.conv3 = nn.Conv2d(6, 8, 1)
        self.fc1 = nn.Linear(8 * 4 * 4, 10); self.fc2 = nn.Linear(8, 10)
    def forward(self, x):
        y = F.relu6(self.bn1(self.conv1(x)))
        y = F.silu(self.conv2(y))
        y = F.hardtanh(self.conv3(y), -2.0, 2.0)
        return self.fc1(y.view(y.size(0), -1)) + self.fc2(y.mean([2, 3]))

models = [("mlp", MLP, (12,)), ("cnn", CNN, (1, 8, 8)), ("cnn_bn", CNNBatchNorm, (3, 8, 8)),
          ("residual", Residual, (2, 6, 6)), ("conv1d", Conv1D, (3, 10)), ("mobile", MobileStyle, (3, 8, 8))]
directory = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Data", "onnx")
os.makedirs(directory, exist_ok=True)
cases = []
for name, cls, shape in models:
    model = cls()
    with torch.no_grad():
        for bname, b in model.named_buffers():
            if bname.endswith("running_mean"): b.copy_(torch.rand_like(b) - 0.5)
            if bname.endswith("running_var"): b.copy_(torch.rand_like(b) + 0.5)
        for pname, p in model.named_parameters():
            if "bn" in pname: p.copy_(torch.rand_like(p) + 0.5 if pname.endswith("weight") else torch.rand_like(p) - 0.5)
    model.eval()
    x = torch.randn(3, *shape)
    for exporter in ["torchscript", "dynamo"]:
        path = os.path.join(directory, f"{name}-{exporter}.onnx")
        if exporter == "torchscript":
            # Without constant folding batch norm stays a BatchNormalization node (the dynamo exporter folds it).
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                              do_constant_folding=False)
        else:
            torch.onnx.export(model, (x,), path, dynamo=True, input_names=["x"], output_names=["y"],
                              dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=1024)}}, external_data=False)
        onnx.checker.check_model(onnx.load(path), full_check=True)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        y = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        print(f"{name}-{exporter}: opset {onnx.load(path).opset_import[0].version}, ops {ops}")
        cases.append({"file": f"{name}-{exporter}.onnx", "input": {"shape": list(x.shape), "values": x.flatten().tolist()},
                      "output": {"shape": list(y.shape), "values": y.flatten().tolist()}})
with open(os.path.join(directory, "onnx_torch_models.json"), "w") as f:
    json.dump({"torch": torch.__version__, "onnxruntime": ort.__version__, "cases": cases}, f)
print("wrote", os.path.normpath(directory))
