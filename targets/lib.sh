# shellcheck shell=bash
# Shared by targets/run-all and targets/*/run.sh (sourced, not run):
# paths, step headers, prerequisite checks and the host-compiled packages.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-$ROOT/target}")
# Absolute, so every cargo call below agrees whatever directory it runs in.
export CARGO_TARGET_DIR=$TARGET_DIR
# Everything the target scripts make: packages, outputs, binaries, figures.
OUT=$TARGET_DIR/targets
DATA=$ROOT/testdata/mlperf-tiny
NPYCMP="python3 $ROOT/targets/tools/npycmp.py"
HOST_TRIPLE=$(rustc -vV | sed -n 's/^host: //p')

step() { printf '\n==> %s\n' "$*"; }
die() {
  printf '\nerror: %s\n' "$*" >&2
  exit 1
}

# Debian package -> a command or file it provides. scripts/test-all installs
# every package named here (run-all checks that its APT_PACKAGES list has them).
APT_PROBES=(
  "gcc-aarch64-linux-gnu aarch64-linux-gnu-gcc"
  "gcc-arm-linux-gnueabihf arm-linux-gnueabihf-gcc"
  "libc6-dev-arm64-cross /usr/aarch64-linux-gnu/include/stdio.h"
  "libc6-dev-armhf-cross /usr/arm-linux-gnueabihf/include/stdio.h"
  "qemu-user qemu-aarch64"
  "qemu-user qemu-arm"
  "qemu-system-arm qemu-system-arm"
  "binutils-arm-none-eabi arm-none-eabi-size"
  "time /usr/bin/time"
  "openjdk-17-jre-headless java"
  "libjna-java /usr/share/java/jna.jar"
)

# require_apt PACKAGE...: fails, naming every missing package, unless all of
# the given packages' probes are present.
require_apt() {
  local missing=() probe pkg what
  for probe in "${APT_PROBES[@]}"; do
    pkg=${probe%% *}
    what=${probe#* }
    [[ " $* " == *" $pkg "* ]] || continue
    if [[ $what == /* ]]; then [ -e "$what" ] && continue; else command -v "$what" >/dev/null && continue; fi
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    die "the target tests need Debian packages that are not installed: ${missing[*]}
Install them with:
  sudo apt-get install -y ${missing[*]}
(scripts/test-all installs them; see targets/README.md.)"
  fi
}

all_apt_packages() {
  local probe
  for probe in "${APT_PROBES[@]}"; do echo "${probe%% *}"; done | sort -u
}

rustup_targets() {
  local installed t
  installed=$(rustup target list --installed)
  for t in "$@"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
  done
}

# The conformance set: "name package input reference". Packages are compiled
# on the host by host_packages; a reference (TensorFlow Lite Micro's int8
# output) is given where one exists, else the x86-64 output is the reference.
conformance_cases() {
  local m s
  for m in kws vww ic ad; do
    for s in real seeded; do
      echo "$m-tflite-$s-i8 $m.efm ref/$m/$s.input_i8.npy ref/$m/$s.tflm_int8.npy"
      echo "$m-tflite-$s-f32 $m.efm ref/$m/$s.input_f32.npy -"
    done
  done
  for m in kws vww ic; do
    for s in real seeded; do
      echo "$m-calibrated-$s-f32 ${m}_calibrated.efm ref/$m/$s.input_f32.npy -"
    done
  done
}

# Compiles the conformance packages with the host tool (debug build, with the
# compiler) into $OUT/packages and runs them on x86-64 into $OUT/x86, checking
# the x86 outputs against TensorFlow Lite Micro's. Once per run-all.
host_packages() {
  [ "${EDGEFLEET_TARGETS_PACKAGES_READY:-}" = "$OUT" ] && return 0
  step "host: compile the conformance packages and run them on $HOST_TRIPLE"
  (cd "$ROOT" && cargo build --locked -p edgefleet)
  local edgefleet=$TARGET_DIR/debug/edgefleet m
  mkdir -p "$OUT/packages" "$OUT/x86"
  local labels=down,go,left,no,off,on,right,stop,up,yes,silence,unknown
  "$edgefleet" compile "$DATA/onnx/kws_int8_from_tflite.onnx" --labels "$labels" -o "$OUT/packages/kws.efm" >/dev/null
  for m in vww ic ad; do
    "$edgefleet" compile "$DATA/onnx/${m}_int8_from_tflite.onnx" -o "$OUT/packages/$m.efm" >/dev/null
  done
  "$edgefleet" compile "$DATA/onnx/kws_fp32.onnx" --calibration "$DATA/calib/kws_calib_f32.npy" \
    -o "$OUT/packages/kws_calibrated.efm" >/dev/null
  "$edgefleet" compile "$DATA/onnx/vww_fp32.onnx" --calibration "$DATA/calib/vww_calib_u8.npy" \
    --calibration-scale 0.00392156862745098 -o "$OUT/packages/vww_calibrated.efm" >/dev/null
  "$edgefleet" compile "$DATA/onnx/ic_fp32.onnx" --calibration "$DATA/calib/ic_calib_u8.npy" \
    -o "$OUT/packages/ic_calibrated.efm" >/dev/null
  local name pkg input ref n=0
  while read -r name pkg input ref; do
    "$edgefleet" run "$OUT/packages/$pkg" --input "$DATA/$input" -o "$OUT/x86/$name.npy" >/dev/null
    if [ "$ref" != - ]; then
      $NPYCMP "$OUT/x86/$name.npy" "$DATA/$ref" "x86 $name vs TFLite Micro"
    fi
    n=$((n + 1))
  done < <(conformance_cases)
  echo "compiled $(find "$OUT/packages" -name "*.efm" | wc -l) packages; $n x86-64 outputs, the int8 ones equal to TFLite Micro's"
  export EDGEFLEET_TARGETS_PACKAGES_READY=$OUT
}

# figure TARGET LINE...: records measured figures for run-all's summary.
figure() {
  local target=$1
  shift
  mkdir -p "$OUT/figures"
  printf '%s\n' "$@" >>"$OUT/figures/$target.txt"
  printf '  %s\n' "$@"
}

reset_figures() {
  mkdir -p "$OUT/figures"
  : >"$OUT/figures/$1.txt"
}
