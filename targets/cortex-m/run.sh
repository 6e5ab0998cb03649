#!/usr/bin/env bash
# Cortex-M4F firmware (thumbv7em-none-eabihf) on QEMU's MPS2-AN386 board:
#  1. fmt, clippy and the host unit tests of the firmware crate;
#  2. a release build embedding the KWS package compiled on the host just
#     before (so the firmware always runs what today's compiler produces);
#  3. a run under qemu-system-arm: the firmware prints its output over
#     semihosting and exits 0 only if it equals TensorFlow Lite Micro's; the
#     printed output must also equal the x86-64 host's. A build embedding the
#     wrong expected output must exit non-zero;
#  4. figures: flash and RAM from the ELF sections, peak stack, and the exact
#     instructions per inference from a QEMU TCG plugin.
# Usage: targets/cortex-m/run.sh
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

require_apt qemu-system-arm binutils-arm-none-eabi
command -v gcc >/dev/null || die "gcc is needed to build the QEMU plugin"
rustup_targets thumbv7em-none-eabihf
host_packages
reset_figures cortex-m

FW=$ROOT/targets/cortex-m
cd "$FW" || exit
# Its own workspace and target directory; .cargo/config.toml here selects
# thumbv7em-none-eabihf and the QEMU runner.
export CARGO_TARGET_DIR=$TARGET_DIR/firmware
export EDGEFLEET_FIRMWARE_PACKAGE=$OUT/packages/kws.efm
ELF=$CARGO_TARGET_DIR/thumbv7em-none-eabihf/release/kws
QEMU=(qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic)
semihosting() { echo "enable=on,target=native,arg=kws,arg=$1"; }

step "firmware: fmt, clippy (thumbv7em and host), unit tests on $HOST_TRIPLE"
cargo fmt --check
cargo clippy --locked -- -D warnings
cargo clippy --locked --lib --tests --target "$HOST_TRIPLE" -- -D warnings
cargo test --locked --lib --target "$HOST_TRIPLE"
cargo test --locked --doc --target "$HOST_TRIPLE"

step "firmware: a build expecting the wrong output must fail on the board"
EDGEFLEET_FIRMWARE_EXPECTED=$DATA/ref/kws/seeded.tflm_int8.npy cargo build --locked --release
cp "$ELF" "$OUT/kws-wrong-expected.elf"
status=0
"${QEMU[@]}" -semihosting-config "$(semihosting 1)" -kernel "$OUT/kws-wrong-expected.elf" >"$OUT/kws-wrong.txt" || status=$?
if ! grep -q '^FAIL' "$OUT/kws-wrong.txt" || [ "$status" -ne 1 ]; then
  die "the firmware did not report a wrong output with exit status 1 (got $status): $(cat "$OUT/kws-wrong.txt")"
fi
echo "exit status $status, as it should: $(grep '^FAIL' "$OUT/kws-wrong.txt")"

step "firmware: release build and run on mps2-an386 (Cortex-M4F) under qemu-system-arm"
cargo build --locked --release
"${QEMU[@]}" -semihosting-config "$(semihosting 1)" -kernel "$ELF" | tee "$OUT/kws-qemu.txt"
host=$($NPYCMP --values "$OUT/x86/kws-tflite-real-i8.npy")
[ "$(sed -n 's/^output: //p' "$OUT/kws-qemu.txt")" = "$host" ] ||
  die "the board's output differs from the x86-64 host's ($host)"
echo "the board's output equals the x86-64 host's and TensorFlow Lite Micro's"

step "firmware: instructions per inference (QEMU TCG plugin)"
gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$OUT/libinsn_count.so" "$FW/plugin/insn_count.c"
count() { # count RUNS: guest instructions of a whole run of the firmware
  "${QEMU[@]}" -semihosting-config "$(semihosting "$1")" -kernel "$ELF" \
    -plugin "$OUT/libinsn_count.so" -d plugin -D "$OUT/insn-$1.log" >/dev/null
  sed -n 's/^instructions: //p' "$OUT/insn-$1.log"
}
# Runs of 10, 11 and 20 inferences: the same code path but for the loop
# count (same digits on the command line), so the differences are exactly
# whole inferences: reading the frame, invoke, copying the scores out.
c10=$(count 10) c11=$(count 11) c20=$(count 20)
per=$((c11 - c10))
[ $((c20 - c10)) -eq $((10 * per)) ] ||
  die "instruction counts are not linear in the run count: $c10, $c11, $c20"
macs=$("$TARGET_DIR/debug/edgefleet" inspect "$EDGEFLEET_FIRMWARE_PACKAGE" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["macs"])')
echo "runs of 10, 11, 20 inferences: $c10, $c11, $c20 instructions"

step "firmware: figures"
arm-none-eabi-size -A "$ELF" | tee "$OUT/kws-size.txt"
sec() { awk -v s="$1" '$1 == s { print $2 }' "$OUT/kws-size.txt"; }
arena=$(sed -n 's/^arena: \([0-9]*\) bytes/\1/p' "$OUT/kws-qemu.txt")
stack=$(sed -n 's/^stack peak: \([0-9]*\) bytes/\1/p' "$OUT/kws-qemu.txt")
package=$(stat -c %s "$EDGEFLEET_FIRMWARE_PACKAGE")
flash=$(($(sec .vector_table) + $(sec .text) + $(sec .rodata) + $(sec .data)))
ram=$(($(sec .data) + $(sec .bss) + $(sec .uninit)))
figure cortex-m \
  "flash: $flash bytes = .vector_table $(sec .vector_table) + .text $(sec .text) + .rodata $(sec .rodata) (package $package) + .data $(sec .data)" \
  "RAM: $ram bytes static = .data $(sec .data) + .bss $(sec .bss) (arena $arena) + .uninit $(sec .uninit); peak stack $stack; total $((ram + stack))" \
  "instructions per KWS inference: $per (exact, QEMU TCG plugin); $macs MACs: $(python3 -c "print(f'{$macs / $per:.4f} MACs/instruction, {$per / $macs:.1f} instructions/MAC')")"

step "cortex-m: all passed"
