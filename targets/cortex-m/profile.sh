#!/usr/bin/env bash
# Where the Cortex-M4 firmware's instructions go: executed instructions per
# function of one inference (or per block of one function), exact, from a
# QEMU TCG plugin (plugin/insn_profile.c) and the ELF's symbols.
#
# Usage: targets/cortex-m/profile.sh MODEL|ELF [--reference] [--top K] [--function NAME | --lines]
#   MODEL   kws, vww or ic: the firmware image run.sh left in target/targets/
#   ELF     any firmware image built by run.sh's cargo build
#   --reference       profile the portable kernels instead of the DSP ones
#   --top K           how many functions (or blocks) to list (default 25)
#   --function NAME   the blocks of one function (its demangled name, as
#                     listed), hottest first, with their addresses, to read
#                     against `arm-none-eabi-objdump -d ELF`
#   --lines           per source line: each executed instruction goes to the
#                     innermost inlined frame in the project's own code (so an
#                     iterator's `next` counts as the loop that uses it), from
#                     the debug info the release profile keeps
#
# Like run.sh's counts, the figure is the difference between runs of 2 and 3
# inferences, so it excludes boot and verification; its total equals run.sh's
# "instructions per inference" (run.sh checks that). Inlined functions count
# as their caller.
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

[ $# -ge 1 ] || die "usage: $0 MODEL|ELF [--reference] [--top K] [--function NAME | --lines] (see the script's header)"
case $1 in
  kws | vww | ic) ELF=$OUT/$1.elf ;;
  *) ELF=$1 ;;
esac
shift
[ -f "$ELF" ] || die "no firmware image at $ELF: run targets/cortex-m/run.sh first (it leaves kws, vww and ic images there)"
kernels=
if [ "${1:-}" = --reference ]; then
  kernels=reference
  shift
fi
require_apt qemu-system-arm binutils-arm-none-eabi
command -v gcc >/dev/null || die "gcc is needed to build the QEMU plugin"

mkdir -p "$OUT"
plugin=$OUT/libinsn_profile.so
gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$plugin" "$ROOT/targets/cortex-m/plugin/insn_profile.c"
logs=()
for runs in 2 3; do
  log=$OUT/profile-$(basename "$ELF")-$runs${kernels:+-$kernels}.log
  qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
    -semihosting-config "enable=on,target=native,arg=kws,arg=$runs,arg=1${kernels:+,arg=$kernels}" \
    -kernel "$ELF" -plugin "$plugin" -d plugin -D "$log" >/dev/null
  logs+=("$log")
done
python3 "$ROOT/targets/tools/insn_profile.py" "$ELF" "${logs[@]}" "$@"
