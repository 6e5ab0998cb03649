#!/usr/bin/env python3
"""Instructions per function, per block or per source line of one inference.

Reads two logs of the insn_profile.c QEMU plugin, of runs that differ by one
inference (N and N + 1 runs), and attributes the difference to the ELF: by
block address to its function symbols (arm-none-eabi-nm), or, with --lines,
instruction by instruction (a block runs whole, so each of its instructions
ran the block's count of times; objdump gives their addresses) to the
innermost inlined function and source line (arm-none-eabi-addr2line, from
the debug info the firmware's release profile keeps). Used by
targets/cortex-m/profile.sh; see there.

  insn_profile.py ELF LOG_N LOG_N_PLUS_1 [--top K] [--function NAME | --lines] [--total]
"""

import argparse
import bisect
import collections
import subprocess
import sys


def load(path):
    """{block address: (block length, instructions executed)}."""
    blocks = {}
    with open(path) as f:
        for line in f:
            pc, n, insns = line.split()
            pc, n, insns = int(pc, 16), int(n), int(insns)
            if pc in blocks and blocks[pc][0] != n:
                # Retranslated with another length (not seen on this board):
                # the per-instruction split would be wrong.
                sys.exit(f"insn_profile: block {pc:#x} was translated with lengths {blocks[pc][0]} and {n}")
            blocks[pc] = (n, blocks.get(pc, (n, 0))[1] + insns)
    return blocks


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


def instruction_addresses(elf):
    out = subprocess.run(["arm-none-eabi-objdump", "-d", "--no-show-raw-insn", elf],
                         capture_output=True, text=True, check=True).stdout
    addrs = []
    for line in out.splitlines():
        head, sep, _ = line.partition(":\t")
        if sep:
            try:
                addrs.append(int(head.strip(), 16))
            except ValueError:
                pass
    return sorted(set(addrs))


def library(path):
    """Source of the standard library or a dependency (not the project's)."""
    return path.startswith("/rustc/") or "/.cargo/" in path or "/rustlib/" in path or path.startswith("??")


def source_lines(elf, addrs):
    """{address: "file:line  function"}: the innermost inlined frame in the
    project's own code (the standard library's iterators and the like count
    as the line that uses them), else the innermost (compiler_builtins)."""
    out = subprocess.run(["arm-none-eabi-addr2line", "-a", "-f", "-i", "-C", "-e", elf],
                         input="".join(f"{a:#x}\n" for a in addrs), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    where, i = {}, 0
    while i < len(out):
        addr = int(out[i], 16)
        i += 1
        frames = []
        while i + 1 < len(out) and not out[i].startswith("0x"):
            frames.append((out[i], out[i + 1]))
            i += 2
        func, loc = next((f for f in frames if not library(f[1])), frames[0] if frames else ("??", "??:0"))
        loc = loc.rsplit("/", 1)[-1].split(" ")[0]
        where[addr] = f"{loc:<22} {func}"
    return where


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("elf")
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--function", help="list the blocks of the one function with this (demangled) name")
    ap.add_argument("--lines", action="store_true", help="per source line (innermost inlined frame in the project's code)")
    ap.add_argument("--total", action="store_true", help="print only the total")
    args = ap.parse_args()

    before, after = load(args.before), load(args.after)
    diff = {}
    for pc in set(before) | set(after):
        n = after.get(pc, before.get(pc))[0]
        d = after.get(pc, (n, 0))[1] - before.get(pc, (n, 0))[1]
        if d < 0:
            sys.exit("insn_profile: the second log has fewer instructions at some address: not N and N + 1 runs?")
        if d:
            diff[pc] = (n, d)
    total = sum(d for _, d in diff.values())
    if args.total:
        print(total)
        return

    if args.lines:
        addrs = instruction_addresses(args.elf)
        per_insn = collections.Counter()
        for pc, (n, d) in diff.items():
            i = bisect.bisect_left(addrs, pc)
            if i == len(addrs) or addrs[i] != pc or d % n:
                sys.exit(f"insn_profile: block {pc:#x} does not match the ELF's instructions (another image?)")
            for a in addrs[i:i + n]:
                per_insn[a] += d // n
        if sum(per_insn.values()) != total:
            sys.exit("insn_profile: the blocks' instructions do not add up to the total (a block ran partly?)")
        where = source_lines(args.elf, sorted(per_insn))
        per = collections.Counter()
        for a, c in per_insn.items():
            per[where.get(a, f"?? {a:#x}")] += c
        print(f"{total} instructions per inference, by source line (innermost inlined frame in the project's code)")
        for name, n in per.most_common(args.top):
            print(f"{n:>12} {100 * n / total:5.1f} %  {name}")
        return

    syms = symbols(args.elf)
    starts = [s[0] for s in syms]

    def owner(pc):
        i = bisect.bisect_right(starts, pc) - 1
        if i >= 0 and pc < syms[i][0] + max(syms[i][1], 1):
            return syms[i]
        return None

    if args.function:
        blocks = [(pc, n, d) for pc, (n, d) in diff.items() if (o := owner(pc)) and o[2] == args.function]
        if not blocks:
            sys.exit(f"insn_profile: no instructions in a function named {args.function!r}")
        start = owner(blocks[0][0])[0]
        print(f"{sum(d for _, _, d in blocks)} instructions in {args.function} (blocks by address, offset from its start)")
        for pc, n, d in sorted(blocks, key=lambda b: -b[2])[: args.top]:
            print(f"{d:>12}  {pc:#x} (+{pc - start:#x}), {n} instructions run {d // n} times")
        return

    per = collections.Counter()
    for pc, (_, d) in diff.items():
        o = owner(pc)
        per[o[2] if o else f"<no symbol> {pc:#x}"] += d
    print(f"{total} instructions per inference")
    for name, n in per.most_common(args.top):
        print(f"{n:>12} {100 * n / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
