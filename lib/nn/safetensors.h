/* safetensors.h: the safetensors container (https://github.com/huggingface/
 * safetensors): 8-byte little-endian header length N, N bytes of JSON header
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {string: string}}, then the raw little-endian tensor bytes.
 * The writer emits F32 tensors back to back in the order given, the header
 * padded with spaces to a multiple of 8 bytes. The reader validates
 * everything a hostile file could get wrong and never reads out of bounds. */
#ifndef KN_NN_SAFETENSORS_H
#define KN_NN_SAFETENSORS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define KN_SAFETENSORS_MAX_DIMS   8
#define KN_SAFETENSORS_MAX_HEADER (64u << 20) /* bytes of JSON header accepted */

/* One tensor to write: host data of numel = prod(shape) floats. */
typedef struct {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *data;
} kn_safetensors_entry;

/* One tensor read: points into the caller's buffer (not aligned: copy with
 * memcpy). */
typedef struct {
    const char *name; /* owned by the file's header JSON */
    char dtype[8];    /* "F32", "F16", "I64", ... */
    int ndim;
    int64_t shape[KN_SAFETENSORS_MAX_DIMS];
    uint64_t numel;
    const unsigned char *data;
    size_t nbytes;
} kn_safetensors_tensor;

typedef struct {
    json_t *header;                 /* the parsed header (owned) */
    json_t *metadata;               /* borrowed from header: object of strings, or NULL */
    kn_safetensors_tensor *tensors; /* (n), in data-offset order */
    int n;
} kn_safetensors_file;

/* Serialises entries[0..n) with metadata (an object of string values, or
 * NULL) into a new malloc'ed buffer *out of *outlen bytes (caller frees).
 * KN_OK, KN_EINVAL (non-string metadata, bad shape, duplicate name) or KN_ENOMEM. */
int kn_safetensors_write(const kn_safetensors_entry *entries, int n, const json_t *metadata,
                         unsigned char **out, size_t *outlen, char *err, size_t errsz);

/* Parses and validates buf[0..len) (which must outlive *f): header length,
 * JSON, dtypes, shapes vs byte sizes, offsets in bounds, contiguous and not
 * overlapping, metadata strings only. KN_ECORRUPT with the reason in err for a
 * bad file; on error *f is left empty. Free with kn_safetensors_file_free. */
int kn_safetensors_parse(const unsigned char *buf, size_t len, kn_safetensors_file *f, char *err,
                         size_t errsz);
void kn_safetensors_file_free(kn_safetensors_file *f);

/* The tensor called name, or NULL. */
const kn_safetensors_tensor *kn_safetensors_find(const kn_safetensors_file *f, const char *name);

/* Whole-file helpers: read a file into a new malloc'ed buffer (limit bytes at
 * most), write a buffer to path atomically (tmp file + rename). */
int kn_safetensors_read_file(const char *path, size_t limit, unsigned char **buf, size_t *len,
                             char *err, size_t errsz);
int kn_safetensors_write_file(const char *path, const unsigned char *buf, size_t len, char *err,
                              size_t errsz);

#endif
