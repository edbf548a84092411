/* multipart.h: multipart/form-data request bodies (RFC 7578), parsed in place.
 *
 * The whole body is in memory (the HTTP module buffers it up to its limit);
 * parts point into it. Only what an upload form needs is read from each
 * part's headers: the Content-Disposition name and filename, and the
 * Content-Type. Anything not well-formed is refused as a whole. */
#ifndef KN_MULTIPART_H
#define KN_MULTIPART_H

#include <stddef.h>

typedef struct {
    const char *data; /* the part's bytes, inside the body */
    size_t len;
    char name[64];      /* Content-Disposition name="..." (cut to fit), or "" */
    char filename[256]; /* filename="..." (cut to fit), or "" */
    char ctype[128];    /* the part's Content-Type (cut to fit), or "" */
} kn_multipart_part;

/* The value of parameter key (e.g. "boundary", "name") in a header value
 * h[0..hl) such as `form-data; name="file"; filename="a.png"`: quoted or
 * bare, NUL-terminated in out (cut to outsz - 1 bytes); "" when absent. */
void kn_multipart_param(const char *h, size_t hl, const char *key, char *out, size_t outsz);

/* Splits body[0..len) at boundary into parts. Stores the first maxparts and
 * returns how many there are (which may be more than maxparts), or -1 when
 * the body is not well-formed (no opening or closing delimiter, a part
 * without its blank line, a boundary over 70 characters or empty). */
int kn_multipart_parse(const char *body, size_t len, const char *boundary, kn_multipart_part *parts,
                       int maxparts);

#endif
