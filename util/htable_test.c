/*
 * htable_test - unit tests for htable
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "htable.h"
#include "mymalloc.h"

/* The reference vectors of the SipHash paper (key 00 01 .. 0f, message
   00 01 .. len-1, SipHash-2-4, 64-bit output). */
static void test_siphash_vectors(void **state)
{
    (void) state;
    unsigned char key[16];
    unsigned char data[64];

    for (int i = 0; i < 16; i++)
        key[i] = (unsigned char) i;
    for (int i = 0; i < 64; i++)
        data[i] = (unsigned char) i;
    assert_true(htable_siphash(key, data, 0) == 0x726fdb47dd0e0e31ULL);
    assert_true(htable_siphash(key, data, 1) == 0x74f839c593dc67fdULL);
    assert_true(htable_siphash(key, data, 15) == 0xa129ca6149be45e5ULL);
    /* A different key gives a different hash of the same data. */
    key[0] ^= 1;
    assert_true(htable_siphash(key, data, 15) != 0xa129ca6149be45e5ULL);
}

static void test_enter_find_duplicate(void **state)
{
    (void) state;
    HTABLE *table = htable_alloc(0);
    int one = 1, two = 2;
    char key[16] = "example.test";

    assert_null(htable_find(table, "example.test"));
    assert_true(htable_enter(table, key, &one));
    /* The key is copied: the caller's buffer may change. */
    key[0] = 'X';
    assert_ptr_equal(htable_find(table, "example.test"), &one);
    assert_null(htable_find(table, key));
    /* A second enter of the same key changes nothing. */
    assert_false(htable_enter(table, "example.test", &two));
    assert_ptr_equal(htable_find(table, "example.test"), &one);
    assert_int_equal(htable_count(table), 1);
    /* Keys are compared whole and case matters. */
    assert_null(htable_find(table, "example.tes"));
    assert_null(htable_find(table, "EXAMPLE.test"));
    assert_true(htable_enter(table, "", &two));
    assert_ptr_equal(htable_find(table, ""), &two);
    htable_free(table, NULL);
}

static void test_null_value(void **state)
{
    (void) state;
    HTABLE *table = htable_alloc(4);
    void *value = &value;

    assert_false(htable_locate(table, "k", &value));
    assert_true(htable_enter(table, "k", NULL));
    assert_true(htable_locate(table, "k", &value));
    assert_null(value);
    assert_true(htable_locate(table, "k", NULL));
    htable_free(table, NULL);
}

static void test_delete(void **state)
{
    (void) state;
    HTABLE *table = htable_alloc(0);
    int a = 1, b = 2;

    assert_true(htable_enter(table, "a", &a));
    assert_true(htable_enter(table, "b", &b));
    assert_null(htable_delete(table, "c"));
    assert_ptr_equal(htable_delete(table, "a"), &a);
    assert_int_equal(htable_count(table), 1);
    assert_null(htable_find(table, "a"));
    assert_ptr_equal(htable_find(table, "b"), &b);
    assert_null(htable_delete(table, "a"));
    /* Gone means it can come back. */
    assert_true(htable_enter(table, "a", &b));
    assert_ptr_equal(htable_find(table, "a"), &b);
    htable_free(table, NULL);
}

#define MANY 20000

static void test_grows_and_keeps_everything(void **state)
{
    (void) state;
    HTABLE *table = htable_alloc(0);
    size_t initial = table->size;
    char key[32];

    for (long i = 0; i < MANY; i++) {
        (void) snprintf(key, sizeof(key), "smtp:d%ld.test", i);
        assert_true(htable_enter(table, key, (void *) (i + 1)));
    }
    assert_int_equal(htable_count(table), MANY);
    /* It grew: more buckets than entries, still a power of two. */
    assert_true(table->size > initial);
    assert_true(table->size >= MANY);
    assert_int_equal(table->size & (table->size - 1), 0);
    for (long i = 0; i < MANY; i++) {
        (void) snprintf(key, sizeof(key), "smtp:d%ld.test", i);
        assert_int_equal((long) htable_find(table, key), i + 1);
    }
    /* Delete every other one: the rest stay findable. */
    for (long i = 0; i < MANY; i += 2) {
        (void) snprintf(key, sizeof(key), "smtp:d%ld.test", i);
        assert_int_equal((long) htable_delete(table, key), i + 1);
    }
    assert_int_equal(htable_count(table), MANY / 2);
    for (long i = 0; i < MANY; i++) {
        (void) snprintf(key, sizeof(key), "smtp:d%ld.test", i);
        if (i % 2)
            assert_int_equal((long) htable_find(table, key), i + 1);
        else
            assert_null(htable_find(table, key));
    }
    htable_free(table, NULL);
}

static void test_iteration_sees_each_once(void **state)
{
    (void) state;
    HTABLE *table = htable_alloc(0);
    int seen[500] = {0};
    HTABLE_ITER iter;
    const char *key;
    void *value;
    size_t visits = 0;
    char name[16];

    htable_iter_init(&iter, table);
    assert_false(htable_iter_next(&iter, &key, &value));
    for (long i = 0; i < 500; i++) {
        (void) snprintf(name, sizeof(name), "k%ld", i);
        assert_true(htable_enter(table, name, (void *) i));
    }
    htable_iter_init(&iter, table);
    while (htable_iter_next(&iter, &key, &value)) {
        long i = (long) value;

        (void) snprintf(name, sizeof(name), "k%ld", i);
        assert_string_equal(key, name);
        seen[i]++;
        visits++;
    }
    assert_int_equal(visits, 500);
    for (int i = 0; i < 500; i++)
        assert_int_equal(seen[i], 1);
    htable_free(table, NULL);
}

static void test_delete_while_iterating(void **state)
{
    (void) state;
    HTABLE *table = htable_alloc(0);
    HTABLE_ITER iter;
    const char *key;
    void *value;
    size_t visits = 0;
    char name[16];

    for (long i = 0; i < 300; i++) {
        (void) snprintf(name, sizeof(name), "k%ld", i);
        assert_true(htable_enter(table, name, (void *) i));
    }
    /* Delete the odd ones as they come: every entry is still visited. */
    htable_iter_init(&iter, table);
    while (htable_iter_next(&iter, &key, NULL)) {
        visits++;
        (void) snprintf(name, sizeof(name), "%s", key);
        value = htable_find(table, name);
        if ((long) value % 2)
            assert_ptr_equal(htable_delete(table, name), value);
    }
    assert_int_equal(visits, 300);
    assert_int_equal(htable_count(table), 150);
    htable_iter_init(&iter, table);
    while (htable_iter_next(&iter, NULL, &value))
        assert_int_equal((long) value % 2, 0);
    htable_free(table, NULL);
}

static int freed;

static void count_free(void *value)
{
    freed++;
    myfree(value);
}

static void test_free_values(void **state)
{
    (void) state;
    HTABLE *table = htable_alloc(100);

    freed = 0;
    assert_true(htable_enter(table, "a", mystrdup("x")));
    assert_true(htable_enter(table, "b", mystrdup("y")));
    assert_null(htable_free(table, count_free));
    assert_int_equal(freed, 2);
    assert_null(htable_free(NULL, count_free));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_enter_find_duplicate),
        cmocka_unit_test(test_null_value),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_grows_and_keeps_everything),
        cmocka_unit_test(test_iteration_sees_each_once),
        cmocka_unit_test(test_delete_while_iterating),
        cmocka_unit_test(test_free_values),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
