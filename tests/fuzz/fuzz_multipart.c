/* fuzz_multipart.c: kn_multipart_parse and kn_multipart_param. Input: the
 * boundary, a newline, then the body. Every stored part lies inside the body
 * and its name, filename and content type are NUL-terminated in their
 * fields. */
#include "fuzz.h"

#include "net/multipart.h"

#include <string.h>

#define MAXPARTS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    size_t bl = (size_t)(nl - (const char *)data);
    char *boundary = malloc(bl + 1);
    if (!boundary) return 0;
    memcpy(boundary, data, bl);
    boundary[bl] = '\0';
    const char *body = nl + 1; /* ends exactly where libFuzzer's buffer does */
    size_t len = size - bl - 1;
    kn_multipart_part parts[MAXPARTS];
    int n = kn_multipart_parse(body, len, boundary, parts, MAXPARTS);
    FUZZ_CHECK(n >= -1);
    for (int i = 0; i < n && i < MAXPARTS; i++) {
        const kn_multipart_part *p = &parts[i];
        FUZZ_CHECK(p->data >= body && p->len <= len && p->data + p->len <= body + len);
        FUZZ_CHECK(strnlen(p->name, sizeof(p->name)) < sizeof(p->name));
        FUZZ_CHECK(strnlen(p->filename, sizeof(p->filename)) < sizeof(p->filename));
        FUZZ_CHECK(strnlen(p->ctype, sizeof(p->ctype)) < sizeof(p->ctype));
    }
    /* The header-parameter reader, on the body as if it were a header value
     * (the server runs it on Content-Type and Content-Disposition). */
    char out[16];
    kn_multipart_param(body, len, "name", out, sizeof(out));
    FUZZ_CHECK(strnlen(out, sizeof(out)) < sizeof(out));
    kn_multipart_param(body, len, "boundary", out, 1);
    FUZZ_CHECK(out[0] == '\0');
    free(boundary);
    return 0;
}
