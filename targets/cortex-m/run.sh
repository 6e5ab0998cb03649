#!/usr/bin/env bash
# Cortex-M4F firmware (thumbv7em-none-eabihf) on QEMU's MPS2-AN386 board:
#  1. fmt, clippy and the host unit tests of the firmware crate;
#  2. a release build embedding the KWS package compiled on the host just
#     before (so the firmware always runs what today's compiler produces),
#     a root of trust and the package's manifest signed just before with the
#     host tool (fresh keys each run, as provisioning would make them);
#  3. a run under qemu-system-arm: the firmware verifies the manifest and the
#     package (edgefleet-protocol's no_std path), runs the model with the DSP
#     kernels (`kernels: dsp`), prints its output over semihosting and exits 0
#     only if it equals TensorFlow Lite Micro's; the printed output must also
#     equal the x86-64 host's, and the portable kernels' on the board
#     (semihosting argument `reference`). A build embedding the
#     wrong expected output must exit non-zero, and builds embedding a
#     tampered manifest, one signed by a key the root does not know, one for
#     another board, an expired one and a package the manifest does not
#     describe must each be rejected, with the right reason, without running
#     the model;
#  4. the same firmware with the VWW and IC packages (signed for the board):
#     output equal to TensorFlow Lite Micro's and the x86-64 host's;
#  5. figures: flash and RAM from the ELF sections, heap high-water mark,
#     peak stack, and the exact instructions per inference (DSP and portable
#     kernels, KWS, VWW and IC) and per update verification from a QEMU TCG
#     plugin; the top of the per-function profile (profile.sh), whose
#     total must equal that count.
# Usage: targets/cortex-m/run.sh
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

require_apt qemu-system-arm binutils-arm-none-eabi
command -v gcc >/dev/null || die "gcc is needed to build the QEMU plugin"
rustup_targets thumbv7em-none-eabihf
host_packages
reset_figures cortex-m

FW=$ROOT/targets/cortex-m
HARDWARE_ID=mps2-an386 # board::HARDWARE_ID
PACKAGE=$OUT/packages/kws.efm
edgefleet=$TARGET_DIR/debug/edgefleet

step "firmware: keys, root of trust and signed manifests (host tool)"
KEYS=$OUT/firmware-keys
rm -rf "$KEYS" && mkdir -p "$KEYS"
for k in root release rogue; do "$edgefleet" keys generate "$k" --dir "$KEYS" >/dev/null; done
"$edgefleet" keys root --root-key "$KEYS/root.key" --release-key "$KEYS/release.pub" -o "$KEYS/root.signed"
# The board's "now", fixed at build time: the manifests expire 30 days after.
now=$(date +%s)
sign() { # sign PACKAGE KEY HARDWARE_ID OUTPUT [MODEL_ID]
  "$edgefleet" sign "$1" --key "$2" --hardware "$3" --counter 1 --version 1.0 --model-id "${5:-kws}" -o "$4"
}
sign "$PACKAGE" "$KEYS/release.key" "$HARDWARE_ID" "$KEYS/kws.manifest"
# The attacks the board must refuse. One bit of the package's SHA-256 in
# the signed manifest flipped (pointing it at another package):
python3 - "$KEYS/kws.manifest" "$PACKAGE" "$KEYS/tampered.manifest" <<'PY'
import hashlib, sys
manifest, package, out = sys.argv[1:]
m = bytearray(open(manifest, "rb").read())
digest = hashlib.sha256(open(package, "rb").read()).digest()
assert m.count(digest) == 1, "the package's SHA-256 is not in the manifest exactly once"
m[m.index(digest)] ^= 1
open(out, "wb").write(m)
PY
sign "$PACKAGE" "$KEYS/rogue.key" "$HARDWARE_ID" "$KEYS/rogue.manifest"
sign "$PACKAGE" "$KEYS/release.key" another-board "$KEYS/other-board.manifest"
# A valid package of the same length the manifest does not describe (one label renamed).
"$edgefleet" compile "$DATA/onnx/kws_int8_from_tflite.onnx" -o "$KEYS/relabelled.efm" \
  --labels down,go,left,no,off,on,right,stop,up,YES,silence,unknown >/dev/null
if [ "$(stat -c %s "$KEYS/relabelled.efm")" != "$(stat -c %s "$PACKAGE")" ] || cmp -s "$KEYS/relabelled.efm" "$PACKAGE"; then
  die "the relabelled package must differ from kws.efm in content only"
fi

