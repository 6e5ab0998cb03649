#!/usr/bin/env bash
# Android and iOS, as far as this machine goes (no NDK, no Xcode):
#  1. release static libraries for aarch64-linux-android and aarch64-apple-ios:
#     the C ABI (edgefleet-ffi) and the UniFFI library (edgefleet-uniffi);
#  2. the UniFFI bindings generated for Kotlin, Swift and Python from the
#     host library;
#  3. Python: the generated module runs KWS against the host library;
#  4. Kotlin/JVM: the generated Kotlin and a test compile with a Kotlin 2
#     compiler and run KWS on the JVM against the host library through JNA.
#     Debian's kotlinc (1.3.31) is too old for UniFFI's Kotlin (trailing
#     commas, stackTraceToString); the compiler comes from the PyPI package
#     kotlin-jupyter-kernel, which bundles kotlin-compiler (see targets/README.md).
# Swift cannot be compiled here; its generated files are checked for the API.
# Usage: targets/mobile/run.sh
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

require_apt openjdk-17-jre-headless libjna-java
MOBILE_TARGETS=(aarch64-linux-android aarch64-apple-ios)
rustup_targets "${MOBILE_TARGETS[@]}"
host_packages
reset_figures mobile
cd "$ROOT" || exit
M=$OUT/mobile
mkdir -p "$M"

step "static libraries: ${MOBILE_TARGETS[*]} (release)"
for t in "${MOBILE_TARGETS[@]}"; do
  for crate in edgefleet-ffi:edgefleet_model_load edgefleet-uniffi:uniffi_edgefleet_uniffi_fn_constructor_edgefleetmodel_new; do
    name=${crate%%:*}
    sym=${crate#*:}
    cargo rustc --locked --release -p "$name" --target "$t" --lib --crate-type staticlib
    lib=$TARGET_DIR/$t/release/lib${name//-/_}.a
    grep -aq "$sym" "$lib" || die "$t: $sym is missing from $lib"
    figure mobile "$t: lib${name//-/_}.a (release, unlinked archive): $(stat -c %s "$lib") bytes"
  done
done

step "UniFFI bindings: Kotlin, Swift, Python from the host library"
cargo build --locked -p edgefleet-uniffi --features bindgen
hostlib=$TARGET_DIR/debug/libedgefleet_uniffi.so
rm -rf "$M/bindings"
for lang in kotlin swift python; do
  "$TARGET_DIR/debug/uniffi-bindgen" generate --no-format --library "$hostlib" --language "$lang" \
    --out-dir "$M/bindings/$lang"
done
kt=$M/bindings/kotlin/dev/edgefleet/edgefleet_uniffi.kt
swift=$M/bindings/swift
flat=$(tr -s ' \n' '  ' <"$swift/Edgefleet.swift") # unformatted output: compare with spaces squeezed
for want in "open class EdgefleetModel" "public convenience init(package: Data)throws" \
  "open func runI8(inputs: [[Int8]])throws -> [[Int8]]" "open func runF32(inputs: [[Float]])throws -> [[Float]]" \
  "public struct TensorInfo" "public enum EdgefleetError"; do
  grep -qF "$want" <<<"$flat" || die "Edgefleet.swift lacks '$want'"
done
grep -q "uniffi_edgefleet_uniffi_fn_method_edgefleetmodel_run_i8" "$swift/EdgefleetFFI.h" ||
  die "EdgefleetFFI.h lacks the run_i8 symbol"
grep -q "module EdgefleetFFI" "$swift/EdgefleetFFI.modulemap" || die "EdgefleetFFI.modulemap is wrong"
echo "generated: $(cd "$M/bindings" && find . -type f | sort | tr '\n' ' ')"

step "Python bindings on $HOST_TRIPLE"
cp "$hostlib" "$M/bindings/python/"
python3 targets/mobile/kws_test.py "$M/bindings/python" "$OUT/packages/kws.efm" \
  "$DATA/ref/kws/real.input_i8.npy" "$DATA/ref/kws/real.tflm_int8.npy"

step "Kotlin bindings: compile (Kotlin 2) and run on the JVM through JNA"
KOTLIN_WHEEL="kotlin-jupyter-kernel==0.19.0.944"
kotlin=$OUT/kotlinc
if [ ! -f "$kotlin/ready" ]; then
  rm -rf "$kotlin"
  python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip is needed to fetch the Kotlin compiler ($KOTLIN_WHEEL)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$KOTLIN_WHEEL" -d "$kotlin/wheel"
  python3 -m zipfile -e "$kotlin"/wheel/*.whl "$kotlin/x"
  touch "$kotlin/ready"
fi
jars=$kotlin/x/run_kotlin_kernel/jars
jar() { compgen -G "$jars/$1" | head -n 1; }
stdlib=$(jar 'kotlin-stdlib-[0-9]*.jar')
compiler_cp=$(jar 'kotlin-jupyter-kernel-*-all.jar'):$stdlib:$(jar 'kotlin-reflect-*.jar'):$(jar 'kotlin-script-runtime-*.jar'):$(jar 'annotations-*.jar')
rm -rf "$M/kotlin-classes"
java -cp "$compiler_cp" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler -no-stdlib -no-reflect -nowarn \
  -cp "/usr/share/java/jna.jar:$stdlib" -d "$M/kotlin-classes" "$kt" targets/mobile/KwsTest.kt
java -Djna.library.path="$(dirname "$hostlib")" -cp "$M/kotlin-classes:$stdlib:/usr/share/java/jna.jar" KwsTestKt \
  "$OUT/packages/kws.efm" "$DATA/ref/kws/real.input_i8.npy" "$DATA/ref/kws/real.tflm_int8.npy"

step "mobile: all passed"
