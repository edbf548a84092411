/* Integration: rows round-trip through the stack's PostgreSQL with libpq:
 * parameterized inserts (text, bytea, int8, jsonb, NULL) inside a
 * transaction, read back by column name, and a rollback that leaves nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

static const char *conninfo(void)
{
    const char *c = getenv("KILN_PG_CONNINFO");
    return c ? c : "host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln";
}

static void exec_ok(PGconn *db, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(db, sql);
    if (PQresultStatus(r) != want) fail_msg("%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
}

static void pg_roundtrip(void **state)
{
    (void)state;
    PGconn *db = PQconnectdb(conninfo());
    if (PQstatus(db) != CONNECTION_OK) fail_msg("connect: %s", PQerrorMessage(db));
    char table[64], sql[512];
    snprintf(table, sizeof(table), "kiln_test_rt_%d", getpid());
    snprintf(sql, sizeof(sql),
             "CREATE TABLE %s (id int8 PRIMARY KEY, name text, blob bytea, meta jsonb, note text)",
             table);
    exec_ok(db, sql, PGRES_COMMAND_OK);

    exec_ok(db, "BEGIN", PGRES_COMMAND_OK);
    snprintf(sql, sizeof(sql), "INSERT INTO %s VALUES ($1::int8, $2, $3::bytea, $4::jsonb, $5)", table);
    const int rows = 500;
    for (int i = 0; i < rows; i++) {
        char id[32], name[64], meta[64];
        unsigned char blob[16];
        for (int k = 0; k < 16; k++) blob[k] = (unsigned char)(i * 31 + k); /* includes NUL bytes */
        snprintf(id, sizeof(id), "%d", i);
        snprintf(name, sizeof(name), "name '%d'; DROP TABLE x; --", i); /* stays data */
        snprintf(meta, sizeof(meta), "{\"i\": %d}", i);
        const char *vals[5] = {id, name, (const char *)blob, meta, i % 2 ? NULL : "even"};
        int lens[5] = {0, 0, 16, 0, 0}, fmts[5] = {0, 0, 1, 0, 0};
        PGresult *r = PQexecParams(db, sql, 5, NULL, vals, lens, fmts, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) fail_msg("insert: %s", PQerrorMessage(db));
        PQclear(r);
    }
    exec_ok(db, "COMMIT", PGRES_COMMAND_OK);

    snprintf(sql, sizeof(sql), "SELECT id, name, blob, meta->>'i' AS mi, note FROM %s ORDER BY id", table);
    PGresult *r = PQexecParams(db, sql, 0, NULL, NULL, NULL, NULL, 1); /* binary results */
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), rows);
    int c_id = PQfnumber(r, "id"), c_name = PQfnumber(r, "name"), c_blob = PQfnumber(r, "blob"),
        c_mi = PQfnumber(r, "mi"), c_note = PQfnumber(r, "note");
    for (int i = 0; i < rows; i++) {
        uint64_t be;
        memcpy(&be, PQgetvalue(r, i, c_id), 8);
        assert_int_equal((int64_t)__builtin_bswap64(be), i);
        char name[64];
        snprintf(name, sizeof(name), "name '%d'; DROP TABLE x; --", i);
        assert_int_equal(PQgetlength(r, i, c_name), (int)strlen(name));
        assert_memory_equal(PQgetvalue(r, i, c_name), name, strlen(name));
        assert_int_equal(PQgetlength(r, i, c_blob), 16);
        for (int k = 0; k < 16; k++)
            assert_int_equal((unsigned char)PQgetvalue(r, i, c_blob)[k], (unsigned char)(i * 31 + k));
        assert_int_equal(atoi(PQgetvalue(r, i, c_mi)), i);
        assert_int_equal(PQgetisnull(r, i, c_note), i % 2);
    }
    PQclear(r);

    /* A rolled-back transaction leaves nothing. */
    exec_ok(db, "BEGIN", PGRES_COMMAND_OK);
    snprintf(sql, sizeof(sql), "DELETE FROM %s", table);
    exec_ok(db, sql, PGRES_COMMAND_OK);
    exec_ok(db, "ROLLBACK", PGRES_COMMAND_OK);
    snprintf(sql, sizeof(sql), "SELECT count(*) AS n FROM %s", table);
    r = PQexec(db, sql);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(atoi(PQgetvalue(r, 0, PQfnumber(r, "n"))), rows);
    PQclear(r);

    snprintf(sql, sizeof(sql), "DROP TABLE %s", table);
    exec_ok(db, sql, PGRES_COMMAND_OK);
    PQfinish(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(pg_roundtrip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
