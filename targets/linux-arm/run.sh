#!/usr/bin/env bash
# ARM Linux (aarch64 and armv7 hard-float) under qemu-user:
#  1. the kernels' and runtime's own tests, cross-built and run under qemu;
#  2. `edgefleet` without the compiler (inspect/run/bench), release build;
#  3. the MLPerf Tiny conformance set run by that binary under qemu: every
#     output must be bit-identical to the x86-64 output of the same package
#     and input (and so, for int8 inputs, to TensorFlow Lite Micro's);
#  4. figures: stripped binary size and peak RSS under qemu-user;
#  5. the lean device daemon `edgefleet-agent`, release: provisioned with the
#     KWS package from files (the verified update path), then run under qemu
#     against a real mosquitto with telemetry on, serving inferences over its
#     local API: stripped size and peak RSS.
# Usage: targets/linux-arm/run.sh [aarch64|armv7]...
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

require_apt gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user time mosquitto

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

# Keys, root of trust and a signed KWS manifest for provisioning the agents.
SIGN=$OUT/agent-keys
rm -rf "$SIGN" && mkdir -p "$SIGN"
host=$TARGET_DIR/debug/edgefleet
"$host" keys generate root --dir "$SIGN" >/dev/null
"$host" keys generate release --dir "$SIGN" >/dev/null
"$host" keys root --root-key "$SIGN/root.key" --release-key "$SIGN/release.pub" -o "$SIGN/root.signed" >/dev/null
"$host" sign "$OUT/packages/kws.efm" --key "$SIGN/release.key" --hardware arm-board --counter 1 --version 1.0 \
  -o "$SIGN/kws.manifest" >/dev/null

rss_kib() { # rss_kib COMMAND...: peak RSS in KiB of the command (qemu included)
  /usr/bin/time -f '%M' -o "$OUT/rss.txt" "$@" >/dev/null
  cat "$OUT/rss.txt"
}

for a in "${ARCHES[@]}"; do
  t=${TRIPLE[$a]}
  read -r -a qemu <<<"${QEMU[$a]}"

  step "$a: kernels and runtime tests under ${qemu[0]} (fast paths required, then the reference path)"
  # The kernel battery proves each fast ISA equal to the reference; requiring
  # the ISA makes a probe that silently falls back a failure. qemu's default
  # aarch64 CPU has the dot product extension; armv7 builds have the DSP
  # kernels (smlad) chosen at compile time.
  case $a in aarch64) isa=neondot ;; armv7) isa=dsp ;; *) isa=reference ;; esac
  EDGEFLEET_REQUIRE_ISA=$isa cargo test --locked -p edgefleet-kernels -p edgefleet-runtime \
    --features edgefleet-kernels/std --target "$t"
  EDGEFLEET_KERNELS=reference cargo test --locked -p edgefleet-runtime --target "$t"

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

  step "$a: edgefleet-agent (release), provisioned from files, serving under ${qemu[0]} with mosquitto"
  cargo build --locked --release -p edgefleet-agent --target "$t"
  agent=$OUT/$a/edgefleet-agent
  "${STRIP[$a]}" -o "$agent" "$TARGET_DIR/$t/release/edgefleet-agent"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mosquitto -p "$port" >/dev/null 2>&1 &
  broker=$!
  adir=$OUT/$a/agent
  rm -rf "$adir" && mkdir -p "$adir"
  cat >"$adir/agent.toml" <<CONF
device_id = "arm-$a"
hardware_id = "arm-board"
platform = "linux-arm"
state_dir = "$adir/state"
root_of_trust = "$SIGN/root.signed"
[mqtt]
port = $port
[api]
listen = "127.0.0.1:0"
[telemetry]
interval_ms = 1000
[update]
latency_budget_ms = 20000
CONF
  "${qemu[@]}" "$agent" --config "$adir/agent.toml" --install "$OUT/packages/kws.efm" --manifest "$SIGN/kws.manifest" >/dev/null
  /usr/bin/time -f '%M' -o "$adir/rss.txt" "${qemu[@]}" "$agent" --config "$adir/agent.toml" 2>"$adir/agent.log" &
  runner=$!
  served=$(python3 "$ROOT/targets/linux-arm/agent.py" "$adir/state" "$DATA/ref/kws/real.input_f32.npy" 50) \
    || { kill "$runner" "$broker" 2>/dev/null; cat "$adir/agent.log"; die "$a: the agent did not serve"; }
  sleep 2 # a telemetry window goes out
  pkill -TERM -P "$runner" 2>/dev/null || true
  wait "$runner" || die "$a: the agent did not stop cleanly on SIGTERM (log: $adir/agent.log)"
  kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null || true
  grep -q "connected to the broker" "$adir/agent.log" || die "$a: the agent never reached mosquitto"
  echo "$served"
  figure linux-arm \
    "$a: edgefleet-agent, release, stripped: $(stat -c %s "$agent") bytes; peak RSS under ${qemu[0]} (emulator included) serving KWS with telemetry to mosquitto: $(cat "$adir/rss.txt") KiB"
done

step "linux-arm: all passed"
