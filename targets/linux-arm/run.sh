#!/usr/bin/env bash
# ARM Linux (aarch64 and armv7 hard-float) under qemu-user:
#  1. the kernels' and runtime's own tests, cross-built and run under qemu;
#  2. `edgefleet` without the compiler (inspect/run/bench), release build;
#  3. the MLPerf Tiny conformance set run by that binary under qemu: every
#     output must be bit-identical to the x86-64 output of the same package
#     and input (and so, for int8 inputs, to TensorFlow Lite Micro's);
#  4. figures: stripped binary size and peak RSS under qemu-user.
# Usage: targets/linux-arm/run.sh [aarch64|armv7]...
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

require_apt gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user time

declare -A TRIPLE=([aarch64]=aarch64-unknown-linux-gnu [armv7]=armv7-unknown-linux-gnueabihf)
declare -A QEMU=([aarch64]="qemu-aarch64 -L /usr/aarch64-linux-gnu" [armv7]="qemu-arm -L /usr/arm-linux-gnueabihf")
declare -A STRIP=([aarch64]=aarch64-linux-gnu-strip [armv7]=arm-linux-gnueabihf-strip)
if [ $# -gt 0 ]; then ARCHES=("$@"); else ARCHES=(aarch64 armv7); fi
for a in "${ARCHES[@]}"; do
  [ -n "${TRIPLE[$a]:-}" ] || die "unknown architecture '$a' (aarch64, armv7)"
  rustup_targets "${TRIPLE[$a]}"
done
host_packages
reset_figures linux-arm
cd "$ROOT" || exit

rss_kib() { # rss_kib COMMAND...: peak RSS in KiB of the command (qemu included)
  /usr/bin/time -f '%M' -o "$OUT/rss.txt" "$@" >/dev/null
  cat "$OUT/rss.txt"
}

for a in "${ARCHES[@]}"; do
  t=${TRIPLE[$a]}
  read -r -a qemu <<<"${QEMU[$a]}"

  step "$a: kernels and runtime tests under ${qemu[0]}"
  cargo test --locked -p edgefleet-kernels -p edgefleet-runtime --target "$t"

  step "$a: edgefleet without the compiler (release)"
  cargo build --locked --release -p edgefleet --no-default-features --target "$t"
  mkdir -p "$OUT/$a"
  bin=$OUT/$a/edgefleet
  "${STRIP[$a]}" -o "$bin" "$TARGET_DIR/$t/release/edgefleet"
  if "${qemu[@]}" "$bin" compile --help >/dev/null 2>&1; then
    die "$a: the device build of edgefleet still has 'compile'"
  fi

  step "$a: MLPerf Tiny conformance under ${qemu[0]} (outputs vs x86-64, bit for bit)"
  n=0 n_ref=0
  while read -r name pkg input ref; do
    "${qemu[@]}" "$bin" run "$OUT/packages/$pkg" --input "$DATA/$input" -o "$OUT/$a/$name.npy" >/dev/null
    $NPYCMP "$OUT/$a/$name.npy" "$OUT/x86/$name.npy" "$a $name vs x86-64"
    if [ "$ref" != - ]; then
      $NPYCMP "$OUT/$a/$name.npy" "$DATA/$ref" "$a $name vs TFLite Micro"
      n_ref=$((n_ref + 1))
    fi
    n=$((n + 1))
  done < <(conformance_cases)
  echo "$n outputs bit-identical to x86-64 ($n_ref of them also checked against TFLite Micro's)"
  "${qemu[@]}" "$bin" inspect "$OUT/packages/kws.efm" --json >"$OUT/$a/kws.inspect.json"
  "$TARGET_DIR/debug/edgefleet" inspect "$OUT/packages/kws.efm" --json >"$OUT/x86/kws.inspect.json"
  cmp "$OUT/$a/kws.inspect.json" "$OUT/x86/kws.inspect.json" || die "$a: inspect --json differs from x86-64"

  step "$a: figures"
  size=$(stat -c %s "$bin")
  rss_run=$(rss_kib "${qemu[@]}" "$bin" run "$OUT/packages/kws.efm" --input "$DATA/ref/kws/real.input_i8.npy")
  rss_vww=$(rss_kib "${qemu[@]}" "$bin" run "$OUT/packages/vww.efm" --input "$DATA/ref/vww/real.input_i8.npy")
  rss_idle=$(rss_kib "${qemu[@]}" "$bin" --version)
  figure linux-arm \
    "$a: edgefleet --no-default-features (no compiler), release, stripped: $size bytes" \
    "$a: peak RSS under ${qemu[0]} (emulator included): run KWS $rss_run KiB, run VWW $rss_vww KiB, --version $rss_idle KiB"
done

step "linux-arm: all passed"
