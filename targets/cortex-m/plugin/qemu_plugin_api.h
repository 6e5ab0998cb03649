/* The few QEMU TCG plugin API calls the plugins here use, declared by hand:
 * Debian's QEMU 7.2 loads plugins (-plugin FILE) but ships neither plugins
 * nor qemu-plugin.h. API version 1, unchanged since QEMU 4.2. */

#ifndef EDGEFLEET_QEMU_PLUGIN_API_H
#define EDGEFLEET_QEMU_PLUGIN_API_H

#include <stddef.h>
#include <stdint.h>

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

/* The plugin's entry points: the API version, and an install function that
 * registers TRANS for every translated block and AT_EXIT for the end. */
#define EDGEFLEET_QEMU_PLUGIN(TRANS, AT_EXIT)                                                          \
    __attribute__((visibility("default"))) int qemu_plugin_version = 1;                               \
    __attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,               \
                                                                   const qemu_info_t *info, int argc, \
                                                                   char **argv) {                     \
        (void)info;                                                                                    \
        (void)argc;                                                                                    \
        (void)argv;                                                                                    \
        qemu_plugin_register_vcpu_tb_trans_cb(id, TRANS);                                              \
        qemu_plugin_register_atexit_cb(id, AT_EXIT, NULL);                                             \
        return 0;                                                                                      \
    }

#endif
