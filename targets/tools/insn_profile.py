#!/usr/bin/env python3
"""Instructions per function (or per block of one function) of one inference.

Reads two logs of the insn_profile.c QEMU plugin, of runs that differ by one
inference (N and N + 1 runs), and attributes the difference, block address by
block address, to the ELF's function symbols (arm-none-eabi-nm). Used by
targets/cortex-m/profile.sh; see there.

  insn_profile.py ELF LOG_N LOG_N_PLUS_1 [--top K] [--function NAME] [--total]
"""

import argparse
import bisect
import collections
import subprocess
import sys


def load(path):
    counts = collections.Counter()
    with open(path) as f:
        for line in f:
            pc, n = line.split()
            counts[int(pc, 16)] += int(n)
    return counts


def symbols(elf):
    out = subprocess.run(["arm-none-eabi-nm", "-S", "-n", "-C", "--defined-only", elf],
                         capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in "tTwW":
            # Thumb function symbols have bit 0 set.
            syms.append((int(parts[0], 16) & ~1, int(parts[1], 16), parts[3]))
    syms.sort()
    return syms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("elf")
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--function", help="list the blocks of the one function with this (demangled) name")
    ap.add_argument("--total", action="store_true", help="print only the total")
    args = ap.parse_args()

    before, after = load(args.before), load(args.after)
    diff = {pc: after[pc] - before[pc] for pc in set(before) | set(after) if after[pc] != before[pc]}
    if any(n < 0 for n in diff.values()):
        sys.exit("insn_profile: the second log has fewer instructions at some address: not N and N + 1 runs?")
    total = sum(diff.values())
    if args.total:
        print(total)
        return
    syms = symbols(args.elf)
    starts = [s[0] for s in syms]

    def owner(pc):
        i = bisect.bisect_right(starts, pc) - 1
        if i >= 0 and pc < syms[i][0] + max(syms[i][1], 1):
            return syms[i]
        return None

    if args.function:
        blocks = [(pc, n) for pc, n in diff.items() if (o := owner(pc)) and o[2] == args.function]
        if not blocks:
            sys.exit(f"insn_profile: no instructions in a function named {args.function!r}")
        start = owner(blocks[0][0])[0]
        print(f"{sum(n for _, n in blocks)} instructions in {args.function} (blocks by address, offset from its start)")
        for pc, n in sorted(blocks, key=lambda b: -b[1])[: args.top]:
            print(f"{n:>12}  {pc:#x} (+{pc - start:#x})")
        return

    per = collections.Counter()
    for pc, n in diff.items():
        o = owner(pc)
        per[o[2] if o else f"<no symbol> {pc:#x}"] += n
    print(f"{total} instructions per inference")
    for name, n in per.most_common(args.top):
        print(f"{n:>12} {100 * n / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
