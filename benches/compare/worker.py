#!/usr/bin/env python3
"""The Python side of `compare`: one persistent process that runs onnxruntime,
LiteRT and TFLite Micro, so Python and the engines start once per run.

Protocol: one JSON object per line on stdin, one JSON reply per line on
stdout; everything else (engine logs) goes to stderr. Requests:

  {"op": "hello"}
      -> {"ok": true, "python": "3.11.7", "versions": {...}, "errors": {...}}
  {"op": "load", "id": "kws/ort-fp32", "engine": "ort"|"litert"|"tflm",
   "model": PATH, "input": NPY_PATH or null, "warmup": N}
      -> {"ok": true, "info": "...", "input": "...", "dtype": "...", "shape": [...]}
  {"op": "run", "id": "kws/ort-fp32", "runs": R, "warmup": W}
      -> {"ok": true, "ns": [R integers]}
  {"op": "quit"}

Each engine times itself with time.perf_counter_ns() around its invoke call
alone: the input is set once at load, so IPC and Python start-up are not in
the figures. Every reply to a failed request is {"ok": false, "error": "..."}.
"""

import gc
import json
import os
import platform
import sys
import time
import traceback

# Engine libraries print to stdout now and then; keep the protocol on a
# private copy of stdout and send fd 1 to stderr.
_PROTO = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

try:
    import numpy as np
except ImportError as e:  # reported by hello; nothing works without numpy
    np = None
    _NUMPY_ERROR = str(e)
else:
    _NUMPY_ERROR = None


def _version(dist):
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        return None


def _try_import(name):
    try:
        __import__(name)
        return None
    except Exception as e:  # noqa: BLE001 - report whatever broke the import
        return f"{type(e).__name__}: {e}"


MODULES = {
    "ort": ("onnxruntime", "onnxruntime"),
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflm": ("tflite_micro.python.tflite_micro.runtime", "tflite-micro"),
}


def hello(_req):
    versions = {"numpy": _version("numpy")}
    errors = {}
    if _NUMPY_ERROR:
        errors["numpy"] = _NUMPY_ERROR
    for engine, (module, dist) in MODULES.items():
        versions[dist] = _version(dist)
        err = _NUMPY_ERROR or _try_import(module)
        if err:
            errors[engine] = f"{dist}: {err}"
    return {
        "ok": True,
        "python": platform.python_version(),
        "executable": sys.executable,
        "versions": versions,
        "errors": errors,
    }


def _input(path, shape, dtype):
    """The reference input reshaped to the model's input, or pseudo-random
    values of the right type and shape when there is none (latency does not
    depend on the values)."""
    shape = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in shape]
    n = int(np.prod(shape))
    if path:
        x = np.load(path)
        if x.size == n and (np.dtype(dtype) == x.dtype or np.issubdtype(np.dtype(dtype), np.floating)):
            return x.astype(dtype).reshape(shape), os.path.basename(path)
    rng = np.random.default_rng(20240601)
    if np.issubdtype(np.dtype(dtype), np.floating):
        return rng.random(shape, dtype=np.float32).astype(dtype), "pseudo-random"
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype), "pseudo-random"


class Ort:
    """onnxruntime, CPU provider, one thread, all graph optimizations, run
    through an IO binding (input and output bound once) so the timed call is
    the session run alone."""

    def __init__(self, path, input_path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        i = self.sess.get_inputs()[0]
        dtype = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}.get(i.type)
        if dtype is None:
            raise ValueError(f"unsupported input type {i.type}")
        self.x, self.source = _input(input_path, i.shape, dtype)
        self.binding = self.sess.io_binding()
        self.binding.bind_ortvalue_input(i.name, ort.OrtValue.ortvalue_from_numpy(self.x))
        for o in self.sess.get_outputs():
            self.binding.bind_output(o.name, "cpu")
        self.info = f"providers {','.join(self.sess.get_providers())}, 1 intra-op thread, ORT_ENABLE_ALL, sequential, IO binding"

    def invoke(self):
        self.sess.run_with_iobinding(self.binding)


class Litert:
    """LiteRT (ai-edge-litert) Interpreter with num_threads=1 and the default
    op resolver, which applies the XNNPACK delegate by default."""

    def __init__(self, path, input_path):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=path, num_threads=1)
        self.it.allocate_tensors()
        d = self.it.get_input_details()[0]
        self.x, self.source = _input(input_path, d["shape"], d["dtype"])
        self.it.set_tensor(d["index"], self.x)
        ops = [o.get("op_name", "") for o in self.it._get_ops_details()]
        delegates = sum(1 for o in ops if o == "DELEGATE")
        if delegates:
            self.info = f"XNNPACK applied ({delegates} delegate node(s) over {len(ops) - delegates} ops)"
        else:
            self.info = f"XNNPACK NOT applied ({len(ops)} builtin ops)"

    def invoke(self):
        self.it.invoke()


class Tflm:
    """TFLite Micro's Python interpreter (reference kernels, the int8 model)."""

    def __init__(self, path, input_path):
        from tflite_micro.python.tflite_micro import runtime

        self.it = runtime.Interpreter.from_file(path)
        d = self.it.get_input_details(0)
        self.x, self.source = _input(input_path, d["shape"], d["dtype"])
        self.it.set_input(self.x, 0)
        self.info = "tflite_micro.runtime.Interpreter, default arena (10x model size)"

    def invoke(self):
        self.it.invoke()


ENGINES = {"ort": Ort, "litert": Litert, "tflm": Tflm}
SESSIONS = {}


def _timed(session, runs):
    invoke = session.invoke
    clock = time.perf_counter_ns
    out = [0] * runs
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for k in range(runs):
            t = clock()
            invoke()
            out[k] = clock() - t
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def load(req):
    if np is None:
        return {"ok": False, "error": f"numpy is not installed: {_NUMPY_ERROR}"}
    engine = req["engine"]
    cls = ENGINES.get(engine)
    if cls is None:
        return {"ok": False, "error": f"unknown engine {engine}"}
    module, dist = MODULES[engine]
    err = _try_import(module)
    if err:
        return {"ok": False, "error": f"{dist} is not usable in {sys.executable}: {err}"}
    if not os.path.isfile(req["model"]):
        return {"ok": False, "error": f"model file not found: {req['model']}"}
    session = cls(req["model"], req.get("input"))
    _timed(session, max(1, int(req.get("warmup", 1))))
    SESSIONS[req["id"]] = session
    return {
        "ok": True,
        "info": session.info,
        "input": session.source,
        "dtype": str(session.x.dtype),
        "shape": list(session.x.shape),
    }


def run(req):
    session = SESSIONS.get(req["id"])
    if session is None:
        return {"ok": False, "error": f"no session {req['id']}"}
    warmup, runs = int(req.get("warmup", 0)), int(req["runs"])
    if runs < 1:
        return {"ok": False, "error": "runs must be at least 1"}
    if warmup:
        _timed(session, warmup)
    return {"ok": True, "ns": _timed(session, runs)}


def main():
    handlers = {"hello": hello, "load": load, "run": run}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "quit":
                break
            handler = handlers.get(req.get("op"))
            reply = handler(req) if handler else {"ok": False, "error": f"unknown op {req.get('op')}"}
        except Exception as e:  # noqa: BLE001 - every failure becomes a reply
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        _PROTO.write(json.dumps(reply) + "\n")
        _PROTO.flush()


if __name__ == "__main__":
    main()
