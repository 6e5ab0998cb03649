#!/usr/bin/env python3
"""Compares the values of two .npy files, exactly.

    npycmp.py GOT.npy EXPECTED.npy [LABEL]
    npycmp.py --values FILE.npy      # prints the values, space-separated

Exit status 0 if both hold the same element type and the same values in the
same order (shapes may differ by leading 1s: `edgefleet run` writes [N, ...]).
Otherwise prints expected vs got for the first differences and exits 1.
Standard library only: CI machines have python3 but not numpy.
"""

import ast
import struct
import sys

FORMATS = {"i1": "b", "u1": "B", "f4": "f", "f8": "d", "i4": "i", "i8": "q"}


def read(path):
    with open(path, "rb") as f:
        b = f.read()
    if b[:6] != b"\x93NUMPY":
        sys.exit(f"{path}: not a .npy file")
    if b[6] == 1:
        start, n = 10, struct.unpack("<H", b[8:10])[0]
    else:
        start, n = 12, struct.unpack("<I", b[8:12])[0]
    header = ast.literal_eval(b[start : start + n].decode("latin1"))
    if header["fortran_order"]:
        sys.exit(f"{path}: Fortran order is not supported")
    descr = header["descr"]
    kind = descr.lstrip("<|=")
    if kind not in FORMATS or descr.startswith(">"):
        sys.exit(f"{path}: dtype {descr} is not supported")
    payload = b[start + n :]
    count = len(payload) // struct.calcsize(FORMATS[kind])
    values = struct.unpack("<%d%s" % (count, FORMATS[kind]), payload)
    return kind, tuple(header["shape"]), values


def squeeze(shape):
    return tuple(d for d in shape if d != 1)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--values":
        print(" ".join(str(v) for v in read(sys.argv[2])[2]))
        return
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    got_path, want_path = sys.argv[1], sys.argv[2]
    label = sys.argv[3] if len(sys.argv) == 4 else got_path
    got, want = read(got_path), read(want_path)
    problems = []
    if got[0] != want[0]:
        problems.append(f"dtype {got[0]} vs expected {want[0]}")
    if squeeze(got[1]) != squeeze(want[1]):
        problems.append(f"shape {got[1]} vs expected {want[1]}")
    # Compare bit patterns, so -0.0 != 0.0 and NaNs compare by payload.
    diffs = [i for i, (g, w) in enumerate(zip(got[2], want[2])) if struct.pack("<d", g) != struct.pack("<d", w)]
    for i in diffs[:8]:
        problems.append(f"[{i}] got {got[2][i]!r}, expected {want[2][i]!r}")
    if len(diffs) > 8:
        problems.append(f"... {len(diffs)} values differ")
    if problems:
        print(f"MISMATCH {label}: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
