#!/usr/bin/env python3
"""Regenerates ref/<model>/calib.ort_fp32.npy: ONNX Runtime fp32 outputs on
every calibration sample (for ad: ref/ad/calib.ort_fp32_score.npy, the anomaly
score = mean squared error between input and reconstruction, per window), so the test suite can measure top-1 agreement of
edgefleet's own quantization with the fp32 model without ONNX Runtime.

Usage (from testdata/mlperf-tiny):
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install onnxruntime==1.32.0 numpy
    /tmp/venv/bin/python tools/gen_calib_refs.py

Calibration inputs exactly as the tests feed them:
- kws: calib/kws_calib_f32.npy as is
- vww: calib/vww_calib_u8.npy / 255 (the fp32 model expects pixels in [0, 1])
- ic:  calib/ic_calib_u8.npy as float (raw 0..255 pixels)
- ad:  the 196 windows of 5 consecutive frames of
       inputs/ad01_normal_id_01_00000000_hist_librosa.bin (200 x 128 float32),
       flattened frame-major to 640 values (window i = frames i..i+4)
"""
import os
import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ad_windows():
    frames = np.fromfile(os.path.join(HERE, "inputs/ad01_normal_id_01_00000000_hist_librosa.bin"), dtype="<f4").reshape(200, 128)
    return np.stack([frames[i:i + 5].reshape(640) for i in range(196)]).astype(np.float32)


def calib(model):
    if model == "kws":
        return np.load(os.path.join(HERE, "calib/kws_calib_f32.npy")).astype(np.float32)
    if model == "vww":
        return np.load(os.path.join(HERE, "calib/vww_calib_u8.npy")).astype(np.float32) / 255.0
    if model == "ic":
        return np.load(os.path.join(HERE, "calib/ic_calib_u8.npy")).astype(np.float32)
    return ad_windows()


def main():
    for model in ["kws", "vww", "ic", "ad"]:
        sess = ort.InferenceSession(os.path.join(HERE, f"onnx/{model}_fp32.onnx"), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        xs = calib(model)
        outs = [sess.run(None, {name: x[None]})[0][0] for x in xs]
        out = np.stack(outs).astype(np.float32)
        suffix = "ort_fp32"
        if model == "ad":
            out = np.mean((xs - out) ** 2, axis=1).astype(np.float32)
            suffix = "ort_fp32_score"
        path = os.path.join(HERE, f"ref/{model}/calib.{suffix}.npy")
        np.save(path, out)
        print(f"{model}: {xs.shape} -> {out.shape} ({path})")


if __name__ == "__main__":
    main()
