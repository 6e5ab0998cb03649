/* QEMU TCG plugin: executed guest instructions per translated block, for
 * profiles (profile.sh maps the blocks' addresses to functions).
 *
 * Declares its QEMU plugin API calls itself, as insn_count.c does (Debian's
 * QEMU 7.2 ships no qemu-plugin.h). Every translation of a block gets its own
 * record, counted inline; at exit each record that ran is written to QEMU's
 * log (-d plugin, -D FILE) as "ADDRESS-IN-HEX BLOCK-LENGTH INSTRUCTIONS"
 * (instructions executed in the block; divided by its length, the times it
 * ran). A block translated twice appears twice: the reader sums by address. */

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* not read here */
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

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

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
