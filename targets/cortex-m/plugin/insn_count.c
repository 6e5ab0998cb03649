/* QEMU TCG plugin: counts the guest instructions executed, exactly.
 *
 * The API calls it uses are declared in qemu_plugin_api.h (Debian's QEMU
 * ships no qemu-plugin.h). At translation time each translated block gets
 * an inline "add its instruction count to a counter" op; at exit the total
 * is written to QEMU's log (-d plugin, -D FILE) as
 * "instructions: N". run.sh builds it with `gcc -shared -fPIC`. */

#include "qemu_plugin_api.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One counter: the machine has one vCPU (mps2-an386). */
static uint64_t insns;

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns, qemu_plugin_tb_n_insns(tb));
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    char line[64];
    snprintf(line, sizeof line, "instructions: %" PRIu64 "\n", insns);
    qemu_plugin_outs(line);
}

EDGEFLEET_QEMU_PLUGIN(tb_trans, at_exit)
