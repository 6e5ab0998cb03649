/* QEMU TCG plugin: executed guest instructions per translated block, for
 * profiles (profile.sh maps the blocks' addresses to functions).
 *
 * The API calls it uses are declared in qemu_plugin_api.h. Every translation
 * of a block gets its own record, counted inline; at exit each record that
 * ran is written to QEMU's log (-d plugin, -D FILE) as "ADDRESS-IN-HEX
 * BLOCK-LENGTH INSTRUCTIONS" (instructions executed in the block; divided by
 * its length, the times it ran). A block translated twice appears twice:
 * the reader sums by address. */

#include "qemu_plugin_api.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* One list: the machine has one vCPU (mps2-an386). */
struct block {
    uint64_t pc, n, insns;
    struct block *next;
};
static struct block *blocks;

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    struct block *b = calloc(1, sizeof *b);
    if (!b) {
        qemu_plugin_outs("insn_profile: out of memory\n");
        abort();
    }
    b->pc = qemu_plugin_tb_vaddr(tb);
    b->n = qemu_plugin_tb_n_insns(tb);
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->insns, b->n);
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    char line[64];
    for (struct block *b = blocks; b; b = b->next) {
        if (!b->insns) continue;
        snprintf(line, sizeof line, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", b->pc, b->n, b->insns);
        qemu_plugin_outs(line);
    }
}

EDGEFLEET_QEMU_PLUGIN(tb_trans, at_exit)
