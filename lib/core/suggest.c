/* suggest.c: edit distance (optimal string alignment) and the nearest name. */
#include "core/suggest.h"

#include <stdint.h>
#include <string.h>

#define MAXLEN 127

size_t kn_suggest_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > MAXLEN || m > MAXLEN) return SIZE_MAX;
    unsigned char d[MAXLEN + 1][MAXLEN + 1]; /* d[i][j] (<= 127): distance of a[0..i) and b[0..j) */
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (unsigned char)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (unsigned char)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            unsigned best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1u < best) best = d[i - 1][j] + 1u;
            if (d[i][j - 1] + 1u < best) best = d[i][j - 1] + 1u;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1u < best)
                best = d[i - 2][j - 2] + 1u;
            d[i][j] = (unsigned char)best;
        }
    return d[n][m];
}

static size_t limit(const char *word)
{
    size_t n = strlen(word);
    return n <= 4 ? 1 : n <= 8 ? 2 : 3;
}

/* "batch_size" vs "batch": the shorter is a prefix of the longer, followed
 * by a separator. */
static int suffixed(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > m) {
        const char *t = a;
        a = b, b = t;
        size_t u = n;
        n = m, m = u;
    }
    return n >= 3 && m > n && strncmp(a, b, n) == 0 && (b[n] == '_' || b[n] == '-');
}

void kn_suggest_init(kn_suggest *s, const char *word)
{
    s->word = word;
    s->best = NULL;
    s->dist = SIZE_MAX;
}

void kn_suggest_offer(kn_suggest *s, const char *cand)
{
    if (!cand || strcmp(cand, s->word) == 0) return;
    size_t d = kn_suggest_distance(s->word, cand);
    size_t lim = limit(s->word);
    if (d > lim && suffixed(s->word, cand)) d = lim; /* close, ranked after real near-misses */
    if (d <= lim && d < s->dist) {
        s->best = cand;
        s->dist = d;
    }
}

const char *kn_suggest_result(const kn_suggest *s)
{
    return s->best;
}
