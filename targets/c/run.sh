#!/usr/bin/env bash
# The C ABI (ffi/, edgefleet-ffi) from C: ffi/examples/kws.c built with gcc
# against libedgefleet_ffi.a loads the KWS package, runs the reference inputs
# (int8 and float paths) and checks the outputs against TensorFlow Lite
# Micro's; on x86-64, and cross-built for aarch64 and run under qemu-aarch64.
# The header's freshness is checked by `cargo test -p edgefleet-ffi`.
# Usage: targets/c/run.sh
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

require_apt gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
rustup_targets aarch64-unknown-linux-gnu
host_packages
cd "$ROOT" || exit

CFLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -Werror -I"$ROOT/ffi/include")
LIBS=(-lm -lpthread -ldl)
mkdir -p "$OUT/c"

check() { # check LABEL RUNNER...: runs the program on both reference inputs
  local label=$1 s
  shift
  for s in real seeded; do
    "$@" "$OUT/packages/kws.efm" "$DATA/ref/kws/$s.input_i8.npy" "$DATA/ref/kws/$s.tflm_int8.npy" \
      >"$OUT/c/$label-$s.txt" || { cat "$OUT/c/$label-$s.txt"; die "$label: kws.c failed on the $s input"; }
    grep -q '^kws: ok' "$OUT/c/$label-$s.txt" || die "$label: kws.c did not report success"
  done
  cat "$OUT/c/$label-real.txt"
}

step "C ABI on $HOST_TRIPLE: gcc + libedgefleet_ffi.a"
cargo build --locked -p edgefleet-ffi
gcc "${CFLAGS[@]}" ffi/examples/kws.c "$TARGET_DIR/debug/libedgefleet_ffi.a" "${LIBS[@]}" -o "$OUT/c/kws-host"
check host "$OUT/c/kws-host"

step "C ABI on aarch64: aarch64-linux-gnu-gcc + libedgefleet_ffi.a, run under qemu-aarch64"
cargo build --locked -p edgefleet-ffi --target aarch64-unknown-linux-gnu
aarch64-linux-gnu-gcc "${CFLAGS[@]}" ffi/examples/kws.c \
  "$TARGET_DIR/aarch64-unknown-linux-gnu/debug/libedgefleet_ffi.a" "${LIBS[@]}" -o "$OUT/c/kws-aarch64"
check aarch64 qemu-aarch64 -L /usr/aarch64-linux-gnu "$OUT/c/kws-aarch64"

step "c: all passed"
