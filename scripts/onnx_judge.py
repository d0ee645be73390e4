"""The outside judges of ONNX files nnc wrote: onnx.checker (with full shape inference) and ONNX Runtime.

Usage: onnx_judge.py < REQUESTS.json, a list of {"path": MODEL.onnx, "shape": [...], "values": [...],
"dtype": "float32" | "float64"}. Prints a list of {"checker": "ok" or the checker's complaint,
"shape": [...], "values": [...]} (ONNX Runtime's output), or {"error": ...} where Runtime refused
the model. One process for many models: importing onnxruntime takes a while."""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

results = []
for request in json.load(sys.stdin):
    result = {}
    try:
        onnx.checker.check_model(onnx.load(request["path"]), full_check=True)
        result["checker"] = "ok"
    except Exception as error:  # the checker's complaint is the result
        result["checker"] = str(error)
    try:
        session = ort.InferenceSession(request["path"], providers=["CPUExecutionProvider"])
        x = np.array(request["values"], dtype=request.get("dtype", "float32")).reshape(request["shape"])
        y = session.run(None, {session.get_inputs()[0].name: x})[0]
        result["shape"] = list(y.shape)
        result["values"] = [float(v) for v in y.ravel()]
    except Exception as error:
        result["error"] = str(error)
    results.append(result)
print(json.dumps(results))
