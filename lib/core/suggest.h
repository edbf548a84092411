/* suggest.h: "did you mean ...": the closest of a set of names to a word the
 * user typed, by edit distance (insertions, deletions, substitutions and
 * swaps of two neighbours each cost 1). Limits: names up to 127 bytes are
 * compared; longer ones are never suggested. */
#ifndef KN_SUGGEST_H
#define KN_SUGGEST_H

#include <stddef.h>

/* Collects candidates one by one and keeps the closest. The struct is the
 * caller's; nothing to free. `best` points at a string the caller offered,
 * so the candidates must outlive the result. */
typedef struct {
    const char *word;
    const char *best; /* NULL until a close enough candidate is offered */
    size_t dist;      /* best's distance */
} kn_suggest;

void kn_suggest_init(kn_suggest *s, const char *word);
/* Offers a candidate; an exact match is never suggested (the caller asks
 * about words that are not in the set). */
void kn_suggest_offer(kn_suggest *s, const char *cand);
/* The closest candidate if it is close enough, else NULL. Close enough: a
 * distance of at most 1 for words of up to 4 bytes, 2 up to 8, else 3; or
 * one name is the other with a suffix after '_' or '-' ("batch_size" and
 * "batch"). */
const char *kn_suggest_result(const kn_suggest *s);

/* The edit distance of a and b (SIZE_MAX when either is over 127 bytes). */
size_t kn_suggest_distance(const char *a, const char *b);

#endif
