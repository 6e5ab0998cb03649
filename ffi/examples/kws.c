/* Runs a package through the edgefleet C API and checks its output.
 *
 *   kws PACKAGE.efm INPUT.npy EXPECTED.npy
 *
 * INPUT and EXPECTED are int8 .npy arrays (e.g. testdata/mlperf-tiny/ref/kws/
 * real.input_i8.npy and real.tflm_int8.npy). The program runs the int8 path
 * and the float path (the input dequantized, then quantized again by the
 * library), checks both against EXPECTED, checks that a corrupted package is
 * refused with a message, prints the scores and exits 0 only if all held.
 * targets/c/run.sh builds it with gcc against libedgefleet_ffi.a. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefleet.h"

static int fail(const char *what) {
    const char *err = edgefleet_last_error();
    fprintf(stderr, "kws: %s: %s\n", what, err ? err : "(no message)");
    return 1;
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc(n > 0 ? (size_t)n : 1)) != NULL) {
            if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            } else {
                *len = (size_t)n;
            }
        }
    }
    fclose(f);
    return buf;
}

/* The int8 payload of a C-order .npy file (format 1.0 to 3.0), or NULL. */
static int8_t *read_npy_i8(const char *path, size_t *count, uint8_t **owner) {
    size_t len = 0;
    uint8_t *b = read_file(path, &len);
    if (!b) return NULL;
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0) goto bad;
    size_t header = b[6] == 1 ? (size_t)b[8] | (size_t)b[9] << 8
                              : (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    size_t start = (b[6] == 1 ? 10 : 12) + header;
    if (start > len) goto bad;
    char *h = strndup((const char *)b + (b[6] == 1 ? 10 : 12), header);
    int ok = h && (strstr(h, "'|i1'") || strstr(h, "'i1'")) && strstr(h, "'fortran_order': False");
    free(h);
    if (!ok) goto bad;
    *count = len - start;
    *owner = b;
    return (int8_t *)(b + start);
bad:
    fprintf(stderr, "kws: %s: not a C-order int8 .npy file\n", path);
    free(b);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PACKAGE.efm INPUT.npy EXPECTED.npy\n", argv[0]);
        return 2;
    }
    size_t pkg_len = 0, n_in = 0, n_want = 0;
    uint8_t *pkg = read_file(argv[1], &pkg_len), *in_owner = NULL, *want_owner = NULL;
    if (!pkg) {
        perror(argv[1]);
        return 1;
    }
    const int8_t *input = read_npy_i8(argv[2], &n_in, &in_owner);
    const int8_t *want = read_npy_i8(argv[3], &n_want, &want_owner);
    if (!input || !want) return 1;

    /* A corrupted package is refused, with a reason. */
    EdgefleetModel *m = NULL;
    pkg[pkg_len / 2] ^= 0x40;
    if (edgefleet_model_load(pkg, pkg_len, &m) != EDGEFLEET_STATUS_INVALID_PACKAGE || m != NULL ||
        edgefleet_last_error() == NULL) {
        fprintf(stderr, "kws: a corrupted package was not refused\n");
        return 1;
    }
    printf("corrupted package refused: %s\n", edgefleet_last_error());
    pkg[pkg_len / 2] ^= 0x40;

    if (edgefleet_model_load(pkg, pkg_len, &m) != EDGEFLEET_STATUS_OK) return fail("load");
    free(pkg); /* the model keeps its own copy */

    size_t arena = 0;
    EdgefleetTensorInfo in, out;
    if (edgefleet_model_arena_size(m, &arena) != EDGEFLEET_STATUS_OK) return fail("arena size");
    if (edgefleet_model_input_info(m, 0, &in) != EDGEFLEET_STATUS_OK) return fail("input info");
    if (edgefleet_model_output_info(m, 0, &out) != EDGEFLEET_STATUS_OK) return fail("output info");
    printf("edgefleet %s: arena %zu bytes, input %zu values (scale %g, zero point %d), output %zu values\n",
           edgefleet_version(), arena, in.elements, in.scale, in.zero_point, out.elements);
    if (n_in != in.elements || n_want != out.elements) {
        fprintf(stderr, "kws: the .npy files have %zu and %zu values, the model %zu and %zu\n", n_in, n_want,
                in.elements, out.elements);
        return 1;
    }

    /* int8 in, int8 out. */
    int8_t *got = malloc(out.elements);
    if (!got) return 1;
    if (edgefleet_model_set_input_i8(m, 0, input, in.elements) != EDGEFLEET_STATUS_OK) return fail("set input");
    if (edgefleet_model_invoke(m) != EDGEFLEET_STATUS_OK) return fail("invoke");
    if (edgefleet_model_output_i8(m, 0, got, out.elements) != EDGEFLEET_STATUS_OK) return fail("output");
    printf("output:");
    for (size_t i = 0; i < out.elements; i++) printf(" %d", got[i]);
    printf("\n");
    int mismatches = 0;
    for (size_t i = 0; i < out.elements; i++) {
        if (got[i] != want[i]) {
            fprintf(stderr, "kws: int8 output %zu: got %d, expected %d\n", i, got[i], want[i]);
            mismatches++;
        }
    }

    /* float in, float out: the dequantized input quantizes back to itself. */
    float *x = malloc(in.elements * sizeof *x), *y = malloc(out.elements * sizeof *y);
    if (!x || !y) return 1;
    for (size_t i = 0; i < in.elements; i++) x[i] = in.scale * (float)(input[i] - in.zero_point);
    if (edgefleet_model_set_input_f32(m, 0, x, in.elements) != EDGEFLEET_STATUS_OK) return fail("set input f32");
    if (edgefleet_model_invoke(m) != EDGEFLEET_STATUS_OK) return fail("invoke");
    if (edgefleet_model_output_f32(m, 0, y, out.elements) != EDGEFLEET_STATUS_OK) return fail("output f32");
    for (size_t i = 0; i < out.elements; i++) {
        float expected = out.scale * (float)(want[i] - out.zero_point);
        if (y[i] != expected) {
            fprintf(stderr, "kws: float output %zu: got %g, expected %g\n", i, y[i], expected);
            mismatches++;
        }
    }

    /* Misuse is a status, not a crash. */
    if (edgefleet_model_set_input_i8(m, 0, input, in.elements - 1) != EDGEFLEET_STATUS_INVALID_ARGUMENT)
        mismatches++;

    edgefleet_model_free(m);
    free(got);
    free(x);
    free(y);
    free(in_owner);
    free(want_owner);
    if (mismatches) {
        fprintf(stderr, "kws: FAILED, %d mismatches\n", mismatches);
        return 1;
    }
    printf("kws: ok, int8 and float outputs equal the reference\n");
    return 0;
}
