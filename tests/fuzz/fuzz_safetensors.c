/* fuzz_safetensors.c: kn_safetensors_parse on any bytes. An accepted file's
 * tensors lie inside the data section, back to back in offset order and
 * covering it exactly, with nbytes = numel * dtype size; each is found by its
 * name; a refusal leaves the file empty. */
#include "fuzz.h"

#include "core/kn.h"
#include "nn/safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kn_safetensors_file f;
    char err[256];
    int rc = kn_safetensors_parse(data, size, &f, err, sizeof(err));
    if (rc != KN_OK) {
        FUZZ_CHECK(f.header == NULL && f.tensors == NULL && f.n == 0);
        return 0;
    }
    FUZZ_CHECK(size >= 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | data[i];
    const uint8_t *pos = data + 8 + hlen, *end = data + size;
    for (int i = 0; i < f.n; i++) {
        const kn_safetensors_tensor *t = &f.tensors[i];
        FUZZ_CHECK(t->data == pos && t->nbytes <= (size_t)(end - pos));
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= KN_SAFETENSORS_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= (uint64_t)t->shape[d];
        FUZZ_CHECK(numel == t->numel && t->numel <= t->nbytes);
        FUZZ_CHECK(t->nbytes == 0 || t->nbytes % t->numel == 0);
        FUZZ_CHECK(kn_safetensors_find(&f, t->name) != NULL);
        volatile uint8_t sum = 0;
        for (size_t b = 0; b < t->nbytes; b++)
            sum += t->data[b];
        (void)sum;
        pos += t->nbytes;
    }
    FUZZ_CHECK(pos == end);
    kn_safetensors_file_free(&f);
    return 0;
}