cd "$FW" || exit
# Its own workspace and target directory; .cargo/config.toml here selects
# thumbv7em-none-eabihf, the QEMU runner and the compact SHA-2 backend.
export CARGO_TARGET_DIR=$TARGET_DIR/firmware
export EDGEFLEET_FIRMWARE_PACKAGE=$PACKAGE
export EDGEFLEET_FIRMWARE_ROOT=$KEYS/root.signed
export EDGEFLEET_FIRMWARE_MANIFEST=$KEYS/kws.manifest
export EDGEFLEET_FIRMWARE_NOW=$now
ELF=$CARGO_TARGET_DIR/thumbv7em-none-eabihf/release/kws
QEMU=(qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic)
# semihosting RUNS VERIFICATIONS [KERNELS]
semihosting() { echo "enable=on,target=native,arg=kws,arg=$1,arg=$2${3:+,arg=$3}"; }

step "firmware: fmt, clippy (thumbv7em and host), unit tests on $HOST_TRIPLE"
cargo fmt --check
cargo clippy --locked -- -D warnings
cargo clippy --locked --lib --tests --target "$HOST_TRIPLE" -- -D warnings
cargo test --locked --lib --target "$HOST_TRIPLE"
cargo test --locked --doc --target "$HOST_TRIPLE"
# ed25519-dalek's `fast` feature (the protocol crate's `std`) would put
# curve25519-dalek's precomputed tables (~30 KB) in flash.
if cargo tree --locked -e features -i curve25519-dalek | grep -q precomputed-tables; then
  die "curve25519-dalek's precomputed tables are enabled in the firmware: $(cargo tree --locked -e features -i curve25519-dalek)"
fi
echo "curve25519-dalek without precomputed tables"

step "firmware: a build expecting the wrong output must fail on the board"
EDGEFLEET_FIRMWARE_EXPECTED=$DATA/ref/kws/seeded.tflm_int8.npy cargo build --locked --release
cp "$ELF" "$OUT/kws-wrong-expected.elf"
status=0
"${QEMU[@]}" -semihosting-config "$(semihosting 1 1)" -kernel "$OUT/kws-wrong-expected.elf" >"$OUT/kws-wrong.txt" || status=$?
if ! grep -q '^FAIL' "$OUT/kws-wrong.txt" || [ "$status" -ne 1 ]; then
  die "the firmware did not report a wrong output with exit status 1 (got $status): $(cat "$OUT/kws-wrong.txt")"
fi
echo "exit status $status, as it should: $(grep '^FAIL' "$OUT/kws-wrong.txt")"

step "firmware: updates the board must refuse, each its own build"
# rejected NAME CHECK ERROR VAR=VALUE...: a build with the given inputs
# must fail CHECK with ERROR (a VerifyError variant), say so, exit 1 and
# not run the model.
rejected() {
  local name=$1 check=$2 error=$3 status=0 log=$OUT/kws-rejected-$1.txt
  shift 3
  env "$@" cargo build --locked --release
  cp "$ELF" "$OUT/kws-rejected-$name.elf"
  "${QEMU[@]}" -semihosting-config "$(semihosting 1 1)" -kernel "$OUT/kws-rejected-$name.elf" >"$log" || status=$?
  if [ "$status" -ne 1 ] || ! grep -q "^verify $check: REJECTED $error: " "$log" ||
    ! grep -qx 'update rejected: the model is not run' "$log" || grep -q '^output:' "$log"; then
    die "$name: expected the $check check to fail with $error, exit status 1 and no inference (got $status): $(cat "$log")"
  fi
  echo "$name: exit status $status, model not run: $(grep REJECTED "$log")"
}
rejected tampered manifest BadSignature EDGEFLEET_FIRMWARE_MANIFEST="$KEYS/tampered.manifest"
rejected unknown-key manifest UnknownKey EDGEFLEET_FIRMWARE_MANIFEST="$KEYS/rogue.manifest"
rejected other-board manifest HardwareMismatch EDGEFLEET_FIRMWARE_MANIFEST="$KEYS/other-board.manifest"
rejected expired manifest Expired EDGEFLEET_FIRMWARE_NOW=$((now + 31 * 86400))
rejected other-package package HashMismatch EDGEFLEET_FIRMWARE_PACKAGE="$KEYS/relabelled.efm"

step "firmware: release build and run on mps2-an386 (Cortex-M4F) under qemu-system-arm"
cargo build --locked --release
"${QEMU[@]}" -semihosting-config "$(semihosting 1 1)" -kernel "$ELF" | tee "$OUT/kws-qemu.txt"
for c in root manifest package; do
  grep -q "^verify $c: ok" "$OUT/kws-qemu.txt" || die "the board did not verify the update's $c"
done
host=$($NPYCMP --values "$OUT/x86/kws-tflite-real-i8.npy")
[ "$(sed -n 's/^output: //p' "$OUT/kws-qemu.txt")" = "$host" ] ||
  die "the board's output differs from the x86-64 host's ($host)"
