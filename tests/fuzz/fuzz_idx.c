/* fuzz_idx.c: IDX headers (kn_idx_header_parse) and whole IDX files read
 * item by item (kn_idx_open, kn_idx_next: plain, or gzip when the bytes are
 * gzip) from any bytes. An accepted header's sizes agree with its dims; the
 * reader hands out exactly the declared items or reports the file corrupt. */
#include "fuzz.h"

#include "core/kn.h"
#include "image/idx.h"

#include <sys/mman.h>
#include <unistd.h>

/* Items of zero bytes (a zero dimension) cost nothing to read but may number
 * 2^32: stop early rather than time out on a header that is merely odd. */
#define MAX_ITEMS 4096

static void read_file(const uint8_t *data, size_t size)
{
    char path[64], err[256];
    int fd = memfd_create("fuzz_idx", MFD_CLOEXEC);
    if (fd < 0) return;
    if (write(fd, data, size) != (ssize_t)size) goto out;
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    kn_idx *f = kn_idx_open(path, err, sizeof(err));
    if (!f) goto out;
    const kn_idx_header *h = kn_idx_hdr(f);
    FUZZ_CHECK(h->item_size <= (1u << 30));
    /* items up to 1 GiB are accepted; reading the large ones is slow and
     * no different, so only small ones are read here */
    uint8_t *buf = h->item_size <= (1u << 20) ? malloc(h->item_size ? h->item_size : 1) : NULL;
    if (buf) {
        uint64_t items = 0;
        int rc = KN_OK;
        while (items < MAX_ITEMS && (rc = kn_idx_next(f, buf, err, sizeof(err))) == KN_OK)
            items++;
        if (items < MAX_ITEMS && rc == KN_ENOTFOUND) FUZZ_CHECK(items == h->dims[0]);
        free(buf);
    }
    kn_idx_close(f);
out:
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kn_idx_header h;
    char err[256];
    if (kn_idx_header_parse(data, size, &h, err, sizeof(err)) == KN_OK) {
        FUZZ_CHECK(h.ndim >= 1 && h.ndim <= KN_IDX_MAX_DIMS);
        FUZZ_CHECK(h.header_len == 4 + 4 * (size_t)h.ndim && h.header_len <= size);
        FUZZ_CHECK(h.elem_size == kn_idx_dtype_size(h.dtype) && h.elem_size > 0);
        uint64_t item = h.elem_size;
        for (int i = 1; i < h.ndim; i++)
            item *= h.dims[i];
        FUZZ_CHECK(item == h.item_size && h.data_size == item * h.dims[0]);
    }
    read_file(data, size);
    return 0;
}
