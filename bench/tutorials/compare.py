"""Checks that nnc reproduces the NumPy tutorials: for each model in models/ with a reference
script here, runs the reference (float64), then

    nnc compile models/NAME.nn --dtype f64 -o T/NAME.start.nnc   (starting weights)
    nnc train   models/NAME.nn --dtype f64 -o T/NAME.nnc
    nnc export  T/NAME.nnc --weights T/NAME.npz
    nnc run     T/NAME.nnc --input T/NAME.input.csv             (features only)

and prints the largest difference of the starting weights, the final weights and the
predictions. A value matches when |nnc - numpy| <= tol * max(1, |numpy|) (tol 1e-6: absolute for
the weights, relative for habr's outputs of ~1e9). Exit status 1 when something does not match.

With --numpy-init, nnc starts from the reference's starting weights (`nnc train --init W.npz`),
which checks the training semantics independently of nnc's random number generator.

usage: python3 bench/tutorials/compare.py [--nnc PATH] [--tol 1e-6] [--numpy-init] [NAME ...]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
NAMES = ["neuron", "trask2", "trask3", "loy", "xor", "habr", "weidman"]
LINE = re.compile(r"^(start \S+|final \S+|input|predictions) \[([\d,]*)\]: (.*)$")


def reference(name):
    out = subprocess.run([sys.executable, os.path.join(HERE, name + ".py")], check=True,
                         capture_output=True, text=True).stdout
    values = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            shape = tuple(int(d) for d in m.group(2).split(",") if d)
            values[m.group(1)] = np.array([float(v) for v in m.group(3).split()]).reshape(shape)
    return values


def nnc(binary, *args):
    result = subprocess.run([binary, *args], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit("nnc %s failed (%d):\n%s%s" % (" ".join(args), result.returncode, result.stdout, result.stderr))
    return result.stdout


def difference(mine, theirs):
    mine, theirs = np.asarray(mine, dtype=float).ravel(), np.asarray(theirs, dtype=float).ravel()
    if mine.shape != theirs.shape:
        return float("inf"), float("inf")
    absolute = np.abs(mine - theirs)
    return absolute.max(), (absolute / np.maximum(1, np.abs(theirs))).max()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nnc", default=os.path.join(ROOT, ".build", "release", "nnc"))
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--numpy-init", action="store_true",
                        help="start nnc from the reference's starting weights (nnc train --init W.npz): checks "
                             "the training semantics without nnc's random number generator")
    parser.add_argument("names", nargs="*", default=NAMES)
    options = parser.parse_args()
    options.nnc = os.path.abspath(options.nnc)
    if not os.access(options.nnc, os.X_OK):
        sys.exit("no nnc binary at %s (build it: swift build -c release, or pass --nnc PATH)" % options.nnc)
    tmp = tempfile.mkdtemp(prefix="nnc-tutorials-")
    failed = False
    print("%-8s %-22s %12s %12s" % ("model", "what", "max |diff|", "scaled"))
    for name in options.names:
        ref = reference(name)
        model = os.path.join("models", name + ".nn")
        start, final = os.path.join(tmp, name + ".start.nnc"), os.path.join(tmp, name + ".nnc")
        nnc(options.nnc, "compile", model, "--dtype", "f64", "-o", start)
        init = []
        if options.numpy_init:
            init = ["--init", os.path.join(tmp, name + ".numpy-start.npz")]
            np.savez(init[1], **{k.split(" ", 1)[1]: v for k, v in ref.items() if k.startswith("start ")})
        nnc(options.nnc, "train", model, "--dtype", "f64", "-o", final, *init)
        rows = []
        for which, path in (("start", start), ("final", final))[1 if options.numpy_init else 0:]:
            npz = path[:-4] + ".npz"
            nnc(options.nnc, "export", path, "--weights", npz)
            weights = np.load(npz)
            for key in sorted(k for k in ref if k.startswith(which + " ")):
                parameter = key.split(" ", 1)[1]
                if parameter not in weights:
                    rows.append((key, float("inf"), float("inf")))
                    continue
                rows.append((key, *difference(weights[parameter], ref[key])))
        inputs = os.path.join(tmp, name + ".input.csv")
        np.savetxt(inputs, ref["input"].reshape(ref["input"].shape[0], -1), delimiter=",", fmt="%.17g")
        out = nnc(options.nnc, "run", final, "--input", inputs)
        predictions = [[float(v) for v in line.split(",")] for line in out.splitlines() if line.strip()]
        rows.append(("predictions", *difference(predictions, ref["predictions"])))
        for what, absolute, scaled in rows:
            bad = not scaled <= options.tol
            failed |= bad
            print("%-8s %-22s %12.3g %12.3g%s" % (name, what, absolute, scaled, "   MISMATCH" if bad else ""))
    print("all match to %g" % options.tol if not failed else "MISMATCHES (tolerance %g)" % options.tol)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
