/* reason.h: why a record is refused — the closed list of reason codes that
 * name a rejection in the dlq-reason header (docs/formats.md), in per-reason
 * metrics labels and in the validators' results. They live at the bottom of
 * the library because parsers (image/media.c) and services both name them. */
#ifndef KN_REASON_H
#define KN_REASON_H

#define KN_REASON_EMPTY              "empty"
#define KN_REASON_TOO_LARGE          "too_large"
#define KN_REASON_BAD_UTF8           "bad_utf8"
#define KN_REASON_UNKNOWN_FORMAT     "unknown_format"
#define KN_REASON_TRUNCATED          "truncated"
#define KN_REASON_BAD_HEADER         "bad_header"
#define KN_REASON_TOO_MANY_PIXELS    "too_many_pixels"
#define KN_REASON_SIZE_MISMATCH      "size_mismatch"
#define KN_REASON_UNSUPPORTED        "unsupported"
#define KN_REASON_BAD_JSON           "bad_json"
#define KN_REASON_BAD_BASE64         "bad_base64"
#define KN_REASON_BAD_LABEL          "bad_label"
#define KN_REASON_READ_ERROR         "read_error"
#define KN_REASON_FETCH_FAILED       "fetch_failed"
#define KN_REASON_FETCH_TIMEOUT      "fetch_timeout"
#define KN_REASON_TOO_MANY_REDIRECTS "too_many_redirects"
#define KN_REASON_BAD_CONTENT_TYPE   "bad_content_type"
#define KN_REASON_HTTP_STATUS        "http_status"
/* preprocess: processing failed record_attempts times (not a rejection) */
#define KN_REASON_PROCESSING_FAILED "processing_failed"

#endif
