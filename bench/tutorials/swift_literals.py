"""Prints the reference numbers of every tutorial as the Swift literals that
Tests/NNCTests/TutorialTests.swift hard-codes (run after changing a reference script).

usage: python3 bench/tutorials/swift_literals.py
"""
import compare


def doubles(values):
    return "[" + ", ".join(repr(float(v)) for v in values.ravel()) + "]"


for name in compare.NAMES:
    ref = compare.reference(name)
    params = lambda which: "[" + ", ".join('"%s": %s' % (k.split(" ", 1)[1], doubles(v))
                                            for k, v in ref.items() if k.startswith(which + " ")) + "]"
    rows = ", ".join(doubles(row) for row in ref["input"].reshape(ref["input"].shape[0], -1))
    print('    TutorialReference(\n        model: "%s",\n        start: %s,\n        final: %s,\n'
          '        input: [%s],\n        predictions: %s),' % (name, params("start"), params("final"), rows,
                                                              doubles(ref["predictions"])))
