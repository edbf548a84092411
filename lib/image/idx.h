/* idx.h: IDX files (the MNIST / Fashion-MNIST container): a 4-byte magic
 * (0, 0, dtype, ndim), ndim big-endian uint32 dimensions, then the items in
 * row-major order. Reads plain or gzip-compressed files (zlib's gzopen reads
 * both), item by item, checking the declared sizes against the bytes there. */
#ifndef KN_IDX_H
#define KN_IDX_H

#include <stddef.h>
#include <stdint.h>

#define KN_IDX_MAX_DIMS 8

enum {
    KN_IDX_U8 = 0x08,
    KN_IDX_I8 = 0x09,
    KN_IDX_I16 = 0x0B,
    KN_IDX_I32 = 0x0C,
    KN_IDX_F32 = 0x0D,
    KN_IDX_F64 = 0x0E,
};

typedef struct {
    int dtype;                      /* KN_IDX_* */
    int ndim;                       /* 1..KN_IDX_MAX_DIMS */
    uint32_t dims[KN_IDX_MAX_DIMS]; /* dims[0] = item count */
    size_t header_len;              /* 4 + 4 * ndim */
    size_t elem_size;               /* bytes per element */
    uint64_t item_size;             /* bytes per item: elem_size * dims[1..] */
    uint64_t data_size;             /* bytes after the header: dims[0] * item_size */
} kn_idx_header;

/* Parses a header from the first len bytes. KN_OK; KN_ECORRUPT for a bad
 * magic, dtype or ndim (errbuf says which); KN_EINVAL when len is too short
 * for the header; KN_ETOOBIG when the sizes overflow 64 bits. Does not look at
 * the data. */
int kn_idx_header_parse(const void *data, size_t len, kn_idx_header *out, char *errbuf,
                        size_t errsz);

/* Bytes of one element of a dtype, 0 for an unknown dtype. */
size_t kn_idx_dtype_size(int dtype);

typedef struct kn_idx kn_idx;

/* Opens an IDX file (plain or .gz) and reads its header. NULL on error
 * (errbuf names the file and what is wrong). Caller closes with kn_idx_close. */
kn_idx *kn_idx_open(const char *path, char *errbuf, size_t errsz);
const kn_idx_header *kn_idx_hdr(const kn_idx *f);

/* Reads the next item (hdr->item_size bytes) into buf. KN_OK; KN_ENOTFOUND
 * after the last item, once the file is checked to hold nothing more;
 * KN_ECORRUPT when the file ends early or holds bytes after the last item;
 * KN_EIO on a read error. */
int kn_idx_next(kn_idx *f, void *buf, char *errbuf, size_t errsz);

/* Accepts NULL. */
void kn_idx_close(kn_idx *f);

#endif