# The kernels crate's build.rs gives thumbv7em its DSP extension (cfg edgefleet_dsp).
grep -qx 'kernels: dsp' "$OUT/kws-qemu.txt" ||
  die "the firmware does not run the DSP kernels: $(grep '^kernels' "$OUT/kws-qemu.txt" || echo 'no kernels line')"
"${QEMU[@]}" -semihosting-config "$(semihosting 1 1 reference)" -kernel "$ELF" >"$OUT/kws-qemu-reference.txt"
grep -qx 'kernels: reference' "$OUT/kws-qemu-reference.txt" || die "the board did not switch to the portable kernels"
[ "$(grep '^output: ' "$OUT/kws-qemu-reference.txt")" = "$(grep '^output: ' "$OUT/kws-qemu.txt")" ] ||
  die "the portable kernels' output on the board differs from the DSP kernels'"
echo "update verified; the board's output (DSP kernels) equals the portable kernels', the x86-64 host's and TensorFlow Lite Micro's"
cp "$ELF" "$OUT/kws.elf"

step "firmware: instructions per inference and per verification (QEMU TCG plugin)"
gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$OUT/libinsn_count.so" "$FW/plugin/insn_count.c"
count() { # count RUNS VERIFICATIONS [KERNELS [ELF]]: guest instructions of a whole run of the firmware
  local log=$OUT/insn-$1-$2-${3:-default}.log
  "${QEMU[@]}" -semihosting-config "$(semihosting "$1" "$2" "${3:-}")" -kernel "${4:-$ELF}" \
    -plugin "$OUT/libinsn_count.so" -d plugin -D "$log" >/dev/null
  sed -n 's/^instructions: //p' "$log"
}
# Runs of A, A + 1 and B inferences (and of 10, 11 and 20 verifications): the
# same code path but for the loop count (same digits on the command line),
# so the differences are exactly whole inferences (reading the frame,
# invoke, copying the scores out) or verifications (root, manifest, package).
# per_inference ELF KERNELS A B: instructions of one inference, checked linear.
per_inference() {
  local elf=$1 kernels=$2 a=$3 b=$4 ca cb cc
  ca=$(count "$a" 1 "$kernels" "$elf") cb=$(count $((a + 1)) 1 "$kernels" "$elf") cc=$(count "$b" 1 "$kernels" "$elf")
  [ $((cc - ca)) -eq $(((b - a) * (cb - ca))) ] ||
    die "$elf, $kernels kernels: instruction counts are not linear in the run count: $ca, $cb, $cc"
  echo "$elf, $kernels kernels: runs of $a, $((a + 1)), $b inferences: $ca, $cb, $cc instructions" >&2
  echo $((cb - ca))
}
macs_of() { "$edgefleet" inspect "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["macs"])'; }
ratio() { python3 -c "print(f'{$1 / $2:.4f} MACs/instruction, {$2 / $1:.1f} instructions/MAC')"; }
per=$(per_inference "$ELF" dsp 10 20)
# profile.sh (instructions per function, another plugin) must account for
# every instruction of an inference.
# (CARGO_TARGET_DIR is the firmware's here; profile.sh's files go to $OUT.)
profile() { CARGO_TARGET_DIR=$TARGET_DIR "$FW/profile.sh" "$@"; }
profiled=$(profile "$ELF" --total)
[ "$profiled" -eq "$per" ] || die "profile.sh counts $profiled instructions per inference, the counter $per"
profile "$ELF" --top 6
profile "$ELF" --lines --top 6
# The portable kernels, for comparison (runs of 2, 3 and 4: they are slow;
# at least 2, like 10, 11 and 20, so that the run loop is entered every time).
per_reference=$(per_inference "$ELF" reference 2 4)
macs=$(macs_of "$EDGEFLEET_FIRMWARE_PACKAGE")
v10=$(count 1 10) v11=$(count 1 11) v20=$(count 1 20)
per_verification=$((v11 - v10))
[ $((v20 - v10)) -eq $((10 * per_verification)) ] ||
  die "instruction counts are not linear in the verification count: $v10, $v11, $v20"
echo "runs of 10, 11, 20 verifications: $v10, $v11, $v20 instructions"

step "firmware: figures"
arm-none-eabi-size -A "$ELF" | tee "$OUT/kws-size.txt"
sec() { awk -v s="$1" '$1 == s { print $2 }' "$OUT/kws-size.txt"; }
# .cargo/config.toml's `--cfg sha2_backend_soft="compact"` (a RUSTFLAGS
# variable would silently replace it): SHA-512's unrolled rounds are ~28 KB.
sha512=0
while read -r _ size _ _; do sha512=$((sha512 + 16#$size)); done < <(arm-none-eabi-nm -S "$ELF" | grep 'sha512.*compress512')
if [ "$sha512" -eq 0 ] || [ "$sha512" -ge 4096 ]; then
  die "SHA-512's compression function is $sha512 bytes: the compact SHA-2 backend is not in effect (RUSTFLAGS set?)"
fi
arena=$(sed -n 's/^arena: \([0-9]*\) bytes/\1/p' "$OUT/kws-qemu.txt")
stack=$(sed -n 's/^stack peak: \([0-9]*\) bytes/\1/p' "$OUT/kws-qemu.txt")
read -r heap_high heap_size heap_left < <(sed -n 's/^heap: high-water \([0-9]*\) of \([0-9]*\) bytes, \([0-9]*\) in use.*/\1 \2 \3/p' "$OUT/kws-qemu.txt")
[ "$heap_left" -eq 0 ] || die "verification left $heap_left bytes allocated"
# The heap must keep at least half again what verification used (larger roots and manifests).
[ $((heap_high * 3)) -le $((heap_size * 2)) ] ||
  die "the heap ($heap_size bytes) has less than 50 % headroom over verification's $heap_high bytes: raise heap::HEAP_SIZE"
package=$(stat -c %s "$EDGEFLEET_FIRMWARE_PACKAGE")
signed=$(($(stat -c %s "$EDGEFLEET_FIRMWARE_ROOT") + $(stat -c %s "$EDGEFLEET_FIRMWARE_MANIFEST")))
flash=$(($(sec .vector_table) + $(sec .text) + $(sec .rodata) + $(sec .data)))
ram=$(($(sec .data) + $(sec .bss) + $(sec .uninit)))
step "firmware: the VWW and IC packages on the board"
# The same firmware, built with another package, its manifest (signed for the
# board) and TensorFlow Lite Micro's reference pair.
model_figures=()
for m in vww ic; do
  sign "$OUT/packages/$m.efm" "$KEYS/release.key" "$HARDWARE_ID" "$KEYS/$m.manifest" "$m"
  EDGEFLEET_FIRMWARE_PACKAGE=$OUT/packages/$m.efm EDGEFLEET_FIRMWARE_MANIFEST=$KEYS/$m.manifest \
    EDGEFLEET_FIRMWARE_INPUT=$DATA/ref/$m/real.input_i8.npy EDGEFLEET_FIRMWARE_EXPECTED=$DATA/ref/$m/real.tflm_int8.npy \
    cargo build --locked --release
  cp "$ELF" "$OUT/$m.elf"
  status=0
  "${QEMU[@]}" -semihosting-config "$(semihosting 1 1)" -kernel "$OUT/$m.elf" >"$OUT/$m-qemu.txt" || status=$?
  cat "$OUT/$m-qemu.txt"
  [ "$status" -eq 0 ] || die "$m: the firmware exited with status $status (its output differs from TensorFlow Lite Micro's?)"
  for c in root manifest package; do
    grep -q "^verify $c: ok" "$OUT/$m-qemu.txt" || die "$m: the board did not verify the update's $c"
  done
  grep -qx 'kernels: dsp' "$OUT/$m-qemu.txt" || die "$m: the firmware does not run the DSP kernels"
  host=$($NPYCMP --values "$OUT/x86/$m-tflite-real-i8.npy")
  [ "$(sed -n 's/^output: //p' "$OUT/$m-qemu.txt")" = "$host" ] ||
    die "$m: the board's output differs from the x86-64 host's ($host)"
  m_per=$(per_inference "$OUT/$m.elf" dsp 10 20)
  m_reference=$(per_inference "$OUT/$m.elf" reference 2 4)
  m_macs=$(macs_of "$OUT/packages/$m.efm")
  m_stack=$(sed -n 's/^stack peak: \([0-9]*\) bytes/\1/p' "$OUT/$m-qemu.txt")
  model_figures+=("instructions per ${m^^} inference: $m_per with the DSP kernels, $m_reference with the portable ones; $m_macs MACs: $(ratio "$m_macs" "$m_per") (portable: $(ratio "$m_macs" "$m_reference")); peak stack $m_stack")
  echo "${model_figures[-1]}"
done

figure cortex-m \
  "flash: $flash bytes = .vector_table $(sec .vector_table) + .text $(sec .text) + .rodata $(sec .rodata) (package $package, root + manifest $signed) + .data $(sec .data)" \
  "RAM: $ram bytes static = .data $(sec .data) + .bss $(sec .bss) (arena $arena) + .uninit $(sec .uninit) (heap); peak stack $stack; total $((ram + stack))" \
  "heap: verification's high-water mark $heap_high of $heap_size bytes" \
  "instructions per update verification: $per_verification (root and manifest signatures, SHA-256 of the $package-byte package; exact for this run's keys)" \
  "instructions per KWS inference: $per with the DSP kernels, $per_reference with the portable ones (exact, QEMU TCG plugin); $macs MACs: $(ratio "$macs" "$per") (portable: $(ratio "$macs" "$per_reference"))" \
  "${model_figures[@]}"

step "cortex-m: all passed"
