"""The UniFFI Python bindings of edgefleet-uniffi, run against the host library.

    python3 kws_test.py BINDINGS_DIR PACKAGE.efm INPUT.npy EXPECTED.npy

BINDINGS_DIR holds the generated edgefleet_uniffi.py and libedgefleet_uniffi.so.
Runs the int8 and float paths on the KWS package, checks both against the
expected (TensorFlow Lite Micro) output, and checks that a corrupt package
raises the typed error. Exits non-zero on any difference.
"""

import ast
import struct
import sys


def read_npy_i8(path):
    with open(path, "rb") as f:
        b = f.read()
    assert b[:6] == b"\x93NUMPY", path
    start, n = (10, struct.unpack("<H", b[8:10])[0]) if b[6] == 1 else (12, struct.unpack("<I", b[8:12])[0])
    header = ast.literal_eval(b[start : start + n].decode("latin1"))
    assert header["descr"].lstrip("|<=") == "i1" and not header["fortran_order"], path
    return list(struct.unpack("<%db" % (len(b) - start - n), b[start + n :]))


def main():
    bindings, package, input_path, expected_path = sys.argv[1:5]
    sys.path.insert(0, bindings)
    import edgefleet_uniffi as ef

    with open(package, "rb") as f:
        model = ef.EdgefleetModel(f.read())
    x, want = read_npy_i8(input_path), read_npy_i8(expected_path)
    (inp,), (out,) = model.inputs(), model.outputs()
    assert model.arena_size() == 16000, model.arena_size()
    assert inp.shape == [1, 49, 10, 1] and out.shape == [1, 12], (inp.shape, out.shape)

    got = model.run_i8([x])[0]
    assert got == want, f"int8: got {got}, expected {want}"

    floats = [inp.scale * (q - inp.zero_point) for q in x]
    scores = model.run_f32([floats])[0]
    expected = [out.scale * (q - out.zero_point) for q in want]
    assert all(abs(a - b) == 0.0 for a, b in zip(scores, expected)), f"float: got {scores}, expected {expected}"

    try:
        ef.EdgefleetModel(bytes(100))
        raise AssertionError("a corrupt package was accepted")
    except ef.EdgefleetError.InvalidPackage as e:
        assert "magic" in str(e), e
    try:
        model.run_i8([x[:10]])
        raise AssertionError("a short input was accepted")
    except ef.EdgefleetError.InvalidArgument as e:
        assert "490" in str(e), e

    top = max(range(len(got)), key=lambda i: got[i])
    label = out.labels[top] if out.labels else str(top)
    print(f"python bindings: ok, output {got}, top class '{label}'")


if __name__ == "__main__":
    main()
